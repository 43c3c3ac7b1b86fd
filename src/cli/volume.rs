//! `molt volume list|detach|repair`: the host's volume attachments under this root.

use std::io::Write;

use super::{CmdResult, Ctx};
use crate::volume::Registry;

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Attachments with their users and state
    List {
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
    },
    /// Detach a volume nobody uses (refused while a container uses it)
    Detach { key: String },
    /// Find attachments left by a crash and repair or report them
    Repair,
}

pub fn run(ctx: &Ctx, c: Cmd) -> CmdResult {
    let reg = Registry::new(&ctx.root);
    let mut out = std::io::stdout();
    match c {
        Cmd::List { format } => {
            let list = reg.list()?;
            match format.as_str() {
                "json" => out.write_all(format!("{}\n", serde_json::to_string_pretty(&list)?).as_bytes())?,
                "table" => {
                    let cells: Vec<Vec<String>> = list
                        .into_iter()
                        .map(|v| vec![v.key, v.kind.to_string(), v.state.to_string(), if v.users.is_empty() { "-".to_string() } else { v.users.join(",") }, v.source.to_string()])
                        .collect();
                    let text = crate::table::columns(&["KEY", "KIND", "STATE", "USERS", "SOURCE"], &cells);
                    out.write_all(text.as_bytes())?;
                }
                f => return Err(format!("invalid --format {f:?}: use table or json").into()),
            }
        }
        Cmd::Detach { key } => reg.detach(&key)?,
        Cmd::Repair => {
            for line in reg.repair()? {
                out.write_all(format!("{line}\n").as_bytes())?;
            }
        }
    }
    Ok(0)
}
