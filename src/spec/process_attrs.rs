//! The process attributes runtime-spec 1.3 adds over runc 1.1 (`linux.personality`,
//! `process.ioPriority`, `process.scheduler`, `process.execCPUAffinity`, `linux.memoryPolicy`) as
//! the config states them: their names and ranges, checked on the raw JSON at create and exec so
//! errors name the field, and what `molt features` lists. The init's `process_attrs` makes the
//! system calls.

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum AttrError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{field}: {call}: {errno}")]
    Kernel { field: &'static str, call: &'static str, errno: std::io::Error },
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> AttrError {
    AttrError::Invalid { field: field.into(), reason: reason.into() }
}

const IO_CLASSES: &[&str] = &["IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE"];
const SCHED_POLICIES: &[&str] =
    &["SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_ISO", "SCHED_IDLE", "SCHED_DEADLINE"];
const DOMAINS: &[&str] = &["LINUX", "LINUX32"];
pub const MEMORY_MODES: &[&str] = &[
    "MPOL_DEFAULT",
    "MPOL_BIND",
    "MPOL_INTERLEAVE",
    "MPOL_WEIGHTED_INTERLEAVE",
    "MPOL_PREFERRED",
    "MPOL_PREFERRED_MANY",
    "MPOL_LOCAL",
];
pub const MEMORY_FLAGS: &[&str] = &["MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES", "MPOL_F_STATIC_NODES"];
/// The spec's scheduler flag names with oci-spec 0.10's spelling of each: its serde renaming
/// turns `SchedResetOnFork` into SCHED_RESET_ON_FORK and `SchedFlagDLOverrun` into
/// SCHED_FLAG_D_L_OVERRUN, so a config with the spec's names would not parse. The raw JSON is
/// rewritten to oci-spec's names before the typed parse (`translate_sched_flags`).
pub(crate) const SCHED_FLAGS: &[(&str, &str, u64)] = &[
    ("SCHED_FLAG_RESET_ON_FORK", "SCHED_RESET_ON_FORK", 0x01),
    ("SCHED_FLAG_RECLAIM", "SCHED_FLAG_RECLAIM", 0x02),
    ("SCHED_FLAG_DL_OVERRUN", "SCHED_FLAG_D_L_OVERRUN", 0x04),
    ("SCHED_FLAG_KEEP_POLICY", "SCHED_FLAG_KEEP_POLICY", 0x08),
    ("SCHED_FLAG_KEEP_PARAMS", "SCHED_FLAG_KEEP_PARAMS", 0x10),
    ("SCHED_FLAG_UTIL_CLAMP_MIN", "SCHED_FLAG_UTIL_CLAMP_MIN", 0x20),
    ("SCHED_FLAG_UTIL_CLAMP_MAX", "SCHED_FLAG_UTIL_CLAMP_MAX", 0x40),
];

// --- validation, on the raw JSON ----------------------------------------------------------------

fn one_of(v: &Value, field: &str, known: &[&str], required: bool) -> Result<(), AttrError> {
    match v {
        Value::Null if !required => Ok(()),
        Value::String(s) if known.contains(&s.as_str()) => Ok(()),
        other => Err(invalid(field, format!("{other} is not one of {}", known.join(", ")))),
    }
}

fn int_in(v: &Value, field: &str, lo: i64, hi: i64) -> Result<Option<i64>, AttrError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_i64() {
            Some(i) if (lo..=hi).contains(&i) => Ok(Some(i)),
            _ => Err(invalid(field, format!("{n} is out of range {lo}..={hi}"))),
        },
        other => Err(invalid(field, format!("{other} is not an integer"))),
    }
}

fn strings<'a>(v: &'a Value, field: &str) -> Result<Vec<&'a str>, AttrError> {
    match v {
        Value::Null => Ok(vec![]),
        Value::Array(a) => a.iter().map(|x| x.as_str().ok_or_else(|| invalid(field, format!("{x} is not a string")))).collect(),
        other => Err(invalid(field, format!("{other} is not an array of strings"))),
    }
}

/// Parse a list such as "0-3,7" into its numbers (CPUs or NUMA nodes); at most `max` (exclusive).
pub fn parse_list(s: &str, max: usize) -> Result<Vec<usize>, String> {
    let mut out = vec![];
    for part in s.split(',') {
        let num = |t: &str| t.parse::<usize>().map_err(|_| format!("{s:?}: {t:?} is not a number (expected a list such as \"0-3,7\")"));
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(part)?, num(part)?),
        };
        if a > b {
            return Err(format!("{s:?}: range {part:?} runs backwards"));
        }
        if b >= max {
            return Err(format!("{s:?}: {b} is above the largest supported ({})", max - 1));
        }
        out.extend(a..=b);
    }
    Ok(out)
}

pub(crate) const MAX_CPUS: usize = libc::CPU_SETSIZE as usize;
pub(crate) const MAX_NODES: usize = 1024;

/// `process` (of config.json, or of `exec --process`), as JSON: names and ranges of the 1.3
/// attributes, each error naming its field under `prefix`.
pub fn check_process(p: &Value, prefix: &str) -> Result<(), AttrError> {
    let io = &p["ioPriority"];
    if !io.is_null() {
        one_of(&io["class"], &format!("{prefix}.ioPriority.class"), IO_CLASSES, true)?;
        // ioprio_set(2): eight levels within RT and BE (IDLE has none; the kernel ignores it).
        int_in(&io["priority"], &format!("{prefix}.ioPriority.priority"), 0, 7)?;
    }
    let s = &p["scheduler"];
    if !s.is_null() {
        let field = format!("{prefix}.scheduler.policy");
        one_of(&s["policy"], &field, SCHED_POLICIES, true)?;
        let policy = s["policy"].as_str().unwrap_or_default();
        if policy == "SCHED_ISO" {
            return Err(invalid(field, "SCHED_ISO is reserved and not implemented by Linux"));
        }
        int_in(&s["nice"], &format!("{prefix}.scheduler.nice"), -20, 19)?;
        // sched(7): a static priority of 1..99 for the real-time policies, 0 for all others.
        let (lo, hi) = if matches!(policy, "SCHED_FIFO" | "SCHED_RR") { (1, 99) } else { (0, 0) };
        int_in(&s["priority"], &format!("{prefix}.scheduler.priority"), lo, hi)?;
        if matches!(policy, "SCHED_FIFO" | "SCHED_RR") && s["priority"].is_null() {
            return Err(invalid(format!("{prefix}.scheduler.priority"), format!("{policy} needs a priority of 1..=99")));
        }
        let flag_field = format!("{prefix}.scheduler.flags");
        for f in strings(&s["flags"], &flag_field)? {
            if !SCHED_FLAGS.iter().any(|(spec, _, _)| *spec == f) {
                let known: Vec<&str> = SCHED_FLAGS.iter().map(|(spec, _, _)| *spec).collect();
                return Err(invalid(flag_field, format!("{f:?} is not one of {}", known.join(", "))));
            }
        }
        let dl: Vec<Option<i64>> = ["runtime", "deadline", "period"]
            .iter()
            .map(|k| int_in(&s[*k], &format!("{prefix}.scheduler.{k}"), 0, i64::MAX))
            .collect::<Result<_, _>>()?;
        if policy == "SCHED_DEADLINE" {
            // sched_setattr(2): runtime <= deadline <= period (a period of 0 means the deadline),
            // and the kernel's smallest runtime is 1024 ns.
            let (runtime, deadline, period) = (dl[0].unwrap_or(0), dl[1].unwrap_or(0), dl[2].unwrap_or(0));
            if runtime < 1024 {
                return Err(invalid(format!("{prefix}.scheduler.runtime"), format!("{runtime}: SCHED_DEADLINE needs at least 1024 ns")));
            }
            if deadline < runtime || (period != 0 && period < deadline) {
                return Err(invalid(
                    format!("{prefix}.scheduler"),
                    format!("SCHED_DEADLINE needs runtime <= deadline <= period (got {runtime}, {deadline}, {period})"),
                ));
            }
        }
    }
    let aff = &p["execCPUAffinity"];
    for key in ["initial", "final"] {
        let field = format!("{prefix}.execCPUAffinity.{key}");
        match &aff[key] {
            Value::Null => {}
            Value::String(s) if s.is_empty() => {}
            Value::String(s) => {
                parse_list(s, MAX_CPUS).map_err(|e| invalid(&field, e))?;
            }
            other => return Err(invalid(field, format!("{other} is not a string"))),
        }
    }
    Ok(())
}

/// The whole config.json: `process` as above, and `linux.personality` / `linux.memoryPolicy`.
pub fn check_config(config: &Value) -> Result<(), AttrError> {
    if !config["process"].is_null() {
        check_process(&config["process"], "process")?;
    }
    let pers = &config["linux"]["personality"];
    if !pers.is_null() {
        one_of(&pers["domain"], "linux.personality.domain", DOMAINS, true)?;
        // runtime-spec: "currently no flag values are supported".
        if let Some(f) = strings(&pers["flags"], "linux.personality.flags")?.first() {
            return Err(invalid("linux.personality.flags", format!("{f:?}: no flags are defined by the runtime-spec")));
        }
    }
    let mp = &config["linux"]["memoryPolicy"];
    if !mp.is_null() {
        one_of(&mp["mode"], "linux.memoryPolicy.mode", MEMORY_MODES, true)?;
        let mode = mp["mode"].as_str().unwrap_or_default();
        let nodes = match &mp["nodes"] {
            Value::Null => None,
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(parse_list(s, MAX_NODES).map_err(|e| invalid("linux.memoryPolicy.nodes", e))?),
            other => return Err(invalid("linux.memoryPolicy.nodes", format!("{other} is not a string"))),
        };
        // set_mempolicy(2): DEFAULT and LOCAL take no nodes; the others bind to some.
        match (mode, &nodes) {
            ("MPOL_DEFAULT" | "MPOL_LOCAL", Some(_)) => {
                return Err(invalid("linux.memoryPolicy.nodes", format!("{mode} takes no nodes")));
            }
            ("MPOL_BIND" | "MPOL_INTERLEAVE" | "MPOL_WEIGHTED_INTERLEAVE" | "MPOL_PREFERRED_MANY", None) => {
                return Err(invalid("linux.memoryPolicy.nodes", format!("{mode} needs nodes, such as \"0\"")));
            }
            _ => {}
        }
        for f in strings(&mp["flags"], "linux.memoryPolicy.flags")? {
            if !MEMORY_FLAGS.contains(&f) {
                return Err(invalid("linux.memoryPolicy.flags", format!("{f:?} is not one of {}", MEMORY_FLAGS.join(", "))));
            }
        }
    }
    Ok(())
}

/// The spec's scheduler flag names rewritten to oci-spec 0.10's (see `SCHED_FLAGS`), in place,
/// after `check_process` accepted them.
pub fn translate_sched_flags(process: &mut Value) {
    if let Some(Value::Array(flags)) = process.get_mut("scheduler").and_then(|s| s.get_mut("flags")) {
        for f in flags.iter_mut() {
            if let Some((_, oci, _)) = SCHED_FLAGS.iter().find(|(spec, _, _)| Some(*spec) == f.as_str()) {
                *f = Value::String((*oci).into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err_of(config: Value) -> String {
        check_config(&config).unwrap_err().to_string()
    }

    #[test]
    fn lists_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_list("0-3,7", 64).unwrap(), vec![0, 1, 2, 3, 7]);
        assert_eq!(parse_list("1", 64).unwrap(), vec![1]);
        for bad in ["", "a", "3-1", "0,", "-1", "1-", "64"] {
            assert!(parse_list(bad, 64).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_names_and_ranges_name_their_field() {
        let e = err_of(json!({"process": {"ioPriority": {"class": "IOPRIO_CLASS_X", "priority": 0}}}));
        assert!(e.starts_with("process.ioPriority.class: \"IOPRIO_CLASS_X\" is not one of"), "{e}");
        let e = err_of(json!({"process": {"ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 8}}}));
        assert!(e.starts_with("process.ioPriority.priority: 8 is out of range"), "{e}");
        let e = err_of(json!({"process": {"scheduler": {"policy": "SCHED_FAST"}}}));
        assert!(e.starts_with("process.scheduler.policy:"), "{e}");
        let e = err_of(json!({"process": {"scheduler": {"policy": "SCHED_FIFO", "priority": 100}}}));
        assert!(e.starts_with("process.scheduler.priority: 100"), "{e}");
        let e = err_of(json!({"process": {"scheduler": {"policy": "SCHED_OTHER", "nice": 20}}}));
        assert!(e.starts_with("process.scheduler.nice: 20"), "{e}");
        let e = err_of(json!({"process": {"scheduler": {"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_X"]}}}));
        assert!(e.starts_with("process.scheduler.flags:"), "{e}");
        let e = err_of(json!({"process": {"scheduler": {"policy": "SCHED_DEADLINE", "runtime": 2000, "deadline": 1000, "period": 3000}}}));
        assert!(e.starts_with("process.scheduler: SCHED_DEADLINE needs runtime <= deadline"), "{e}");
        let e = err_of(json!({"process": {"execCPUAffinity": {"final": "0-x"}}}));
        assert!(e.starts_with("process.execCPUAffinity.final:"), "{e}");
        let e = err_of(json!({"linux": {"personality": {"domain": "LINUX64"}}}));
        assert!(e.starts_with("linux.personality.domain:"), "{e}");
        let e = err_of(json!({"linux": {"personality": {"domain": "LINUX", "flags": ["X"]}}}));
        assert!(e.starts_with("linux.personality.flags:"), "{e}");
        let e = err_of(json!({"linux": {"memoryPolicy": {"mode": "MPOL_FAST"}}}));
        assert!(e.starts_with("linux.memoryPolicy.mode:"), "{e}");
        let e = err_of(json!({"linux": {"memoryPolicy": {"mode": "MPOL_BIND"}}}));
        assert!(e.starts_with("linux.memoryPolicy.nodes: MPOL_BIND needs nodes"), "{e}");
        let e = err_of(json!({"linux": {"memoryPolicy": {"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_X"]}}}));
        assert!(e.starts_with("linux.memoryPolicy.flags:"), "{e}");
    }
}
