//! `molt volume list|detach` (being written)

use super::{CmdResult, Ctx};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    List,
}

pub fn run(_ctx: &Ctx, _c: Cmd) -> CmdResult {
    Err("volume: not implemented yet".into())
}
