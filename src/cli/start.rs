//! `molt start ID`

use super::{CmdResult, Ctx};
use crate::container::Container;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
}

pub fn run(ctx: &Ctx, a: Args) -> CmdResult {
    Container::load(&ctx.root, &a.id)?.start()?;
    Ok(0)
}
