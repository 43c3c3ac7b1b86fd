//! `molt ps ID [--format table|json]`: json is the array of host pids engines parse.

use std::io::Write;

use super::{CmdResult, Ctx};
use crate::container::Container;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
    #[arg(long, short = 'f', default_value = "table")]
    pub format: String,
    /// Extra arguments for ps(1) in table format (default -ef)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
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
        "table" => out.write_all(table(&pids, &a.ps_args)?.as_bytes())?,
        f => return Err(format!("invalid --format {f:?}: use table or json").into()),
    }
    Ok(0)
}

/// runc's table: ps(1) run with the given arguments (default -ef), its header, and the lines whose
/// PID column is one of the container's processes.
fn table(pids: &[i32], ps_args: &[String]) -> Result<String, Box<dyn std::error::Error>> {
    let args: Vec<String> = if ps_args.is_empty() { vec!["-ef".into()] } else { ps_args.to_vec() };
    let out = std::process::Command::new("ps").args(&args).output().map_err(|e| format!("run ps {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!("ps {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()).into());
    }
    filter_ps(&String::from_utf8_lossy(&out.stdout), pids)
}

fn filter_ps(text: &str, pids: &[i32]) -> Result<String, Box<dyn std::error::Error>> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let col = header.split_whitespace().position(|c| c == "PID").ok_or("ps output has no PID column")?;
    let mut out = format!("{header}\n");
    for l in lines {
        let pid = l.split_whitespace().nth(col).and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            out.push_str(l);
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_the_header_and_the_container_lines() {
        let ps = "UID  PID PPID C STIME TTY TIME CMD\nroot 1 0 0 10:00 ? 00:00:01 init\nroot 42 1 0 10:01 ? 00:00:00 sleep 1000\n";
        assert_eq!(super::filter_ps(ps, &[42]).unwrap(), "UID  PID PPID C STIME TTY TIME CMD\nroot 42 1 0 10:01 ? 00:00:00 sleep 1000\n");
        assert!(super::filter_ps("NOPE\n", &[1]).is_err());
    }
}
