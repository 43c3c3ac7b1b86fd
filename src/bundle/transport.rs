//! How the operator's molt reaches a host: OpenSSH's client (BatchMode, host keys checked, the
//! user's ssh config honoured, one multiplexed master connection per host under a private
//! directory), or the operator's own host directly. A host needs only sshd, molt, sh, tar and
//! sha256sum. Also the shipping of a bundle directory: a reproducible tar, its sha256 checked on
//! arrival, into a content-addressed directory under the host's molt root, sent once.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::doc::Host;
use super::BundleError;

/// Where the control sockets of one operator run live; removed (masters closed) on drop.
pub struct Session {
    dir: PathBuf,
    masters: std::sync::Mutex<Vec<Vec<String>>>,
}

impl Session {
    pub fn new() -> Result<Session, BundleError> {
        // The pid and a count of this process's sessions make the name unique: the clock alone
        // did not (two sessions made at once under the VM lab's coarse clock collided).
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let dir = std::env::temp_dir().join(format!("molt-ssh-{}-{n}-{}", std::process::id(), stamp % 1_000_000_000));
        std::fs::create_dir(&dir).map_err(|e| BundleError::Transport { host: "-".into(), reason: format!("mkdir {}: {e}", dir.display()) })?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        Ok(Session { dir, masters: Default::default() })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let masters = std::mem::take(&mut *self.masters.lock().unwrap_or_else(|e| e.into_inner()));
        for base in masters {
            let _ = Command::new("ssh").args(&base).args(["-O", "exit"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One host as the operator reaches it.
pub struct Transport {
    pub name: String,
    pub host: Host,
    /// ssh's arguments up to and including the destination; empty for a local host.
    ssh: Vec<String>,
    /// Sessions open now over the host's master connection.
    open: std::sync::Mutex<usize>,
    closed: std::sync::Condvar,
}

/// How many commands run at once over one host's multiplexed connection. sshd refuses a session
/// past its MaxSessions (10 by default), and ssh then opens a connection of its own for that
/// command ("Session open refused by peer"): a key exchange and a login each, counted against
/// MaxStartups, for a --parallel above it or a batch crowding on one host. Two below the default:
/// a session that just ended may still count there.
pub const SESSIONS_PER_HOST: usize = 8;

/// One session slot of a host, given back on drop.
struct Slot<'a>(&'a Transport);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.open.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.0.closed.notify_one();
    }
}

/// A word for a POSIX shell: ssh hands the remote side one command line.
pub fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
        return s.into();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Transport {
    pub fn new(session: &Session, name: &str, host: &Host) -> Transport {
        let mut ssh = vec![];
        if let Some(dest) = &host.ssh {
            if let Some(f) = &host.ssh_config {
                ssh.extend(["-F".into(), f.display().to_string()]);
            }
            let secs = host.ssh_timeout_secs().unwrap_or(5);
            for o in [
                "BatchMode=yes".to_string(),
                "StrictHostKeyChecking=yes".into(),
                format!("ConnectTimeout={secs}"),
                format!("ServerAliveInterval={secs}"),
                "ServerAliveCountMax=3".into(),
                format!("ControlPath={}/%C", session.dir.display()),
                "ControlMaster=no".into(),
            ] {
                ssh.extend(["-o".into(), o]);
            }
            if let Some(u) = &host.user {
                ssh.extend(["-l".into(), u.clone()]);
            }
            if let Some(p) = host.port {
                ssh.extend(["-p".into(), p.to_string()]);
            }
            if let Some(i) = &host.identity {
                ssh.extend(["-i".into(), i.display().to_string(), "-o".into(), "IdentitiesOnly=yes".into()]);
            }
            ssh.push(dest.clone());
        }
        Transport { name: name.into(), host: host.clone(), ssh, open: Default::default(), closed: Default::default() }
    }

    /// Wait for a free session on an ssh host (a local one has no limit).
    fn slot(&self) -> Option<Slot<'_>> {
        if self.ssh.is_empty() {
            return None;
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        while *open >= SESSIONS_PER_HOST {
            open = self.closed.wait(open).unwrap_or_else(|e| e.into_inner());
        }
        *open += 1;
        Some(Slot(self))
    }

    fn err(&self, reason: impl Into<String>) -> BundleError {
        BundleError::Transport { host: self.name.clone(), reason: reason.into() }
    }

    /// Open the master connection (ssh hosts); its failure is the host's being unreachable.
    pub fn connect(&self, session: &Session) -> Result<(), BundleError> {
        if self.ssh.is_empty() {
            return Ok(());
        }
        // The master goes to the background (-f) and keeps its stderr: a file, not a pipe we
        // would wait on forever.
        let log = session.dir.join(format!("{}.master.log", self.name.replace('/', "_")));
        let file = std::fs::File::create(&log).map_err(|e| self.err(format!("{}: {e}", log.display())))?;
        // ssh takes the first value it is given for an option: ControlMaster=yes goes before the
        // base arguments' ControlMaster=no (after them, the "master" made no control socket and
        // every command opened a connection of its own).
        let st = Command::new("ssh")
            .args(["-o", "ControlMaster=yes", "-o", "ControlPersist=120", "-f", "-N"])
            .args(&self.ssh)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .status()
            .map_err(|e| self.err(format!("cannot run ssh: {e}")))?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if !st.success() {
            let why = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("ssh failed").trim().to_string();
            return Err(self.err(format!("ssh {}: {why}", self.ssh.last().map(String::as_str).unwrap_or("-"))));
        }
        session.masters.lock().unwrap_or_else(|e| e.into_inner()).push(self.ssh.clone());
        Ok(())
    }

    /// A shell command line run on the host (sh -c locally, the login shell over ssh).
    pub fn shell(&self, script: &str) -> Command {
        if self.ssh.is_empty() {
            let mut c = Command::new("sh");
            c.args(["-c", script]);
            c
        } else {
            let mut c = Command::new("ssh");
            c.args(&self.ssh).arg("--").arg(script);
            c
        }
    }

    /// `molt --root ROOT ARGS...` as one command line for the host's shell.
    fn molt_script(&self, args: &[&str]) -> String {
        let mut words = vec![quote(&self.host.molt), "--root".into(), quote(&self.host.root.display().to_string())];
        words.extend(args.iter().map(|a| quote(a)));
        words.join(" ")
    }

    /// `molt --root ROOT ARGS...` on the host, output collected.
    pub fn molt(&self, args: &[&str]) -> Result<Output, BundleError> {
        self.run(&self.molt_script(args), None)
    }

    /// `molt` as [`Transport::molt`], each line of its stderr handed to `on_line` as it arrives
    /// (a live display of `--format json`'s step events); stdout and stderr collected as well.
    pub fn molt_lines(&self, args: &[&str], on_line: &(dyn Fn(&str) + Sync)) -> Result<Output, BundleError> {
        use std::io::{BufRead, Read};
        let _slot = self.slot();
        let mut c = self.shell(&self.molt_script(args));
        let mut child = c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| self.cannot_run(e))?;
        let (mut out, err) = (child.stdout.take(), child.stderr.take());
        // stdout read beside stderr: a report larger than a pipe must not block the stream.
        let (stdout, stderr) = std::thread::scope(|s| {
            let reader = s.spawn(move || {
                let mut buf = vec![];
                if let Some(o) = out.as_mut() {
                    let _ = o.read_to_end(&mut buf);
                }
                buf
            });
            let mut all = vec![];
            if let Some(e) = err {
                let mut lines = std::io::BufReader::new(e);
                let mut line = vec![];
                while lines.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                    on_line(String::from_utf8_lossy(&line).trim_end());
                    all.append(&mut line);
                }
            }
            (reader.join().unwrap_or_default(), all)
        });
        let status = child.wait().map_err(|e| self.cannot_run(e))?;
        self.checked(Output { status, stdout, stderr })
    }

    fn cannot_run(&self, e: std::io::Error) -> BundleError {
        self.err(format!("cannot run {}: {e}", if self.ssh.is_empty() { "sh" } else { "ssh" }))
    }

    /// ssh's own failure (exit 255) is an error of the transport, not of the command.
    fn checked(&self, out: Output) -> Result<Output, BundleError> {
        if !self.ssh.is_empty() && out.status.code() == Some(255) {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(self.err(format!("ssh: {}", err.lines().last().unwrap_or("connection failed").trim())));
        }
        Ok(out)
    }

    /// Run a script, feeding `input` (a file) on stdin; ssh's own failure (exit 255) is an error.
    pub fn run(&self, script: &str, input: Option<&Path>) -> Result<Output, BundleError> {
        let _slot = self.slot();
        let mut c = self.shell(script);
        match input {
            Some(p) => c.stdin(std::fs::File::open(p).map_err(|e| self.err(format!("{}: {e}", p.display())))?),
            None => c.stdin(Stdio::null()),
        };
        let out = c.output().map_err(|e| self.cannot_run(e))?;
        self.checked(out)
    }

    /// Ship a bundle directory; returns its directory on the host and whether it was sent.
    /// One round trip: the host's script looks for a complete copy with that digest first and,
    /// when there is one, ends at once without reading its input (the channel closes and ssh
    /// stops sending; a small bundle has arrived whole by then, and is thrown away).
    pub fn ship(&self, archive: &Archive) -> Result<(PathBuf, bool), BundleError> {
        let store = self.host.root.join(".bundles");
        let dest = store.join(format!("sha256-{}", archive.digest));
        let d = quote(&dest.display().to_string());
        let s = quote(&store.display().to_string());
        // Touched when found: a later prune sees it was in use by this rollout.
        let script = format!(
            "if test -f {d}/.molt-digest; then touch {d}; echo {PRESENT}; exit 0; fi; \
             set -e; umask 077; mkdir -p {s}; t=$(mktemp -d {s}/.incoming-XXXXXX); cat > \"$t.tar\"; \
             got=$(sha256sum < \"$t.tar\" | cut -d' ' -f1); \
             if [ \"$got\" != {hex} ]; then rm -rf \"$t\" \"$t.tar\"; echo \"digest mismatch on arrival: sha256 $got, sent {hex}\" >&2; exit 3; fi; \
             tar -xf \"$t.tar\" -C \"$t\"; rm -f \"$t.tar\"; echo {hex} > \"$t/.molt-digest\"; chmod 755 \"$t\"; \
             mv -T \"$t\" {d} 2>/dev/null || {{ rm -rf \"$t\"; test -f {d}/.molt-digest; }}",
            hex = archive.digest
        );
        let out = self.run(&script, Some(&archive.file))?;
        if !out.status.success() {
            return Err(self.err(format!("shipping {} to {}: {}", archive.source.display(), dest.display(), String::from_utf8_lossy(&out.stderr).trim())));
        }
        let present = String::from_utf8_lossy(&out.stdout).trim() == PRESENT;
        Ok((dest, !present))
    }
}

/// What the shipping script prints when the host has the bundle already.
const PRESENT: &str = "molt-bundle-present";

impl Transport {
    /// Remove the shipped bundles no container, upgrade journal or derived config on this host
    /// refers to any more and that no rollout touched since `since` (seconds since the epoch:
    /// the start of this rollout, so one running beside it keeps what it just shipped). Returns
    /// the names removed.
    pub fn prune_bundles(&self, since: u64) -> Result<Vec<String>, BundleError> {
        let root = quote(&self.host.root.display().to_string());
        let script = format!(
            "cd {root}/.bundles 2>/dev/null || exit 0; for d in sha256-*; do [ -d \"$d\" ] || continue; \
             [ \"$(stat -c %Y \"$d\")\" -lt {since} ] || continue; \
             if ! grep -qsF \"/.bundles/$d\" {root}/*/state.json {root}/.upgrade-*.json {root}/.derived/*/*/config.json; then \
             rm -rf \"$d\" && echo \"$d\"; fi; done"
        );
        let out = self.run(&script, None)?;
        if !out.status.success() {
            return Err(self.err(format!("pruning {}/.bundles: {}", self.host.root.display(), String::from_utf8_lossy(&out.stderr).trim())));
        }
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect())
    }
}

/// A bundle directory as a reproducible tar (sorted, no times or owners of the operator's) and
/// its sha256.
pub struct Archive {
    pub source: PathBuf,
    pub file: PathBuf,
    pub digest: String,
}

impl Archive {
    pub fn make(session: &Session, source: &Path, name: &str) -> Result<Archive, BundleError> {
        let err = |reason: String| BundleError::Ship { dir: source.into(), reason };
        let file = session.dir.join(format!("{name}.tar"));
        let out = Command::new("tar")
            .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "--exclude=./.molt-digest", "-C"])
            .arg(source)
            .args(["-cf"])
            .arg(&file)
            .arg(".")
            .output()
            .map_err(|e| err(format!("cannot run tar: {e}")))?;
        if !out.status.success() {
            return Err(err(format!("tar: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        let out = Command::new("sha256sum").arg(&file).output().map_err(|e| err(format!("cannot run sha256sum: {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let digest = text.split_whitespace().next().filter(|d| d.len() == 64 && out.status.success()).ok_or_else(|| err(format!("sha256sum: {text}")))?;
        Ok(Archive { source: source.into(), file, digest: digest.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_a_remote_shell() {
        assert_eq!(quote("/run/molt"), "/run/molt");
        assert_eq!(quote("exec:test -s /data/x"), "'exec:test -s /data/x'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
        let out = Command::new("sh").args(["-c", &format!("printf %s {}", quote("a b'c$HOME"))]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a b'c$HOME");
    }

    #[test]
    fn ssh_arguments_carry_the_hosts_settings() {
        let session = Session::new().unwrap();
        let host: Host = serde_json::from_str(r#"{"ssh": "db.example", "user": "ops", "port": 2222, "identity": "/k", "ssh_config": "/c"}"#).unwrap();
        let t = Transport::new(&session, "db", &host);
        let args = t.ssh.join(" ");
        for want in ["-F /c", "BatchMode=yes", "StrictHostKeyChecking=yes", "-l ops", "-p 2222", "-i /k"] {
            assert!(args.contains(want), "{want} missing in {args}");
        }
        assert!(args.ends_with("db.example"));
        assert!(args.contains(&format!("ControlPath={}/%C", session.dir.display())));
        assert!(args.contains("ConnectTimeout=5 ") && args.contains("ServerAliveInterval=5 "), "the default: {args}");
        let slow: Host = serde_json::from_str(r#"{"ssh": "db.example", "connect_timeout": "89.5s"}"#).unwrap();
        let args = Transport::new(&session, "db", &slow).ssh.join(" ");
        assert!(args.contains("ConnectTimeout=90 ") && args.contains("ServerAliveInterval=90 "), "{args}");
    }

    #[test]
    fn an_ssh_host_runs_at_most_its_sessions_at_once() {
        let session = Session::new().unwrap();
        let host: Host = serde_json::from_str(r#"{"ssh": "db.example"}"#).unwrap();
        let t = Transport::new(&session, "db", &host);
        let held: Vec<_> = (0..SESSIONS_PER_HOST).map(|_| t.slot()).collect();
        let got = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _slot = t.slot();
                got.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert!(!got.load(std::sync::atomic::Ordering::SeqCst), "a session past the limit waits");
            drop(held);
        });
        assert!(got.load(std::sync::atomic::Ordering::SeqCst), "and runs once one ends");
        assert_eq!(*t.open.lock().unwrap(), 0, "every slot given back");
        let here: Host = serde_json::from_str(r#"{"local": true}"#).unwrap();
        assert!(Transport::new(&session, "here", &here).slot().is_none(), "no limit on the local host");
    }

    #[test]
    fn an_archive_of_the_same_directory_has_the_same_digest() {
        let session = Session::new().unwrap();
        let src = session.dir.join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("config.json"), "{}").unwrap();
        let a = Archive::make(&session, &src, "a").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(src.join("config.json"), "{}").unwrap();
        let b = Archive::make(&session, &src, "b").unwrap();
        assert_eq!(a.digest, b.digest);
        // Shipping to a local host unpacks it under the root, once.
        let root = session.dir.join("root");
        let host: Host = serde_json::from_str(&format!(r#"{{"local": true, "root": "{}"}}"#, root.display())).unwrap();
        let t = Transport::new(&session, "here", &host);
        let (dir, sent) = t.ship(&a).unwrap();
        assert!(sent && dir.join("config.json").exists(), "{}", dir.display());
        let (again, sent) = t.ship(&b).unwrap();
        assert!(!sent && again == dir);
    }
}
