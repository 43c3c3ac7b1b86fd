//! `molt list [--format table|json] [--quiet]`, columns and JSON fields as runc prints them.

use std::io::Write;

use super::{CmdResult, Ctx};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, short = 'f', default_value = "table")]
    pub format: String,
    /// Print only the ids
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> CmdResult {
    let containers = crate::container::list(&ctx.root)?;
    // Listed as they are now (a query changes nothing); each interrupted upgrade is named.
    for id in crate::upgrade::interrupted_ids(&ctx.root) {
        crate::logging::warn(&crate::upgrade::interrupted_note(&id));
    }
    let mut out = String::new();
    if a.quiet {
        for c in &containers {
            out.push_str(&format!("{}\n", c.state.id));
        }
    } else if a.format == "json" {
        let v: Vec<_> = containers
            .iter()
            .map(|c| {
                let mut s = c.oci_state(c.status());
                s.oci_version = c.state.config.version().clone();
                // runc's list names the owner of the state directory (its state says "").
                s.owner = owner_of(&c.dir());
                s
            })
            .collect();
        // runc prints Go's nil slice: `null` when there is no container.
        out = if v.is_empty() { "null\n".into() } else { serde_json::to_string(&v)? + "\n" };
    } else if a.format == "table" {
        let mut rows = vec![["ID".to_string(), "PID".into(), "STATUS".into(), "BUNDLE".into(), "CREATED".into(), "OWNER".into()]];
        for c in &containers {
            let status = c.status();
            let pid = if status == crate::container::Status::Stopped { 0 } else { c.state.pid };
            rows.push([
                c.state.id.clone(),
                pid.to_string(),
                status.to_string(),
                c.state.bundle.display().to_string(),
                c.state.created.clone(),
                owner_of(&c.dir()),
            ]);
        }
        out = tabulate(&rows);
    } else {
        return Err(format!("invalid --format {:?}: use table or json", a.format).into());
    }
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(0)
}

fn owner_of(dir: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(dir) else { return String::new() };
    nix::unistd::User::from_uid(m.uid().into())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("#{}", m.uid()))
}

/// Go's tabwriter as runc configures it: minwidth 12, padding 3, padded with spaces.
fn tabulate(rows: &[[String; 6]]) -> String {
    let mut widths = [0usize; 6];
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.len() + 3).max(12);
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if i == r.len() - 1 {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}", w = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}
