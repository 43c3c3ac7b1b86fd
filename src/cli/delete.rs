//! `molt delete ID [--force]`

use super::{CmdResult, Ctx};
use crate::container::{Container, Error};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
    /// Kill the container first if it is still running
    #[arg(long, short = 'f')]
    pub force: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> CmdResult {
    match Container::load(&ctx.root, &a.id) {
        Ok(mut c) => {
            c.delete(a.force)?;
            // The image it ran from may have had its last user.
            crate::image::store::prune_quietly(&ctx.root);
        }
        // Engines delete --force twice; the second finds nothing, which is what they asked for.
        Err(Error::NotFound(_)) if a.force => {}
        Err(e) => return Err(e.into()),
    }
    Ok(0)
}
