//! Freezing and thawing a container's processes: v1's freezer controller where the host mounts
//! it (hybrid hosts too, as runc), otherwise v2's cgroup.freeze, each read back until settled.

use std::thread::sleep;
use std::time::{Duration, Instant};

use super::{fsio, CgroupError, Cgroup, Hierarchy, Version};

/// How long freeze/thaw wait for the kernel to report the new state. Freezing waits for every
/// task to reach a safe point, which a task stuck in uninterruptible IO can delay.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

impl Cgroup {
    /// Freezes every process, returning once the kernel reports the cgroup frozen.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        self.set_frozen(true)
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false)
    }

    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        let (h, f) = self.freezer()?;
        let path = h.dir.join(f.state_file);
        Ok((f.parse)(&fsio::read(&path)?) == Some(true))
    }

    /// The freezer: v1's freezer controller where mounted (on hybrid hosts too, as runc),
    /// otherwise v2's core cgroup.freeze.
    fn freezer(&self) -> Result<(&Hierarchy, &'static Freezer), CgroupError> {
        if let Some(h) = self
            .hierarchies
            .iter()
            .find(|h| h.version == Version::V1 && h.controllers.iter().any(|c| c == "freezer"))
        {
            return Ok((h, &FREEZER_V1));
        }
        self.v2()
            .map(|h| (h, &FREEZER_V2))
            .ok_or_else(|| CgroupError::NoController {
                field: "freeze".to_string(),
                controller: "freezer".to_string(),
            })
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let (h, f) = self.freezer()?;
        let control = h.dir.join(f.control_file);
        let state = h.dir.join(f.state_file);
        let (value, want) = if frozen {
            (f.freeze, "frozen")
        } else {
            (f.thaw, "thawed")
        };
        let start = Instant::now();
        let mut round = 0u32;
        loop {
            // v1 can sit in FREEZING when a task raced with the freeze (e.g. was forking);
            // writing the state again retries the freeze for the stragglers, as runc does.
            if round.is_multiple_of(10) {
                fsio::write(&control, value, want)?;
            }
            let last = fsio::read(&state)?;
            if (f.parse)(&last) == Some(frozen) {
                return Ok(());
            }
            if start.elapsed() > FREEZE_TIMEOUT {
                if frozen {
                    // Leave the container running rather than half-frozen; the error is what matters.
                    let _ = fsio::write(&control, f.thaw, "thaw after failed freeze");
                }
                return Err(CgroupError::StateTimeout {
                    path: state,
                    want: if frozen {
                        f.frozen_reads
                    } else {
                        f.thawed_reads
                    },
                    waited_ms: start.elapsed().as_millis(),
                    last: last.trim().to_string(),
                });
            }
            sleep(Duration::from_millis(u64::from(round.min(10)) + 1));
            round += 1;
        }
    }
}

/// One freezer interface: which file to write, which to read back, and how to read it.
struct Freezer {
    control_file: &'static str,
    state_file: &'static str,
    freeze: &'static str,
    thaw: &'static str,
    frozen_reads: &'static str,
    thawed_reads: &'static str,
    /// Some(frozen) once settled, None while in transition.
    parse: fn(&str) -> Option<bool>,
}

const FREEZER_V1: Freezer = Freezer {
    control_file: "freezer.state",
    state_file: "freezer.state",
    freeze: "FROZEN",
    thaw: "THAWED",
    frozen_reads: "FROZEN",
    thawed_reads: "THAWED",
    parse: |s| match s.trim() {
        "FROZEN" => Some(true),
        "THAWED" => Some(false),
        _ => None, // FREEZING
    },
};

const FREEZER_V2: Freezer = Freezer {
    control_file: "cgroup.freeze",
    state_file: "cgroup.events",
    freeze: "1",
    thaw: "0",
    frozen_reads: "frozen 1",
    thawed_reads: "frozen 0",
    parse: |s| {
        s.lines()
            .find_map(|l| l.strip_prefix("frozen "))
            .map(|v| v.trim() == "1")
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freezer_states_parse() {
        assert_eq!((FREEZER_V1.parse)("FROZEN\n"), Some(true));
        assert_eq!((FREEZER_V1.parse)("FREEZING\n"), None);
        assert_eq!((FREEZER_V2.parse)("populated 1\nfrozen 1\n"), Some(true));
        assert_eq!((FREEZER_V2.parse)("populated 0\nfrozen 0\n"), Some(false));
    }
}
