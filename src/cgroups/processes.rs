//! The container's processes as its cgroup sees them: adding one, listing all (children
//! included), and signalling every one without letting a fork slip past.

use std::collections::BTreeSet;

use nix::errno::Errno;

use super::{fsio, CgroupError, Cgroup};

impl Cgroup {
    /// Moves `pid` into the container's cgroup in every hierarchy.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            fsio::write(&h.dir.join("cgroup.procs"), &pid.to_string(), "add process")?;
        }
        Ok(())
    }

    /// Every process in the cgroup or its children, in any hierarchy, sorted and unique.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut all = BTreeSet::new();
        for h in &self.hierarchies {
            for dir in fsio::walk_dirs(&h.dir)? {
                let file = dir.join("cgroup.procs");
                let text = match fsio::read(&file) {
                    Err(e) if e.errno() == Some(Errno::ENOENT) && dir != h.dir => continue,
                    other => other?,
                };
                for line in text.lines().filter(|l| !l.is_empty()) {
                    let pid = line.trim().parse::<i32>().map_err(|e| CgroupError::Parse {
                        file: file.display().to_string(),
                        line: line.to_string(),
                        reason: e.to_string(),
                    })?;
                    all.insert(pid);
                }
            }
        }
        Ok(all.into_iter().collect())
    }

    /// Sends `sig` to every process. SIGKILL on v2 uses cgroup.kill (kernel 5.14+), which also
    /// catches processes forked meanwhile; otherwise the cgroup is frozen around the kill so
    /// no process can fork out of reach, then thawed (always for SIGKILL, so the killed can die;
    /// for other signals only if this call froze it).
    pub fn signal_all(&self, sig: i32) -> Result<(), CgroupError> {
        let was_frozen = self.is_frozen().unwrap_or(false);
        if sig == libc::SIGKILL {
            if let Some(h) = self.v2().filter(|h| h.dir.join("cgroup.kill").exists()) {
                fsio::write(&h.dir.join("cgroup.kill"), "1", "kill all")?;
                // On a hybrid host the freezer is v1's, which holds even SIGKILL until thawed.
                return if was_frozen { self.thaw() } else { Ok(()) };
            }
        }
        let froze = !was_frozen && self.freeze().is_ok();
        let result = self.kill_listed(sig);
        if froze || (was_frozen && sig == libc::SIGKILL) {
            self.thaw()?;
        }
        result
    }

    fn kill_listed(&self, sig: i32) -> Result<(), CgroupError> {
        for pid in self.pids()? {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours. libc rather than
            // nix because nix's Signal cannot carry realtime signals.
            if unsafe { libc::kill(pid, sig) } != 0 {
                let errno = Errno::last();
                // The process exited between listing and signalling.
                if errno != Errno::ESRCH {
                    return Err(CgroupError::Signal {
                        pid,
                        sig,
                        path: self
                            .hierarchies
                            .first()
                            .map(|h| h.dir.join("cgroup.procs"))
                            .unwrap_or_default(),
                        errno,
                    });
                }
            }
        }
        Ok(())
    }
}
