//! `molt state ID`: the runtime-spec state document on stdout.

use std::io::Write;

use super::{CmdResult, Ctx};
use crate::container::Container;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
}

pub fn run(ctx: &Ctx, a: Args) -> CmdResult {
    let c = Container::load(&ctx.root, &a.id)?;
    let mut doc = c.oci_state(c.status());
    // As runc's state and list: the config's ociVersion (hooks get the spec version molt speaks).
    doc.oci_version = c.state.config.version().clone();
    // The state of a container whose upgrade a crash interrupted says so (settle printed a note
    // on stderr): what runs may be either version until a command that acts settles it.
    if crate::upgrade::interrupted(&ctx.root, &a.id) {
        doc.annotations.get_or_insert_with(Default::default).insert(crate::upgrade::INTERRUPTED_ANNOTATION.into(), "interrupted".into());
    }
    let text = serde_json::to_string_pretty(&doc)?;
    std::io::stdout().write_all(format!("{text}\n").as_bytes())?;
    Ok(0)
}
