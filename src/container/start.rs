//! `start`: release the init blocked on the exec fifo, then run the poststart hooks (the first
//! failing one stops the container).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use std::os::unix::fs::MetadataExt;

use super::{Container, Error, Result, Status};

impl Container {
    pub fn start(&mut self) -> Result<()> {
        let status = self.status();
        if status != Status::Created {
            return Err(Error::WrongStatus { id: self.state.id.clone(), status, action: "start", wanted: "created" });
        }
        let fifo = self.fifo_path();
        let init_exe = self.init_exe();
        // Non-blocking: if the init died, there is no reader and open fails with ENXIO instead of hanging.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .map_err(|e| Error::Step { id: self.state.id.clone(), step: "start", reason: format!("open {}: {e} (the container's init is gone)", fifo.display()) })?;
        f.write_all(&[0]).map_err(super::io_err(&fifo))?;
        drop(f);
        std::fs::remove_file(&fifo).map_err(super::io_err(&fifo))?;
        self.state.status = Status::Running;
        self.save()?;
        // poststart is "after the user-specified process is executed": wait until the init has
        // run its startContainer hooks and exec'd (or died).
        self.wait_for_exec(init_exe);
        let hooks = crate::init::hooks_of(&self.state.config, |h| h.poststart().clone());
        // runtime-spec 1.3 (1.2 only warned): a failing poststart hook is an error and the
        // container is stopped; `delete` then destroys it and runs poststop, as after a failing
        // startContainer hook.
        let place = crate::hooks::Place::Runtime { bundle: &self.state.bundle };
        if let Err(e) = crate::hooks::run_all("poststart", &hooks, &self.oci_state(Status::Running).to_string(), place) {
            if !super::delete::stop_all(self, std::time::Duration::from_secs(10)) {
                crate::logging::warn(&format!("container {}: processes still alive 10 s after the failed poststart hook's SIGKILL", self.state.id));
            }
            return Err(e.into());
        }
        Ok(())
    }
}

impl Container {
    /// Which binary the init runs now (molt's, or its sealed copy), by device and inode.
    fn init_exe(&self) -> Option<(u64, u64)> {
        std::fs::metadata(format!("/proc/{}/exe", self.state.pid)).ok().map(|m| (m.dev(), m.ino()))
    }

    fn wait_for_exec(&self, before: Option<(u64, u64)>) {
        while before.is_some()
            && super::process_is(self.state.pid, self.state.pid_start_time)
            && self.init_exe() == before
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}
