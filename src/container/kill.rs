//! `kill`: a signal to the container's init, or with `--all` to every process in its cgroup.

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::{Container, Error, Result, Status};

/// SIGTERM, TERM, term and 15 all name the same signal.
pub fn parse_signal(s: &str) -> std::result::Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        // 0 only checks that the process exists, as kill(1) and runc allow.
        if (0..=64).contains(&n) {
            return Ok(n);
        }
        return Err(format!("invalid signal {s:?}"));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    if let Some(rt) = name.strip_prefix("SIGRTMIN") {
        let base = libc::SIGRTMIN();
        let off: i32 = if rt.is_empty() { 0 } else { rt.trim_start_matches('+').parse().map_err(|_| format!("invalid signal {s:?}"))? };
        return Ok(base + off);
    }
    name.parse::<Signal>().map(|s| s as i32).map_err(|_| format!("unknown signal {s:?}"))
}

impl Container {
    pub fn kill(&self, sig: i32, all: bool) -> Result<()> {
        let status = self.status();
        if all {
            // Also when stopped: without a pid namespace of its own the init's children outlive it,
            // and engines send `kill --all ID 9` after the init exited precisely to end them.
            if let Some(cg) = &self.state.cgroup {
                cg.signal_all(sig)?;
            }
        }
        if status == Status::Stopped {
            return if all { Ok(()) } else { Err(Error::NotRunning(self.state.id.clone())) };
        }
        // SAFETY: kill(2) with a pid we recorded; signal 0..64 checked by the caller's parse.
        let r = unsafe { libc::kill(Pid::from_raw(self.state.pid).as_raw(), sig) };
        if r != 0 {
            let e = nix::errno::Errno::last();
            if e == nix::errno::Errno::ESRCH {
                return if all { Ok(()) } else { Err(Error::NotRunning(self.state.id.clone())) };
            }
            return Err(Error::Sys { id: self.state.id.clone(), step: format!("kill {}", self.state.pid), errno: e });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_signal;

    #[test]
    fn signal_names() {
        assert_eq!(parse_signal("SIGTERM"), Ok(15));
        assert_eq!(parse_signal("term"), Ok(15));
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal("KILL"), Ok(9));
        assert!(parse_signal("SIGNOPE").is_err());
        assert_eq!(parse_signal("0"), Ok(0));
        assert!(parse_signal("-1").is_err());
        assert!(parse_signal("65").is_err());
    }
}
