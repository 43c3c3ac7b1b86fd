//! molt's test application: serves its version and hostname over TCP and appends acknowledged,
//! fsynced records to a file on the container's volume. One std-only file, built by
//! scripts/build-rootfs with rustc and linked statically, so it runs in the busybox rootfs.
//!
//! Protocol, one line per request:  VERSION -> "version=V hostname=H"
//!                                   APPEND TEXT -> "OK N" once TEXT is on disk (fsync)
//!                                   COUNT -> "N" (records in the file)
//! Environment: APP_VERSION (required), APP_PORT (8080), APP_DATA (/data/records.log),
//! APP_START_DELAY_MS (0: simulates a slow start), APP_FAIL=1 (exit at once: a broken release).

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

extern "C" {
    fn signal(sig: i32, handler: usize) -> usize;
    fn _exit(code: i32) -> !;
}

extern "C" fn on_term(_: i32) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { _exit(0) }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string()
}

fn serve(stream: TcpStream, version: &str, data: &Arc<Mutex<std::fs::File>>, path: &str) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    for line in BufReader::new(stream).lines() {
        let line = line?;
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
    }
    Ok(())
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
    let listener = TcpListener::bind(format!("0.0.0.0:{port}")).unwrap_or_else(|e| {
        eprintln!("molt-testapp: listen on {port}: {e}");
        std::process::exit(1)
    });
    eprintln!("molt-testapp {version} listening on {port}, data {path}");
    for stream in listener.incoming().flatten() {
        let (data, version, path) = (data.clone(), version.clone(), path.clone());
        std::thread::spawn(move || {
            let _ = serve(stream, &version, &data, &path);
        });
    }
}
