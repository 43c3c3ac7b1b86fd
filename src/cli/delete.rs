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
        // A create killed before the id appeared may have left its staged first state.
        Err(Error::NotFound(_)) if a.force => crate::container::sweep_staged(&ctx.root),
        // Nothing but the directory is known of it, and nothing was made without a state naming
        // it: removing the directory frees the id.
        Err(Error::NoState { dir, .. }) => {
            crate::container::remove_state_dir(&ctx.root, &dir).map_err(|source| Error::Io { path: dir, source })?
        }
        Err(e) => return Err(e.into()),
    }
    Ok(0)
}
