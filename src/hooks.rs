//! OCI hooks: each runs with the container's state JSON on stdin, with its own args, env and timeout.
//! Who runs which kind, in which namespace and when, is decided by the lifecycle code; this module
//! only knows how to run one list of hooks and report the first failure.

use std::io::{Read, Write};
use std::path::Path;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{kind} hook {path}: cannot start: {source}")]
    Spawn { kind: &'static str, path: String, source: std::io::Error },
    #[error("{kind} hook {path}: {status}{output}")]
    Failed { kind: &'static str, path: String, status: String, output: String },
    #[error("{kind} hook {path}: timed out after {secs}s and was killed")]
    Timeout { kind: &'static str, path: String, secs: i64 },
    #[error("{kind} hook {path}: invalid timeout {secs}: must be greater than zero")]
    BadTimeout { kind: &'static str, path: String, secs: i64 },
}

/// Where a hook runs and what environment it gets without an `env` of its own. runtime-spec 1.3
/// makes a hook's `env` its whole environment (execve's) and says nothing of a hook without one,
/// nor of the working directory: there molt does as runc 1.1.5 does, but for poststop's cwd.
#[derive(Clone, Copy)]
pub enum Place<'a> {
    /// prestart, createRuntime, poststart, poststop: molt's own environment (hook scripts find
    /// their PATH) and the bundle as cwd, as runc's create gives them (runc's poststop runs
    /// wherever `delete` was called; molt's in the bundle too, or the caller's cwd once it is gone).
    Runtime { bundle: &'a Path },
    /// createContainer and startContainer: the container process's environment and the given cwd
    /// (the container's root before the pivot, then process.cwd), as runc's init gives them.
    Container { env: &'a [String], cwd: &'a Path },
}

/// Run the hooks in order; the first that fails stops the list.
pub fn run_all(kind: &'static str, hooks: &[Hook], state_json: &str, place: Place) -> Result<(), HookError> {
    for hook in hooks {
        run_one(kind, hook, state_json, place)?;
    }
    Ok(())
}

/// Run the list but only report failures (poststop: the spec says failures are logged, not fatal).
pub fn run_all_logged(kind: &'static str, hooks: &[Hook], state_json: &str, place: Place) {
    for hook in hooks {
        if let Err(e) = run_one(kind, hook, state_json, place) {
            crate::logging::warn(&e.to_string());
        }
    }
}

fn set_env_and_cwd(cmd: &mut Command, hook: &Hook, place: Place) {
    let own = hook.env().as_deref();
    let env = match (own, place) {
        (Some(env), _) | (None, Place::Container { env, .. }) => Some(env),
        (None, Place::Runtime { .. }) => None,
    };
    if let Some(env) = env {
        cmd.env_clear();
        for kv in env {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
    }
    match place {
        Place::Runtime { bundle } if bundle.is_dir() => cmd.current_dir(bundle),
        Place::Runtime { .. } => cmd,
        Place::Container { cwd, .. } => cmd.current_dir(cwd),
    };
}

fn run_one(kind: &'static str, hook: &Hook, state_json: &str, place: Place) -> Result<(), HookError> {
    let path = hook.path().display().to_string();
    let timeout = match hook.timeout() {
        Some(s) if s <= 0 => return Err(HookError::BadTimeout { kind, path, secs: s }),
        Some(s) => Some(s),
        None => None,
    };
    let args = hook.args().clone().unwrap_or_default();
    crate::logging::debug(&format!("hook {kind}: run {path} {args:?} (timeout {timeout:?} s)"));
    let mut cmd = Command::new(hook.path());
    if let Some(argv0) = args.first() {
        cmd.arg0(argv0);
    }
    cmd.args(args.iter().skip(1)).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    set_env_and_cwd(&mut cmd, hook, place);
    // Its own process group, so a timeout kills whatever the hook started too.
    cmd.process_group(0);
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn { kind, path: path.clone(), source })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is allowed: EPIPE is ignored, and SIGPIPE (which
        // molt keeps at its default so a closed stdout ends it quietly) must not kill us here.
        let _guard = SigpipeIgnored::new();
        let _ = stdin.write_all(state_json.as_bytes());
    }
    // Drain output on threads so a chatty hook cannot block on a full pipe while we wait.
    let readers: Vec<_> = [child.stdout.take().map(|o| Box::new(o) as Box<dyn Read + Send>),
        child.stderr.take().map(|e| Box::new(e) as Box<dyn Read + Send>)]
    .into_iter()
    .flatten()
    .map(|mut r| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    })
    .collect();
    let deadline = timeout.map(|s| Instant::now() + Duration::from_secs(s as u64));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => return Err(HookError::Spawn { kind, path, source }),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            // SAFETY: kill(2) on the process group the hook leads (set up by process_group(0)).
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::Timeout { kind, path, secs: timeout.unwrap_or_default() });
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let output: Vec<u8> = readers.into_iter().flat_map(|r| r.join().unwrap_or_default()).collect();
    if status.success() {
        return Ok(());
    }
    Err(HookError::Failed { kind, path, status: status.to_string(), output: failure_output(&output) })
}

/// What a failed hook printed, as its error quotes it (": TEXT", or nothing).
pub fn failure_output(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output).trim().to_string();
    if text.is_empty() { String::new() } else { format!(": {text}") }
}

/// SIGPIPE ignored while it lives, the previous disposition restored on drop.
struct SigpipeIgnored(libc::sighandler_t);

impl SigpipeIgnored {
    fn new() -> SigpipeIgnored {
        // SAFETY: signal(2) swaps a disposition; no handler code of ours is involved.
        SigpipeIgnored(unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) })
    }
}

impl Drop for SigpipeIgnored {
    fn drop(&mut self) {
        // SAFETY: as above, restoring what `new` saw.
        unsafe { libc::signal(libc::SIGPIPE, self.0) };
    }
}
