//! `molt kill ID [SIGNAL] [--all]`

use super::{CmdResult, Ctx};
use crate::container::kill::parse_signal;
use crate::container::Container;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
    /// Signal name or number (default SIGTERM)
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
    /// Send the signal to every process of the container
    #[arg(long, short = 'a')]
    pub all: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> CmdResult {
    let sig = parse_signal(&a.signal)?;
    Container::load(&ctx.root, &a.id)?.kill(sig, a.all)?;
    Ok(0)
}
