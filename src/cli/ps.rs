//! `molt ps ID [--format table|json]`: json is the array of host pids engines parse.

use std::io::Write;

use super::{CmdResult, Ctx};
use crate::container::Container;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
    #[arg(long, short = 'f', default_value = "table")]
    pub format: String,
    /// Extra arguments for ps(1) in table format
    #[arg(trailing_var_arg = true)]
    pub ps_args: Vec<String>,
}

pub fn run(ctx: &Ctx, a: Args) -> CmdResult {
    let c = Container::load(&ctx.root, &a.id)?;
    let pids = match &c.state.cgroup {
        Some(cg) => cg.pids()?,
        None => vec![],
    };
    let mut out = std::io::stdout();
    match a.format.as_str() {
        "json" => out.write_all(format!("{}\n", serde_json::to_string(&pids)?).as_bytes())?,
        "table" => {
            out.write_all(b"PID       CMD\n")?;
            for p in pids {
                let cmd = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                out.write_all(format!("{p:<10}{}\n", cmd.trim()).as_bytes())?;
            }
        }
        f => return Err(format!("invalid --format {f:?}: use table or json").into()),
    }
    Ok(0)
}
