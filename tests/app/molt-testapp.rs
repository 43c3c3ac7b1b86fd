//! molt's test application: serves its version and hostname over TCP and appends acknowledged,
//! fsynced records to a file on the container's volume. One std-only file, built by
//! scripts/build-rootfs with rustc and linked statically, so it runs in the busybox rootfs.
//!
//! Protocol, one line per request:  VERSION -> "version=V hostname=H"
//!                                   APPEND TEXT -> "OK N" once TEXT is on disk (fsync)
//!                                   COUNT -> "N" (records in the file)
//! Environment: APP_VERSION (required), APP_PORT (8080), APP_DATA (/data/records.log),
//! APP_START_DELAY_MS (0: simulates a slow start), APP_FAIL=1 (exit at once: a broken release),
//! APP_NO_ACCEPT=1 (listen but never accept: a hung release), APP_STOP_DELAY_MS (0: simulates a slow
//! shutdown, the time from the stop signal to the exit).
//! Socket activation: with LISTEN_FDS=1 and LISTEN_PID = its pid it serves the socket on fd 3
//! instead of opening one (systemd's protocol, which `io.molt.listen` speaks).
//! SIGTERM/SIGINT stop it gracefully: no new connection is accepted (they stay queued for whoever
//! else holds the socket), each open connection finishes its request, then it exits.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

extern "C" {
    fn signal(sig: i32, handler: usize) -> usize;
    fn poll(fds: *mut PollFd, n: u64, timeout_ms: i32) -> i32;
    fn getpid() -> i32;
}

#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

static STOPPING: AtomicBool = AtomicBool::new(false);
static OPEN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_term(_: i32) {
    STOPPING.store(true, Ordering::SeqCst);
}

/// The socket from the socket-activation protocol, if this process was given one.
fn activated() -> Option<TcpListener> {
    let n: i32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    let pid: i32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    // SAFETY: getpid has no preconditions.
    if n < 1 || pid != unsafe { getpid() } {
        return None;
    }
    // SAFETY: fd 3 is ours by the protocol.
    Some(unsafe { TcpListener::from_raw_fd(3) })
}

/// Wait up to 50 ms for a connection to accept (so a stop request is seen promptly).
fn readable(l: &TcpListener) -> bool {
    let mut p = PollFd { fd: l.as_raw_fd(), events: 1, revents: 0 };
    // SAFETY: one valid pollfd.
    unsafe { poll(&mut p, 1, 50) > 0 }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string()
}

fn serve(stream: TcpStream, version: &str, data: &Arc<Mutex<std::fs::File>>, path: &str) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    // A short read timeout so a stop request ends an idle connection: one that has been served
    // (an idle keep-alive) at once, one accepted but not yet heard from only after a grace, as
    // servers' graceful stops do: its client connected before the stop and is about to ask
    // (on a loaded machine its request can come well after the accept).
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    let accepted = std::time::Instant::now();
    let mut served = 0usize;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        // A timed-out read keeps what it read so far in `line`.
        match reader.read_line(&mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                let quiet = served > 0 || accepted.elapsed() > Duration::from_secs(2);
                if STOPPING.load(Ordering::SeqCst) && line.is_empty() && quiet {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        }
        let request = std::mem::take(&mut line);
        let line = request.trim_end_matches(['\r', '\n']).to_string();
        let reply = if line == "VERSION" {
            format!("version={version} hostname={}", hostname())
        } else if let Some(text) = line.strip_prefix("APPEND ") {
            let f = data.lock().map_err(|_| std::io::Error::other("lock"))?;
            let mut f = &*f;
            f.write_all(format!("{text}\n").as_bytes())?;
            f.sync_all()?;
            let n = std::fs::read_to_string(path)?.lines().count();
            format!("OK {n}")
        } else if line == "COUNT" {
            std::fs::read_to_string(path).map(|s| s.lines().count()).unwrap_or(0).to_string()
        } else {
            format!("ERR unknown request {line:?}")
        };
        out.write_all(format!("{reply}\n").as_bytes())?;
        served += 1;
    }
}

fn main() {
    // SAFETY: installing a handler that only calls _exit. As pid 1 the default SIGTERM is ignored.
    unsafe {
        signal(15, on_term as *const () as usize);
        signal(2, on_term as *const () as usize);
    }
    let version = std::env::var("APP_VERSION").unwrap_or_else(|_| "unknown".into());
    if std::env::var("APP_FAIL").as_deref() == Ok("1") {
        eprintln!("molt-testapp {version}: APP_FAIL=1, exiting");
        std::process::exit(3);
    }
    let port = std::env::var("APP_PORT").unwrap_or_else(|_| "8080".into());
    let path = std::env::var("APP_DATA").unwrap_or_else(|_| "/data/records.log".into());
    if let Ok(ms) = std::env::var("APP_START_DELAY_MS").unwrap_or_default().parse::<u64>() {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    let file = OpenOptions::new().create(true).append(true).open(&path).unwrap_or_else(|e| {
        eprintln!("molt-testapp: open {path}: {e}");
        std::process::exit(1)
    });
    let data = Arc::new(Mutex::new(file));
    let (listener, how) = match activated() {
        Some(l) => (l, "the socket on fd 3 (LISTEN_FDS)"),
        None => (
            TcpListener::bind(format!("0.0.0.0:{port}")).unwrap_or_else(|e| {
                eprintln!("molt-testapp: listen on {port}: {e}");
                std::process::exit(1)
            }),
            "its own socket",
        ),
    };
    eprintln!("molt-testapp {version} serving {how} on {port}, data {path}");
    let accept = std::env::var("APP_NO_ACCEPT").as_deref() != Ok("1");
    while !STOPPING.load(Ordering::SeqCst) {
        if !accept || !readable(&listener) {
            std::thread::sleep(Duration::from_millis(if accept { 0 } else { 50 }));
            continue;
        }
        // Non-blocking: another process holding the same socket may have taken the connection.
        let _ = listener.set_nonblocking(true);
        let Ok((stream, _)) = listener.accept() else { continue };
        let _ = stream.set_nonblocking(false);
        let (data, version, path) = (data.clone(), version.clone(), path.clone());
        OPEN.fetch_add(1, Ordering::SeqCst);
        std::thread::spawn(move || {
            let _ = serve(stream, &version, &data, &path);
            OPEN.fetch_sub(1, Ordering::SeqCst);
        });
    }
    if let Ok(ms) = std::env::var("APP_STOP_DELAY_MS").unwrap_or_default().parse::<u64>() {
        std::thread::sleep(Duration::from_millis(ms));
    }
    // Graceful stop: the open connections finish (at most 5 s), then exit.
    for _ in 0..500 {
        if OPEN.load(Ordering::SeqCst) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::process::exit(0);
}
