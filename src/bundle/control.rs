//! The operator's hold on a rollout: `pause`, `resume` and `promote` write a small file per bundle
//! on the operator's machine (`STATE_DIR/NAME/control.json`); a running rollout reads it between
//! batches. One rollout per bundle at a time, by an flock that dies with its holder.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::BundleError;

/// Where bundle state lives when neither --state-dir nor MOLT_BUNDLE_STATE says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/molt/bundles";

/// How often a held rollout looks at the control file again.
const POLL: Duration = Duration::from_millis(200);

/// A canary gate: the canaries of `role` run `version` and the rest of the role waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    pub version: String,
    pub role: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ControlState {
    #[serde(default)]
    pub paused: bool,
    /// Who paused, and when (for the message a held rollout prints).
    pub paused_by: Option<String>,
    /// The gate a rollout is holding at right now, if any.
    pub waiting: Option<Gate>,
    #[serde(default)]
    pub promoted: Vec<Gate>,
}

pub struct Control {
    dir: PathBuf,
}

fn io(file: &Path, e: std::io::Error) -> BundleError {
    BundleError::Read { file: file.into(), reason: e.to_string() }
}

/// An exclusive flock on `file`, or None when another process holds it.
fn flock(file: &Path, wait: bool) -> Result<Option<fs::File>, BundleError> {
    let f = fs::OpenOptions::new().create(true).truncate(false).write(true).open(file).map_err(|e| io(file, e))?;
    let op = if wait { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
    // SAFETY: flock on an fd we own; the lock goes with the fd (O_CLOEXEC: never inherited).
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        return Ok(Some(f));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(None);
    }
    Err(io(file, e))
}

impl Control {
    pub fn new(state_dir: &Path, bundle: &str) -> Result<Control, BundleError> {
        let dir = state_dir.join(bundle);
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        Ok(Control { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self) -> PathBuf {
        self.dir.join("control.json")
    }

    pub fn read(&self) -> Result<ControlState, BundleError> {
        let file = self.file();
        match fs::read_to_string(&file) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| BundleError::Parse { file, reason: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ControlState::default()),
            Err(e) => Err(io(&file, e)),
        }
    }

    /// Read, change and write back under the control lock (pause and a rollout may race).
    fn update<T>(&self, f: impl FnOnce(&mut ControlState) -> Result<T, BundleError>) -> Result<T, BundleError> {
        let _lock = flock(&self.dir.join("control.lock"), true)?;
        let mut st = self.read()?;
        let out = f(&mut st)?;
        let file = self.file();
        let tmp = self.dir.join(format!(".control.json.{}", std::process::id()));
        let text = serde_json::to_vec_pretty(&st).map_err(|e| BundleError::Parse { file: file.clone(), reason: e.to_string() })?;
        fs::File::create(&tmp).and_then(|mut t| t.write_all(&text).and_then(|_| t.sync_all())).map_err(|e| io(&tmp, e))?;
        fs::rename(&tmp, &file).map_err(|e| io(&file, e))?;
        Ok(out)
    }

    /// The rollout lock: held for the whole of `bundle upgrade`.
    pub fn lock_rollout(&self) -> Result<fs::File, BundleError> {
        flock(&self.dir.join("rollout.lock"), false)?
            .ok_or_else(|| BundleError::Refused(format!("another molt bundle upgrade of this bundle is running (lock {})", self.dir.join("rollout.lock").display())))
    }

    pub fn pause(&self, who: &str) -> Result<(), BundleError> {
        let at = crate::logging::now_rfc3339();
        self.update(|st| {
            st.paused = true;
            st.paused_by = Some(format!("{who} at {at}"));
            Ok(())
        })
    }

    /// Returns whether the bundle was paused.
    pub fn resume(&self) -> Result<bool, BundleError> {
        self.update(|st| {
            let was = st.paused;
            st.paused = false;
            st.paused_by = None;
            Ok(was)
        })
    }

    /// Promote the gate a rollout holds at (of `role` when given).
    pub fn promote(&self, role: Option<&str>) -> Result<Gate, BundleError> {
        self.update(|st| {
            let g = match (&st.waiting, role) {
                (Some(g), None) => g.clone(),
                (Some(g), Some(r)) if g.role == r => g.clone(),
                (Some(g), Some(r)) => return Err(BundleError::Refused(format!("the rollout waits on the canary of role {:?}, not {r:?}", g.role))),
                (None, _) => return Err(BundleError::Refused("no rollout of this bundle is waiting on a canary".into())),
            };
            if !st.promoted.contains(&g) {
                st.promoted.push(g.clone());
            }
            st.waiting = None;
            Ok(g)
        })
    }

    pub fn promoted(&self, g: &Gate) -> Result<bool, BundleError> {
        Ok(self.read()?.promoted.contains(g))
    }

    /// Record a gate passed without the operator (--auto-promote), so a re-run does not wait.
    pub fn mark_promoted(&self, g: &Gate) -> Result<(), BundleError> {
        self.update(|st| {
            if !st.promoted.contains(g) {
                st.promoted.push(g.clone());
            }
            if st.waiting.as_ref() == Some(g) {
                st.waiting = None;
            }
            Ok(())
        })
    }

    /// Block while the bundle is paused; `say` hears once that it is held.
    pub fn wait_while_paused(&self, say: &dyn Fn(&str), before: &str) -> Result<(), BundleError> {
        let mut told = false;
        loop {
            let st = self.read()?;
            if !st.paused {
                if told {
                    say("resumed");
                }
                return Ok(());
            }
            if !told {
                say(&format!("paused ({}) before {before}: waiting for `molt bundle resume`", st.paused_by.as_deref().unwrap_or("-")));
                told = true;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Hold at `g` until `promote` (a pause meanwhile holds too).
    pub fn wait_for_promotion(&self, g: &Gate, say: &dyn Fn(&str)) -> Result<(), BundleError> {
        self.update(|st| {
            st.waiting = Some(g.clone());
            Ok(())
        })?;
        say(&format!("canary: role {} runs {}; waiting for `molt bundle promote` (the rest of the role is held)", g.role, g.version));
        while !self.promoted(g)? {
            std::thread::sleep(POLL);
        }
        say(&format!("canary of role {} promoted", g.role));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control() -> (PathBuf, Control) {
        let d = std::env::temp_dir().join(format!("molt-control-test-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = fs::remove_dir_all(&d);
        let c = Control::new(&d, "shop").unwrap();
        (d, c)
    }

    #[test]
    fn pause_resume_and_promote_round_trip() {
        let (d, c) = control();
        assert!(!c.read().unwrap().paused);
        c.pause("op@here").unwrap();
        assert!(c.read().unwrap().paused);
        assert!(c.resume().unwrap());
        assert!(!c.resume().unwrap());
        let e = c.promote(None).unwrap_err().to_string();
        assert!(e.contains("no rollout"), "{e}");
        let g = Gate { version: "1.1.0".into(), role: "app".into() };
        c.update(|st| {
            st.waiting = Some(g.clone());
            Ok(())
        })
        .unwrap();
        assert!(c.promote(Some("db")).unwrap_err().to_string().contains("\"app\""));
        assert_eq!(c.promote(Some("app")).unwrap(), g);
        assert!(c.promoted(&g).unwrap());
        assert!(c.read().unwrap().waiting.is_none());
        let _ = fs::remove_dir_all(d);
    }

    #[test]
    fn one_rollout_at_a_time() {
        let (d, c) = control();
        let held = c.lock_rollout().unwrap();
        assert!(c.lock_rollout().unwrap_err().to_string().contains("another molt bundle upgrade"));
        drop(held);
        assert!(c.lock_rollout().is_ok());
        let _ = fs::remove_dir_all(d);
    }
}
