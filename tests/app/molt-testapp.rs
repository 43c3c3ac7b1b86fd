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
//! Socket activation: with LISTEN_FDS=N and LISTEN_PID = its pid it serves the sockets on fds 3 to
//! 3+N-1, TCP or unix, instead of opening one (systemd's protocol, which `io.molt.listen` speaks).
//! `molt-testapp ask PATH LINE` is a client: sends LINE to the unix socket at PATH, prints the reply.
//! SIGTERM/SIGINT stop it gracefully: no new connection is accepted (they stay queued for whoever
//! else holds the socket), each open connection finishes its request, then it exits.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
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

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A connection from either kind of listener.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    fn fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }

    /// Non-blocking: another process holding the same socket may have taken the connection.
    fn accept(&self) -> Option<Conn> {
        match self {
            Listener::Tcp(l) => {
                let _ = l.set_nonblocking(true);
                let (c, _) = l.accept().ok()?;
                c.set_nonblocking(false).ok().map(|_| Conn::Tcp(c))
            }
            Listener::Unix(l) => {
                let _ = l.set_nonblocking(true);
                let (c, _) = l.accept().ok()?;
                c.set_nonblocking(false).ok().map(|_| Conn::Unix(c))
            }
        }
    }
}

impl Conn {
    fn try_clone(&self) -> std::io::Result<Conn> {
        match self {
            Conn::Tcp(c) => c.try_clone().map(Conn::Tcp),
            Conn::Unix(c) => c.try_clone().map(Conn::Unix),
        }
    }

    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Conn::Tcp(c) => c.set_read_timeout(t),
            Conn::Unix(c) => c.set_read_timeout(t),
        }
    }
}

impl std::io::Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(c) => c.read(buf),
            Conn::Unix(c) => c.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(c) => c.write(buf),
            Conn::Unix(c) => c.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The sockets from the socket-activation protocol, if this process was given any: a unix
/// socket is told from a TCP one by its address family.
fn activated() -> Vec<Listener> {
    let n: i32 = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse().ok()).unwrap_or(0);
    let pid: i32 = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: getpid has no preconditions.
    if n < 1 || pid != unsafe { getpid() } {
        return vec![];
    }
    (3..3 + n)
        .map(|fd| {
            // SAFETY: fds 3 to 3+n-1 are ours by the protocol; each is owned once.
            let unix = unsafe { UnixListener::from_raw_fd(fd) };
            if unix.local_addr().is_ok() {
                return Listener::Unix(unix);
            }
            std::mem::forget(unix);
            // SAFETY: as above; the UnixListener wrapper was forgotten, not closed.
            Listener::Tcp(unsafe { TcpListener::from_raw_fd(fd) })
        })
        .collect()
}

/// Wait up to 50 ms for a connection to accept (so a stop request is seen promptly).
fn readable(fd: RawFd) -> bool {
    let mut p = PollFd { fd, events: 1, revents: 0 };
    // SAFETY: one valid pollfd.
    unsafe { poll(&mut p, 1, 50) > 0 }
}

/// The client mode: one request to the unix socket at `path`.
fn ask(path: &str, line: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    Ok(reply.trim().to_string())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string()
}

fn serve(stream: Conn, version: &str, data: &Arc<Mutex<std::fs::File>>, path: &str) -> std::io::Result<()> {
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

/// Accept until the stop request; each connection is served on a thread of its own.
fn accept_loop(listener: Listener, version: String, data: Arc<Mutex<std::fs::File>>, path: String) {
    let accept = std::env::var("APP_NO_ACCEPT").as_deref() != Ok("1");
    while !STOPPING.load(Ordering::SeqCst) {
        if !accept || !readable(listener.fd()) {
            std::thread::sleep(Duration::from_millis(if accept { 0 } else { 50 }));
            continue;
        }
        let Some(stream) = listener.accept() else { continue };
        let (data, version, path) = (data.clone(), version.clone(), path.clone());
        OPEN.fetch_add(1, Ordering::SeqCst);
        std::thread::spawn(move || {
            let _ = serve(stream, &version, &data, &path);
            OPEN.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "ask" {
        match ask(&args[2], &args[3]) {
            Ok(reply) => println!("{reply}"),
            Err(e) => {
                eprintln!("molt-testapp ask {}: {e}", args[2]);
                std::process::exit(1)
            }
        }
        return;
    }
    // SAFETY: installing a handler that only sets a flag. As pid 1 the default SIGTERM is ignored.
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
    let mut listeners = activated();
    let how = if listeners.is_empty() {
        let own = TcpListener::bind(format!("0.0.0.0:{port}")).unwrap_or_else(|e| {
            eprintln!("molt-testapp: listen on {port}: {e}");
            std::process::exit(1)
        });
        listeners.push(Listener::Tcp(own));
        "its own socket".to_string()
    } else {
        format!("the {} sockets from fd 3 (LISTEN_FDS)", listeners.len())
    };
    eprintln!("molt-testapp {version} serving {how} on {port}, data {path}");
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            let (data, version, path) = (data.clone(), version.clone(), path.clone());
            std::thread::spawn(move || accept_loop(l, version, data, path))
        })
        .collect();
    for l in loops {
        let _ = l.join();
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
