//! Reads usage and limits back from the kernel in the shape of runc's `events --stats` JSON.
//! One table maps each JSON field to its v1 and v2 source, so both versions share one reader.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value};

use super::error::CgroupError;
use super::fsio;
use super::mountinfo::Version;
use super::Cgroup;

/// Where one number lives: controller, file, the key inside a flat-keyed file (None for a file
/// holding just the number), and the factor that turns it into runc's unit.
type Source = (&'static str, &'static str, Option<&'static str>, Scale);

#[derive(Clone, Copy)]
enum Scale {
    One,
    /// v2 reports microseconds where runc reports nanoseconds.
    UsecToNs,
    /// v1 cpuacct.stat counts USER_HZ ticks.
    TicksToNs,
}

/// "max" is runc's u64::MAX for memory limits but 0 ("no limit") for pids.
#[derive(Clone, Copy)]
enum Max {
    AllOnes,
    Zero,
}

#[rustfmt::skip]
const TABLE: &[(&str, Source, Source, Max)] = &[
    ("/cpu/usage/total", ("cpuacct", "cpuacct.usage", None, Scale::One), ("cpu", "cpu.stat", Some("usage_usec"), Scale::UsecToNs), Max::AllOnes),
    ("/cpu/usage/kernel", ("cpuacct", "cpuacct.stat", Some("system"), Scale::TicksToNs), ("cpu", "cpu.stat", Some("system_usec"), Scale::UsecToNs), Max::AllOnes),
    ("/cpu/usage/user", ("cpuacct", "cpuacct.stat", Some("user"), Scale::TicksToNs), ("cpu", "cpu.stat", Some("user_usec"), Scale::UsecToNs), Max::AllOnes),
    ("/cpu/throttling/periods", ("cpu", "cpu.stat", Some("nr_periods"), Scale::One), ("cpu", "cpu.stat", Some("nr_periods"), Scale::One), Max::AllOnes),
    ("/cpu/throttling/throttledPeriods", ("cpu", "cpu.stat", Some("nr_throttled"), Scale::One), ("cpu", "cpu.stat", Some("nr_throttled"), Scale::One), Max::AllOnes),
    ("/cpu/throttling/throttledTime", ("cpu", "cpu.stat", Some("throttled_time"), Scale::One), ("cpu", "cpu.stat", Some("throttled_usec"), Scale::UsecToNs), Max::AllOnes),
    ("/memory/usage/usage", ("memory", "memory.usage_in_bytes", None, Scale::One), ("memory", "memory.current", None, Scale::One), Max::AllOnes),
    ("/memory/usage/limit", ("memory", "memory.limit_in_bytes", None, Scale::One), ("memory", "memory.max", None, Scale::One), Max::AllOnes),
    ("/memory/usage/max", ("memory", "memory.max_usage_in_bytes", None, Scale::One), ("memory", "memory.peak", None, Scale::One), Max::AllOnes),
    ("/memory/usage/failcnt", ("memory", "memory.failcnt", None, Scale::One), ("memory", "memory.events", Some("max"), Scale::One), Max::AllOnes),
    ("/memory/swap/usage", ("memory", "memory.memsw.usage_in_bytes", None, Scale::One), ("memory", "memory.swap.current", None, Scale::One), Max::AllOnes),
    ("/memory/swap/limit", ("memory", "memory.memsw.limit_in_bytes", None, Scale::One), ("memory", "memory.swap.max", None, Scale::One), Max::AllOnes),
    ("/memory/cache", ("memory", "memory.stat", Some("cache"), Scale::One), ("memory", "memory.stat", Some("file"), Scale::One), Max::AllOnes),
    ("/pids/current", ("pids", "pids.current", None, Scale::One), ("pids", "pids.current", None, Scale::One), Max::Zero),
    ("/pids/limit", ("pids", "pids.max", None, Scale::One), ("pids", "pids.max", None, Scale::One), Max::Zero),
];

pub(crate) fn collect(cg: &Cgroup) -> Result<Value, CgroupError> {
    let mut out = json!({});
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .map_or(100, |t| t as u64);
    for (pointer, v1, v2, max) in TABLE {
        let (v1_hier, v2_hier) = (
            source_dir(cg, v1.0, Version::V1),
            source_dir(cg, v2.0, Version::V2),
        );
        let (src, dir) = match (v1_hier, v2_hier) {
            (Some(d), _) => (v1, d),
            (None, Some(d)) => (v2, d),
            (None, None) => continue,
        };
        let Some(raw) = read_number(&dir.join(src.1), src.2, *max) else {
            continue;
        };
        let value = match src.3 {
            Scale::One => raw,
            Scale::UsecToNs => raw.saturating_mul(1000),
            Scale::TicksToNs => raw.saturating_mul(1_000_000_000 / ticks),
        };
        set(&mut out, pointer, json!(value));
    }
    if let Some(dir) = cg.dir_for("memory") {
        if let Ok(text) = fsio::read(&dir.join("memory.stat")) {
            let raw: BTreeMap<&str, u64> = text
                .lines()
                .filter_map(|l| l.split_once(' '))
                .filter_map(|(k, v)| v.trim().parse().ok().map(|v| (k, v)))
                .collect();
            set(&mut out, "/memory/raw", json!(raw));
        }
    }
    if let Some(dir) = cg
        .dir_for("cpuacct")
        .filter(|_| cg.route("cpuacct").map(|h| h.version) == Some(Version::V1))
    {
        if let Ok(text) = fsio::read(&dir.join("cpuacct.usage_percpu")) {
            let per: Vec<u64> = text
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            set(&mut out, "/cpu/usage/percpu", json!(per));
        }
    }
    Ok(out)
}

fn source_dir<'a>(cg: &'a Cgroup, controller: &str, version: Version) -> Option<&'a Path> {
    cg.route(controller)
        .filter(|h| h.version == version)
        .map(|h| h.dir.as_path())
}

/// A number from a single-value file or from "key value" lines; "max" per `max`. None when
/// the file or key is missing: stats are best effort.
fn read_number(path: &Path, key: Option<&str>, max: Max) -> Option<u64> {
    let text = fsio::read(path).ok()?;
    let word = match key {
        None => text.trim().to_string(),
        Some(k) => text.lines().find_map(|l| {
            let (name, v) = l.split_once(' ')?;
            (name == k).then(|| v.trim().to_string())
        })?,
    };
    match word.as_str() {
        "max" => Some(match max {
            Max::AllOnes => u64::MAX,
            Max::Zero => 0,
        }),
        w => w.parse().ok(),
    }
}

/// Sets `value` at a JSON pointer, creating the objects on the way.
fn set(root: &mut Value, pointer: &str, value: Value) {
    let mut cur = root;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let Value::Object(map) = cur else { return };
        if i + 1 == parts.len() {
            map.insert(part.to_string(), value);
            return;
        }
        cur = map
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keys_and_max() {
        let dir = std::env::temp_dir().join(format!("molt-unit-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("cpu.stat"), "usage_usec 12\nuser_usec 7\n").expect("write");
        std::fs::write(dir.join("pids.max"), "max\n").expect("write");
        assert_eq!(
            read_number(&dir.join("cpu.stat"), Some("user_usec"), Max::AllOnes),
            Some(7)
        );
        assert_eq!(
            read_number(&dir.join("cpu.stat"), Some("nope"), Max::AllOnes),
            None
        );
        assert_eq!(read_number(&dir.join("pids.max"), None, Max::Zero), Some(0));
        assert_eq!(
            read_number(&dir.join("pids.max"), None, Max::AllOnes),
            Some(u64::MAX)
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
        let mut v = json!({});
        set(&mut v, "/a/b/c", json!(1));
        set(&mut v, "/a/d", json!(2));
        assert_eq!(v, json!({"a": {"b": {"c": 1}, "d": 2}}));
    }
}
