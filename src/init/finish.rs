//! The last steps before execve, where order is security: the seccomp filter before the
//! capabilities it needs are dropped (or, with no_new_privs, as late as possible), every fd of
//! the runtime's closed before the cwd is entered (CVE-2024-21626), the cwd checked inside the
//! root, the process made undumpable before it reports ready (CVE-2019-5736). The order lives in
//! `finish`, over the `Finish` seam, so it is unit-tested without root; `Real` makes the calls.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use super::channel::{Channel, Msg};
use super::{hooks_of, process, process_attrs, seccomp, state_seen_inside, wait_for_start, InitError, InitPlan};

/// The system calls of the last steps, one method per step `finish` orders.
pub(super) trait Finish {
    /// Installs the seccomp filter now (a notify profile's listener goes to the runtime).
    fn seccomp_now(&mut self) -> Result<(), InitError>;
    /// setgroups/setgid/setuid and the capability sets.
    fn user_and_caps(&mut self) -> Result<(), InitError>;
    /// Closes every fd but the preserved ones and those still needed until execve.
    fn close_runtime_fds(&mut self) -> Result<(), InitError>;
    /// chdir to process.cwd, then checks the result lies inside the container's root.
    fn enter_cwd(&mut self) -> Result<(), InitError>;
    /// Finds the executable (after the cwd: a relative path is found from it).
    fn find_executable(&mut self) -> Result<(), InitError>;
    /// PR_SET_DUMPABLE 0 and close-on-exec for what is left of the runtime's.
    fn undumpable(&mut self);
    /// execCPUAffinity: an exec'd process only, last, inside the container's cgroup.
    fn final_affinity(&mut self) -> Result<(), InitError>;
    /// The init: reports ready, waits for `start`, runs the startContainer hooks.
    fn ready_and_wait(&mut self) -> Result<(), InitError>;
    /// Hands the `io.molt.listen` sockets over (LISTEN_FDS and friends).
    fn pass_listeners(&mut self) -> Result<(), InitError>;
    /// execve, with the seccomp filter installed right before it if `with_filter`.
    fn exec(&mut self, with_filter: bool) -> InitError;
}

/// What decides the order.
#[derive(Debug, Clone, Copy)]
pub(super) struct Order {
    pub filter: bool,
    pub no_new_privs: bool,
    /// A notify profile: its listener must reach the runtime while the runtime still listens.
    pub notify: bool,
    pub is_exec: bool,
    pub is_init: bool,
}

/// Runs the last steps in their order; returns only with the error that stopped them.
pub(super) fn finish(sys: &mut impl Finish, o: Order) -> InitError {
    match steps(sys, o) {
        Ok(e) | Err(e) => e,
    }
}

fn steps(sys: &mut impl Finish, o: Order) -> Result<InitError, InitError> {
    // Without no_new_privs the filter needs CAP_SYS_ADMIN, so it goes on before the caps are
    // dropped (as runc does); with it, as late as possible, just before execve. A notify
    // profile goes on early whatever no_new_privs says.
    let early = o.filter && (!o.no_new_privs || o.notify);
    if early {
        sys.seccomp_now()?;
    }
    sys.user_and_caps()?;
    sys.close_runtime_fds()?;
    sys.enter_cwd()?;
    sys.find_executable()?;
    sys.undumpable();
    if o.is_exec {
        sys.final_affinity()?;
    }
    if o.is_init {
        sys.ready_and_wait()?;
    }
    sys.pass_listeners()?;
    Ok(sys.exec(o.filter && !early))
}

/// The real calls, for the init and for `exec`'s process.
pub(super) struct Real<'a> {
    pub plan: &'a InitPlan,
    pub chan: &'a Channel,
    pub console: Option<OwnedFd>,
    pub listeners: Vec<OwnedFd>,
    pub filter: Option<(&'a oci_spec::runtime::LinuxSeccomp, seccomp::Program)>,
    pub env: Vec<String>,
    pub args: Vec<String>,
    pub exe: Option<PathBuf>,
    /// The init's state for its startContainer hooks; None for `exec`.
    pub init_state: Option<String>,
}

impl Real<'_> {
    /// After Ready nobody reads the channel: an init's error goes to the container's stderr.
    fn after_ready(&self, e: InitError) -> InitError {
        if self.init_state.is_some() {
            eprintln!("molt: {}", e.0);
            std::process::exit(1);
        }
        e
    }
}

impl Finish for Real<'_> {
    fn seccomp_now(&mut self) -> Result<(), InitError> {
        let Some((s, prog)) = &self.filter else { return Ok(()) };
        if let Some(listener) = seccomp::install(s, prog)? {
            self.chan
                .send_with_fds(&Msg::SeccompListener, &[listener.as_raw_fd()])
                .map_err(|e| InitError::new(format!("linux.seccomp: send the notify listener to the runtime: {e}")))?;
        }
        Ok(())
    }

    fn user_and_caps(&mut self) -> Result<(), InitError> {
        process::set_user_and_caps(&self.plan.process)
    }

    fn close_runtime_fds(&mut self) -> Result<(), InitError> {
        let mut keep: Vec<std::os::fd::RawFd> = vec![self.chan.raw_fd()];
        keep.extend(self.plan.fifo.as_ref().map(|f| f.as_raw_fd()));
        keep.extend(self.console.as_ref().map(|f| f.as_raw_fd()));
        keep.extend(self.listeners.iter().map(|f| f.as_raw_fd()));
        process::close_fds_except(3 + self.plan.preserve_fds, &keep)
    }

    fn enter_cwd(&mut self) -> Result<(), InitError> {
        let cwd = self.plan.process.cwd();
        nix::unistd::chdir(cwd).map_err(|e| InitError::new(format!("process.cwd {}: {}", cwd.display(), e.desc())))?;
        process::check_cwd_inside_root(cwd)
    }

    fn find_executable(&mut self) -> Result<(), InitError> {
        let arg0 = self.args.first().ok_or_else(|| InitError::new("process.args: must not be empty"))?;
        self.exe = Some(process::find_executable(arg0, &process::env_path(&self.env), self.plan.process.cwd())?);
        Ok(())
    }

    fn undumpable(&mut self) {
        // What is left open from 3 + preserve-fds up is molt's own and goes at execve.
        process::close_fds_on_exec(3 + self.plan.preserve_fds);
        // Until execve replaces this image, /proc/PID/exe (the molt binary) is closed to the
        // container's processes. execve makes the new image dumpable.
        let _ = nix::sys::prctl::set_dumpable(false);
    }

    fn final_affinity(&mut self) -> Result<(), InitError> {
        process_attrs::set_final_affinity(self.plan.process.exec_cpu_affinity().as_ref()).map_err(|e| InitError::new(e.to_string()))
    }

    fn ready_and_wait(&mut self) -> Result<(), InitError> {
        let Some(state_json) = &self.init_state else { return Ok(()) };
        self.chan.send(&Msg::Ready).map_err(|e| InitError::new(format!("report ready: {e}")))?;
        if let Some(fifo) = &self.plan.fifo {
            wait_for_start(fifo)?;
        }
        let hooks = hooks_of(&self.plan.spec, |h| h.start_container().clone());
        let place = crate::hooks::Place::Container { env: &self.env, cwd: self.plan.process.cwd() };
        crate::hooks::run_all("startContainer", &hooks, &state_seen_inside(state_json, "created"), place)
            .map_err(|e| self.after_ready(InitError::new(e.to_string())))
    }

    fn pass_listeners(&mut self) -> Result<(), InitError> {
        let names: Vec<String> = self.plan.listen.iter().map(|(ep, _)| ep.name.clone()).collect();
        crate::listen::install(&self.listeners, &names, &mut self.env).map_err(|e| {
            self.after_ready(InitError::new(format!("pass the listening sockets ({}): {e}", crate::listen::ANNOTATION)))
        })
    }

    fn exec(&mut self, with_filter: bool) -> InitError {
        let Some(exe) = self.exe.clone() else { return InitError::new("no executable found") };
        let late = self.filter.as_ref().filter(|_| with_filter).map(|(s, prog)| (*s, prog));
        // An execve can fail only here even though the file was found, as for an interpreter the
        // kernel cannot open (`#!/proc/self/exe`, CVE-2019-5736).
        let e = process::exec(&exe, &self.args, &self.env, late);
        self.after_ready(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the steps in the order they are called; `fail_at` makes one fail.
    #[derive(Default)]
    struct Recording {
        calls: Vec<String>,
        fail_at: Option<&'static str>,
    }

    impl Recording {
        fn step(&mut self, name: &'static str) -> Result<(), InitError> {
            self.calls.push(name.to_string());
            if self.fail_at == Some(name) {
                return Err(InitError::new(format!("{name} failed")));
            }
            Ok(())
        }
        fn pos(&self, name: &str) -> usize {
            self.calls.iter().position(|c| c == name).unwrap_or_else(|| panic!("{name} not called: {:?}", self.calls))
        }
    }

    impl Finish for Recording {
        fn seccomp_now(&mut self) -> Result<(), InitError> {
            self.step("seccomp")
        }
        fn user_and_caps(&mut self) -> Result<(), InitError> {
            self.step("caps")
        }
        fn close_runtime_fds(&mut self) -> Result<(), InitError> {
            self.step("close-fds")
        }
        fn enter_cwd(&mut self) -> Result<(), InitError> {
            self.step("cwd")
        }
        fn find_executable(&mut self) -> Result<(), InitError> {
            self.step("find-exe")
        }
        fn undumpable(&mut self) {
            let _ = self.step("undumpable");
        }
        fn final_affinity(&mut self) -> Result<(), InitError> {
            self.step("affinity")
        }
        fn ready_and_wait(&mut self) -> Result<(), InitError> {
            self.step("ready")
        }
        fn pass_listeners(&mut self) -> Result<(), InitError> {
            self.step("listeners")
        }
        fn exec(&mut self, with_filter: bool) -> InitError {
            self.calls.push(if with_filter { "exec+seccomp" } else { "exec" }.to_string());
            InitError::new("exec")
        }
    }

    fn run(o: Order) -> Recording {
        let mut r = Recording::default();
        finish(&mut r, o);
        r
    }

    const INIT: Order = Order { filter: true, no_new_privs: false, notify: false, is_exec: false, is_init: true };

    #[test]
    fn without_no_new_privs_the_filter_goes_on_before_the_caps_are_dropped() {
        let r = run(INIT);
        assert!(r.pos("seccomp") < r.pos("caps"), "{:?}", r.calls);
        assert_eq!(r.calls.last().unwrap(), "exec", "installed once");
    }

    #[test]
    fn with_no_new_privs_the_filter_goes_on_at_execve() {
        let r = run(Order { no_new_privs: true, ..INIT });
        assert!(!r.calls.contains(&"seccomp".to_string()), "{:?}", r.calls);
        assert_eq!(r.calls.last().unwrap(), "exec+seccomp");
        // A notify profile goes on early whatever no_new_privs says: its listener must reach the runtime.
        let r = run(Order { no_new_privs: true, notify: true, ..INIT });
        assert!(r.pos("seccomp") < r.pos("ready"), "{:?}", r.calls);
        assert_eq!(r.calls.last().unwrap(), "exec");
        let r = run(Order { filter: false, ..INIT });
        assert!(!r.calls.contains(&"seccomp".to_string()) && r.calls.last().unwrap() == "exec", "{:?}", r.calls);
    }

    #[test]
    fn the_runtimes_fds_are_closed_before_the_cwd_is_entered_and_the_exe_found() {
        for o in [INIT, Order { is_exec: true, is_init: false, ..INIT }] {
            let r = run(o);
            assert!(r.pos("caps") < r.pos("close-fds"), "{:?}", r.calls);
            assert!(r.pos("close-fds") < r.pos("cwd"), "{:?}", r.calls);
            assert!(r.pos("cwd") < r.pos("find-exe"), "{:?}", r.calls);
        }
    }

    #[test]
    fn the_process_is_undumpable_before_it_reports_ready() {
        let r = run(INIT);
        assert!(r.pos("undumpable") < r.pos("ready"), "{:?}", r.calls);
        assert!(r.pos("ready") < r.pos("listeners"), "{:?}", r.calls);
        assert!(!r.calls.contains(&"affinity".to_string()), "execCPUAffinity is for exec'd processes");
        let r = run(Order { is_exec: true, is_init: false, ..INIT });
        assert!(!r.calls.contains(&"ready".to_string()));
        assert!(r.pos("undumpable") < r.pos("affinity"), "{:?}", r.calls);
    }

    #[test]
    fn a_failed_step_stops_everything_after_it() {
        for at in ["seccomp", "caps", "close-fds", "cwd", "find-exe", "ready", "listeners"] {
            let mut r = Recording { fail_at: Some(at), ..Default::default() };
            let e = finish(&mut r, INIT);
            assert_eq!(e.0, format!("{at} failed"));
            assert_eq!(r.calls.last().unwrap(), at, "nothing after {at}: {:?}", r.calls);
        }
    }
}
