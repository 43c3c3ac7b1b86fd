//! The runtime's own log: `--log FILE` with `--log-format text|json`, written the way runc writes it
//! because containerd and podman parse it (one JSON object a line: `level`, `msg`, `time`).
//! Errors also go to stderr as plain text, since podman falls back to it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

struct Sink {
    path: Option<PathBuf>,
    format: Format,
    debug: bool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Set once from the global flags; later calls are ignored.
pub fn init(path: Option<PathBuf>, format: Format, debug: bool) {
    let _ = SINK.set(Sink { path, format, debug });
}

pub fn debug(msg: &str) {
    if SINK.get().is_some_and(|s| s.debug) {
        write("debug", msg);
    }
}

/// Something asked for that molt does not do. Like runc's logrus: into `--log` when given (under
/// containerd molt's stderr is the container's own log), else onto stderr, never lost.
pub fn warn(msg: &str) {
    if SINK.get().is_some_and(|s| s.path.is_some()) {
        write("warning", msg);
    } else {
        let _ = writeln!(std::io::stderr(), "molt: warning: {msg}");
    }
}

/// An error ends the command: the log file gets the record and stderr the plain message.
pub fn error(msg: &str) {
    write("error", msg);
    // A closed stderr (podman closes it for `state`) must not turn into a panic.
    let _ = writeln!(std::io::stderr(), "molt: {msg}");
}

fn write(level: &str, msg: &str) {
    let Some(sink) = SINK.get() else { return };
    let Some(path) = &sink.path else { return };
    let line = match sink.format {
        Format::Json => {
            let record = serde_json::json!({"level": level, "msg": msg, "time": now_rfc3339()});
            format!("{record}\n")
        }
        Format::Text => format!("time=\"{}\" level={} msg={:?}\n", now_rfc3339(), level, msg),
    };
    // O_APPEND: the file is shared by every call an engine makes for the container.
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(line.as_bytes());
    }
}

/// RFC 3339 with nanoseconds in UTC, as Go's time.RFC3339Nano prints it.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_nanos())
}

pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let (y, mo, d, h, mi, s) = civil_from_unix(secs);
    if nanos == 0 {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        let frac = format!("{nanos:09}");
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{}Z", frac.trim_end_matches('0'))
    }
}

/// Days-from-civil inverse (Howard Hinnant's algorithm): no libc time zone state involved.
fn civil_from_unix(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, (rem / 3600) as u32, ((rem % 3600) / 60) as u32, (rem % 60) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_764_091_730, 0), "2025-11-25T17:28:50Z");
        assert_eq!(rfc3339(951_782_400, 500_000_000), "2000-02-29T00:00:00.5Z");
        assert_eq!(rfc3339(-1, 0), "1969-12-31T23:59:59Z");
    }
}
