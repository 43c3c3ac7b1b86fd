//! The health gate: `--health` and the durations the operator gives, and the probe that decides
//! between commit and rollback once the new application runs.

use std::time::{Duration, Instant};

use super::handover;
use super::interrupt::check_interrupt;
use super::steps::Run;
use crate::container::{Container, Status};

#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    None,
    Exec(Vec<String>),
    Tcp(u16),
    Running(Duration),
}

impl Health {
    pub fn parse(s: &str) -> Result<Health, String> {
        let (kind, arg) = s.split_once(':').ok_or_else(|| format!("--health {s:?}: use exec:CMD, tcp:PORT or running:DUR"))?;
        match kind {
            "exec" if !arg.trim().is_empty() => Ok(Health::Exec(arg.split_whitespace().map(String::from).collect())),
            "tcp" => arg.parse().map(Health::Tcp).map_err(|_| format!("--health {s:?}: {arg:?} is not a port")),
            "running" => parse_duration(arg).map(Health::Running),
            _ => Err(format!("--health {s:?}: use exec:CMD, tcp:PORT or running:DUR")),
        }
    }
}

/// "500ms", "10s", "2m", or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map(|i| s.split_at(i)).unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| format!("duration {s:?}: not a number"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("duration {s:?}: unit must be ms, s or m")),
    };
    seconds(secs).ok_or_else(|| format!("duration {s:?}: out of range (0 up to {} seconds)", u64::MAX))
}

/// A number of seconds from the user as a Duration; None when negative, not finite or too large
/// (Duration::from_secs_f64 panics on those).
pub fn seconds(secs: f64) -> Option<Duration> {
    if secs < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(secs).ok()
}

/// Step 6, second half: the new application must prove itself before the old one is removed.
pub(super) fn health_gate(r: &mut Run) -> Result<String, String> {
    let new = r.load(&r.rec.id)?;
    let deadline = Instant::now() + r.opts.health_timeout;
    let alive = |c: &Container| c.status() == Status::Running;
    let note = match &r.opts.health {
        Health::None => {
            if !alive(&new) {
                return Err("the new application exited right after start".into());
            }
            "no gate; the process is running".to_string()
        }
        Health::Running(d) => {
            let until = Instant::now() + *d;
            while Instant::now() < until {
                check_interrupt()?;
                std::thread::sleep(Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())));
            }
            if !alive(&new) {
                return Err(format!("the new application did not stay up for {}ms", d.as_millis()));
            }
            format!("still running after {}ms", d.as_millis())
        }
        Health::Tcp(port) => loop {
            check_interrupt()?;
            match handover::tcp_probe(new.state.pid, *port).and_then(|()| app_accepts(&new, *port, deadline)) {
                Ok(note) => break note,
                Err(e) if Instant::now() >= deadline || !alive(&new) => return Err(format!("health gate tcp:{port}: {e}")),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        },
        Health::Exec(args) => loop {
            check_interrupt()?;
            let res = exec_probe(&new, args);
            match res {
                Ok(()) => break format!("`{}` exited 0", args.join(" ")),
                Err(e) if Instant::now() >= deadline || !alive(&new) => return Err(format!("health gate exec: {e}")),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        },
    };
    Ok(note)
}

/// One attempt of the check `h` against a container as it runs now (what `molt bundle status`
/// reports on each host): Ok with what passed, Err with why not. The gate's own timing (its
/// retries, running:DUR's wait) is not repeated: running:DUR holds now when the container runs.
pub fn check_now(c: &Container, h: &Health) -> Result<String, String> {
    let status = c.status();
    if status != Status::Running {
        return Err(format!("the container is {status}"));
    }
    match h {
        Health::None => Ok("running; no check".into()),
        Health::Running(_) => Ok("running".into()),
        Health::Tcp(port) => handover::tcp_probe(c.state.pid, *port).and_then(|()| app_accepts(c, *port, Instant::now() + Duration::from_secs(1))),
        Health::Exec(args) => exec_probe(c, args).map(|()| format!("`{}` exited 0", args.join(" "))),
    }
}

/// With a socket molt holds, the kernel completes every handshake whether or not the application
/// runs: the gate also waits for the application to take the connections from the accept queue.
fn app_accepts(new: &Container, port: u16, deadline: Instant) -> Result<String, String> {
    let eps: Vec<_> = crate::listen::from_spec(&new.state.config)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| matches!(e.addr, crate::listen::Addr::Tcp(a) if a.port() == port))
        .collect();
    let taken = crate::listen::take(&handover::pids_of(new), &eps);
    let Some(fd) = taken.into_iter().flatten().next() else { return Ok(format!("port {port} accepts connections")) };
    use std::os::fd::AsRawFd;
    loop {
        if crate::listen::accept_queue(fd.as_raw_fd()) == Some(0) {
            return Ok(format!("port {port} accepts connections and the application takes them from the queue"));
        }
        if Instant::now() >= deadline || new.status() != Status::Running {
            return Err(format!("connections to port {port} wait in the handed-over socket's queue; the application does not accept them"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exec_probe(c: &Container, args: &[String]) -> Result<(), String> {
    let mut p = c.state.config.process().clone().unwrap_or_default();
    p.set_args(Some(args.to_vec()));
    p.set_terminal(Some(false));
    let pid = c
        .exec(crate::container::exec::ExecOptions { process: p, ..Default::default() })
        .map_err(|e| e.to_string())?;
    match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
        Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
        other => Err(format!("`{}` ended with {other:?}", args.join(" "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_from_the_user_never_panic() {
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        for bad in ["99999999999999999999999", "1e300", "-1s", "NaN", "inf", "1e400ms", "5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(seconds(f64::NAN).is_none() && seconds(f64::INFINITY).is_none() && seconds(-0.5).is_none());
    }
}
