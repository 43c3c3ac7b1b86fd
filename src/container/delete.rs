//! `delete`: stop what is left of the container and release everything it held — processes,
//! network, volumes, pinned namespaces, cgroup, state directory — then the poststop hooks. Each
//! part is idempotent, so a delete after a crash or a failed create finishes the job.

use std::time::{Duration, Instant};

use super::{Container, Error, Result, Status};

impl Container {
    pub fn delete(&mut self, force: bool) -> Result<()> {
        let status = self.status();
        match status {
            Status::Stopped | Status::Created | Status::Creating => {}
            _ if force => {}
            _ => {
                return Err(Error::WrongStatus {
                    id: self.state.id.clone(),
                    status,
                    action: "delete",
                    wanted: "stopped (or use --force)",
                })
            }
        }
        teardown(self, true);
        // The configs `molt upgrade --derive` wrote for this id go with it.
        let _ = std::fs::remove_dir_all(super::derived_dir(&self.root, &self.state.id));
        Ok(())
    }
}

/// Kill every process of the container and wait until none is left (or `timeout` passes).
pub fn stop_all(c: &Container, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let cg = c.state.cgroup.as_ref();
    loop {
        let mut alive = vec![];
        if c.state.pid > 0 && super::process_is(c.state.pid, c.state.pid_start_time) {
            alive.push(c.state.pid);
        }
        if let Some(pids) = cg.and_then(|g| g.pids().ok()) {
            for p in pids {
                if !alive.contains(&p) {
                    alive.push(p);
                }
            }
        }
        // Reap our own child (run, or a failed create) so it does not linger as a zombie.
        if c.state.pid > 0 {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(c.state.pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        }
        alive.retain(|p| !is_zombie(*p));
        if alive.is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        for p in &alive {
            // SAFETY: kill(2) on pids read from our cgroup or our state.
            unsafe { libc::kill(*p, libc::SIGKILL) };
        }
        // A frozen task cannot die until it is thawed.
        if let Some(g) = cg {
            if g.is_frozen().unwrap_or(false) {
                let _ = g.thaw();
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn is_zombie(pid: i32) -> bool {
    crate::procfs::stat(pid).map(|s| s.state == 'Z').unwrap_or(true)
}

/// Release everything; failures are logged and the rest still runs.
pub fn teardown(c: &mut Container, poststop: bool) {
    let id = c.state.id.clone();
    let warn = |what: &str, e: &dyn std::fmt::Display| crate::logging::warn(&format!("container {id}: {what}: {e}"));
    if !stop_all(c, Duration::from_secs(10)) {
        warn("stop processes", &"some processes did not exit within 10s");
    }
    if let Some(att) = c.state.net.take() {
        if let Err(e) = crate::net::detach(&att) {
            warn("remove network", &e);
        }
    }
    let registry = crate::volume::Registry::new(&c.root);
    for key in std::mem::take(&mut c.state.volumes) {
        if let Err(e) = registry.release(&key, &id) {
            warn(&format!("release volume {key}"), &e);
        }
    }
    if let Some(pin) = c.state.netns_pin.take() {
        crate::namespaces::unpin(&pin);
    }
    if let Some(cg) = &c.state.cgroup {
        if let Err(e) = cg.destroy() {
            warn("remove cgroup", &e);
        }
    }
    if poststop {
        let hooks = crate::init::hooks_of(&c.state.config, |h| h.poststop().clone());
        crate::hooks::run_all_logged("poststop", &hooks, &c.oci_state(Status::Stopped).to_string(), crate::hooks::Place::Runtime { bundle: &c.state.bundle });
    }
    // Last, so that a delete killed before this point finds the state again and repeats the rest.
    let dir = c.dir();
    if let Err(e) = super::remove_state_dir(&c.root, &dir) {
        warn(&format!("remove {}", dir.display()), &e);
    }
}
