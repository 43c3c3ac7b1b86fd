//! `molt pause ID` and `molt resume ID`: the cgroup freezer.

use super::{CmdResult, Ctx};
use crate::container::{Container, Status};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
}

pub fn run(ctx: &Ctx, a: Args, pause: bool) -> CmdResult {
    let c = Container::load(&ctx.root, &a.id)?;
    let status = c.status();
    let (wanted, action) = if pause { (Status::Running, "pause") } else { (Status::Paused, "resume") };
    if status != wanted {
        return Err(format!("container {} is {status}, {action} needs it {wanted}", a.id).into());
    }
    let cg = c.state.cgroup.as_ref().ok_or_else(|| format!("container {} has no cgroup", a.id))?;
    if pause {
        cg.freeze()?;
    } else {
        cg.thaw()?;
    }
    Ok(0)
}
