//! `molt update ID [--resources FILE|-] [--memory ...]`: change a container's cgroup limits, as
//! `runc update` does (containerd and podman send the resources JSON on stdin or in a file).

use std::io::Read;
use std::path::PathBuf;

use oci_spec::runtime::LinuxResources;

use super::{CmdResult, Ctx};
use crate::container::Container;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
    /// runtime-spec linux.resources JSON: a file, or - for stdin; the flags below are then ignored
    #[arg(long, short = 'r')]
    pub resources: Option<PathBuf>,
    /// Memory limit (bytes, or with k/m/g)
    #[arg(long, short = 'm')]
    pub memory: Option<String>,
    #[arg(long = "memory-reservation")]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit (-1 for unlimited)
    #[arg(long = "memory-swap")]
    pub memory_swap: Option<String>,
    #[arg(long = "cpu-share")]
    pub cpu_share: Option<u64>,
    #[arg(long = "cpu-quota")]
    pub cpu_quota: Option<i64>,
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<u64>,
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    #[arg(long = "blkio-weight")]
    pub blkio_weight: Option<u16>,
}

/// "64m", "1g", "4096", "-1": bytes as runc's units.RAMInBytes reads them (binary multiples).
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.trim_end_matches('b');
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("{s:?} is not a size (bytes, or a number with k, m, g or t)"))?;
    if n < 0.0 {
        return Err(format!("{s:?}: a size cannot be negative"));
    }
    Ok((n * mult as f64) as i64)
}

fn from_flags(a: &Args) -> Result<LinuxResources, Box<dyn std::error::Error>> {
    let mut v = serde_json::json!({});
    let bytes = |name: &str, s: &Option<String>| -> Result<Option<i64>, String> {
        s.as_deref().map(parse_bytes).transpose().map_err(|e| format!("--{name}: {e}"))
    };
    let mut memory = serde_json::Map::new();
    for (key, flag, val) in [
        ("limit", "memory", &a.memory),
        ("reservation", "memory-reservation", &a.memory_reservation),
        ("swap", "memory-swap", &a.memory_swap),
    ] {
        if let Some(n) = bytes(flag, val)? {
            memory.insert(key.into(), n.into());
        }
    }
    if !memory.is_empty() {
        v["memory"] = memory.into();
    }
    let mut cpu = serde_json::Map::new();
    if let Some(x) = a.cpu_share {
        cpu.insert("shares".into(), x.into());
    }
    if let Some(x) = a.cpu_quota {
        cpu.insert("quota".into(), x.into());
    }
    if let Some(x) = a.cpu_period {
        cpu.insert("period".into(), x.into());
    }
    if let Some(x) = &a.cpuset_cpus {
        cpu.insert("cpus".into(), x.clone().into());
    }
    if let Some(x) = &a.cpuset_mems {
        cpu.insert("mems".into(), x.clone().into());
    }
    if !cpu.is_empty() {
        v["cpu"] = cpu.into();
    }
    if let Some(x) = a.pids_limit {
        v["pids"] = serde_json::json!({"limit": x});
    }
    if let Some(x) = a.blkio_weight {
        v["blockIO"] = serde_json::json!({"weight": x});
    }
    Ok(serde_json::from_value(v)?)
}

pub fn run(ctx: &Ctx, a: Args) -> CmdResult {
    let c = Container::load(&ctx.root, &a.id)?;
    let resources = match &a.resources {
        Some(path) => {
            let mut text = String::new();
            if path.as_os_str() == "-" {
                std::io::stdin().read_to_string(&mut text).map_err(|e| format!("--resources -: read stdin: {e}"))?;
            } else {
                text = std::fs::read_to_string(path).map_err(|e| format!("--resources {}: {e}", path.display()))?;
            }
            serde_json::from_str::<LinuxResources>(&text)
                .map_err(|e| format!("--resources {}: not runtime-spec linux.resources JSON: {e}", path.display()))?
        }
        None => from_flags(&a)?,
    };
    if c.status() == crate::container::Status::Stopped {
        return Err(format!("container {} is stopped, update needs it created, running or paused", a.id).into());
    }
    let cg = c.state.cgroup.as_ref().ok_or_else(|| format!("container {} has no cgroup", a.id))?;
    cg.update(&resources)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_as_runc_reads_them() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64m"), Ok(64 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("512kb"), Ok(512 << 10));
        assert_eq!(parse_bytes("-1"), Ok(-1));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("-5m").is_err());
    }
}
