//! `molt upgrade ID --bundle NEWDIR` (being written)

use super::{CmdResult, Ctx};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
}

pub fn run(_ctx: &Ctx, _a: Args) -> CmdResult {
    Err("upgrade: not implemented yet".into())
}
