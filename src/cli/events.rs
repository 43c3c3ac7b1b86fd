//! `molt events [--stats] [--interval 5s] ID`: runc's event stream of resource statistics, one
//! JSON object a line (`{"type":"stats","id":...,"data":{...}}`); --stats prints one and exits.

use std::io::Write;
use std::time::Duration;

use super::{CmdResult, Ctx};
use crate::container::{Container, Status};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
    /// Print the statistics once and exit
    #[arg(long)]
    pub stats: bool,
    /// Time between two statistics events (5s, 500ms)
    #[arg(long, default_value = "5s")]
    pub interval: String,
}

pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let bad = || format!("--interval {s:?}: use a duration such as 5s, 1m or 500ms");
    let (num, unit) = s.trim().split_at(s.trim().find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(bad)?);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if secs <= 0.0 {
        return Err(bad());
    }
    crate::upgrade::seconds(secs).ok_or_else(|| format!("--interval {s:?}: too long (at most {} seconds)", u64::MAX))
}

pub fn run(ctx: &Ctx, a: Args) -> CmdResult {
    let interval = parse_interval(&a.interval)?;
    let c = Container::load(&ctx.root, &a.id)?;
    let cg = c.state.cgroup.as_ref().ok_or_else(|| format!("container {} has no cgroup", a.id))?;
    let mut out = std::io::stdout();
    loop {
        if c.status() == Status::Stopped {
            if a.stats {
                return Err(format!("container {} is not running", a.id).into());
            }
            return Ok(0);
        }
        let event = serde_json::json!({"type": "stats", "id": a.id, "data": cg.stats()?});
        out.write_all(format!("{event}\n").as_bytes())?;
        out.flush()?;
        if a.stats {
            return Ok(0);
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::parse_interval;
    use std::time::Duration;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_interval("5").is_err());
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("fast").is_err());
        for huge in ["99999999999999999999999h", "1e300s", "-1s"] {
            assert!(parse_interval(huge).is_err(), "{huge}");
        }
    }
}
