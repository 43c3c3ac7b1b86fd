//! The helper programs molt runs for volumes (mount.nfs, iscsiadm, blkid, mkfs, modprobe):
//! their command lines, built as plain data so they are unit-tested, and a runner that never
//! waits longer than a timeout, because an unreachable server must give an error, not a hang.

use super::Source;
use std::fmt;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A program and its arguments, built before anything runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    pub program: String,
    pub args: Vec<String>,
}

impl CommandSpec {
    pub fn new(program: &str, args: &[&str]) -> Self {
        CommandSpec {
            program: program.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }
}

impl fmt::Display for CommandSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.program)?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

/// `mount.nfs SERVER:/EXPORT STAGING -n [-o OPTS]` (`mount.nfs4` for nfs4). mount.nfs rather than
/// mount(2): the kernel's nfs mount data needs the server's address (`addr=`) resolved and, for
/// v3, the mountd port negotiated, which is what mount.nfs does.
pub fn nfs_mount(source: &Source, fstype: &str, staging: &str, data_options: &[String]) -> CommandSpec {
    let program = if fstype == "nfs4" { "mount.nfs4" } else { "mount.nfs" };
    // -n: never write /etc/mtab (read-only in the lab VMs, a symlink to /proc elsewhere).
    let mut args = vec![source.to_string(), staging.to_string(), "-n".to_string()];
    if !data_options.is_empty() {
        args.push("-o".into());
        args.push(data_options.join(","));
    }
    CommandSpec {
        program: program.into(),
        args,
    }
}

/// SendTargets discovery: it also creates the node record that `--login` needs.
pub fn iscsi_discovery(portal: &str, port: u16) -> CommandSpec {
    let p = Source::iscsi_portal_arg(portal, port);
    CommandSpec::new("iscsiadm", &["-m", "discovery", "-t", "sendtargets", "-p", &p])
}

pub fn iscsi_login(portal: &str, port: u16, iqn: &str) -> CommandSpec {
    let p = Source::iscsi_portal_arg(portal, port);
    CommandSpec::new("iscsiadm", &["-m", "node", "-T", iqn, "-p", &p, "--login"])
}

pub fn iscsi_logout(portal: &str, port: u16, iqn: &str) -> CommandSpec {
    let p = Source::iscsi_portal_arg(portal, port);
    CommandSpec::new("iscsiadm", &["-m", "node", "-T", iqn, "-p", &p, "--logout"])
}

/// The stable name udev gives the LUN's disk (udev's path_id: `ip-ADDR:PORT-iscsi-IQN-lun-N`).
pub fn iscsi_by_path(portal: &str, port: u16, iqn: &str, lun: u32) -> String {
    format!("/dev/disk/by-path/ip-{}-iscsi-{iqn}-lun-{lun}", Source::iscsi_portal_arg(portal, port))
}

/// `blkid -p` probes the device itself, not blkid's cache, so a stale cache cannot make molt
/// format a device that holds data. Exit 2 means no signature at all.
pub fn blkid_probe(device: &str) -> CommandSpec {
    CommandSpec::new("blkid", &["-p", "-o", "value", "-s", "TYPE", device])
}

pub fn mkfs(fstype: &str, device: &str) -> CommandSpec {
    let program = format!("mkfs.{fstype}");
    // Quiet where the tool knows the flag; no -F/-f: blkid found nothing, nothing to force.
    let quiet: &[&str] = match fstype {
        "ext2" | "ext3" | "ext4" | "xfs" | "btrfs" => &["-q"],
        _ => &[],
    };
    let mut args: Vec<String> = quiet.iter().map(|s| s.to_string()).collect();
    args.push(device.to_string());
    CommandSpec { program, args }
}

pub fn modprobe(module: &str) -> CommandSpec {
    CommandSpec::new("modprobe", &[module])
}

/// How a helper ended.
#[derive(Debug)]
pub enum RunError {
    /// Could not start (not installed, usually).
    Spawn(std::io::Error),
    /// Still running at the deadline; it has been killed.
    Timeout(Duration),
    /// Exited non-zero or by a signal.
    Failed { code: Option<i32>, output: String },
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Spawn(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write!(f, "program not found: {e}")
            }
            RunError::Spawn(e) => write!(f, "cannot start: {e}"),
            RunError::Timeout(d) => write!(f, "still running after {}s, killed", d.as_secs()),
            RunError::Failed { code: Some(c), output } => write!(f, "exit status {c}: {}", output.trim()),
            RunError::Failed { code: None, output } => write!(f, "killed by a signal: {}", output.trim()),
        }
    }
}

/// Runs `cmd` with stdin closed, returns its stdout, kills it at `timeout`.
pub fn run(cmd: &CommandSpec, timeout: Duration) -> Result<String, RunError> {
    let mut child = Command::new(&cmd.program)
        .args(&cmd.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Helpers live in sbin, which a non-login root environment may lack.
        .env("PATH", helper_path())
        .spawn()
        .map_err(RunError::Spawn)?;
    // Drain the pipes on threads so a chatty helper cannot block on a full pipe while we poll.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RunError::Timeout(timeout));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(RunError::Spawn(e)),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        Err(RunError::Failed {
            code: status.code(),
            output: if stderr.trim().is_empty() { stdout } else { stderr },
        })
    }
}

fn helper_path() -> String {
    let base = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    match std::env::var("PATH") {
        Ok(p) if !p.is_empty() => format!("{p}:{base}"),
        _ => base.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfs_commands() {
        let src = Source::Nfs { server: "store".into(), export: "/srv/a".into() };
        let c = nfs_mount(&src, "nfs", "/run/molt/volumes/k/mnt", &["vers=3".into(), "nolock".into()]);
        assert_eq!(c.to_string(), "mount.nfs store:/srv/a /run/molt/volumes/k/mnt -n -o vers=3,nolock");
        let c = nfs_mount(&src, "nfs4", "/m", &[]);
        assert_eq!(c.to_string(), "mount.nfs4 store:/srv/a /m -n");
        let v6 = Source::Nfs { server: "fd00::1".into(), export: "/".into() };
        assert_eq!(nfs_mount(&v6, "nfs", "/m", &[]).args[0], "[fd00::1]:/");
    }

    #[test]
    fn iscsi_commands() {
        let iqn = "iqn.2003-01.org.example:disk1";
        assert_eq!(
            iscsi_discovery("10.0.0.5", 3260).to_string(),
            "iscsiadm -m discovery -t sendtargets -p 10.0.0.5:3260"
        );
        assert_eq!(
            iscsi_login("10.0.0.5", 3260, iqn).to_string(),
            "iscsiadm -m node -T iqn.2003-01.org.example:disk1 -p 10.0.0.5:3260 --login"
        );
        assert_eq!(
            iscsi_logout("fd00::5", 3261, iqn).to_string(),
            "iscsiadm -m node -T iqn.2003-01.org.example:disk1 -p [fd00::5]:3261 --logout"
        );
        assert_eq!(
            iscsi_by_path("10.0.0.5", 3260, iqn, 1),
            "/dev/disk/by-path/ip-10.0.0.5:3260-iscsi-iqn.2003-01.org.example:disk1-lun-1"
        );
    }

    #[test]
    fn disk_commands() {
        assert_eq!(blkid_probe("/dev/loop0").to_string(), "blkid -p -o value -s TYPE /dev/loop0");
        assert_eq!(mkfs("ext4", "/dev/sda").to_string(), "mkfs.ext4 -q /dev/sda");
        assert_eq!(mkfs("vfat", "/dev/sda").to_string(), "mkfs.vfat /dev/sda");
    }

    #[test]
    fn runner_reports_status_output_and_timeout() {
        assert_eq!(run(&CommandSpec::new("echo", &["hi"]), Duration::from_secs(5)).unwrap(), "hi\n");
        let e = run(&CommandSpec::new("sh", &["-c", "echo boom >&2; exit 3"]), Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "exit status 3: boom");
        let e = run(&CommandSpec::new("sleep", &["5"]), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, RunError::Timeout(_)));
        let e = run(&CommandSpec::new("molt-no-such-helper", &[]), Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
    }
}
