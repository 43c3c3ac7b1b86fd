//! The runtime's own log, written the way runc's logrus writes it because containerd and podman
//! parse it: one record a line, `time="..." level=error msg="..."` or with `--log-format json`
//! `{"level":"error","msg":"...","time":"..."}`, into `--log FILE` when given, else onto stderr.
//! An error written to a file is also printed plainly on stderr, since podman falls back to it.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    /// `--log-format`: runc takes text (or nothing) and json, and refuses anything else.
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "" | "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => Err(format!("invalid log-format: {other}")),
        }
    }
}

struct Sink {
    path: Option<PathBuf>,
    format: Format,
    debug: bool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Set once from the global flags; later calls are ignored. Before it, records go to stderr as text.
pub fn init(path: Option<PathBuf>, format: Format, debug: bool) {
    let _ = SINK.set(Sink { path, format, debug });
}

pub fn debug(msg: &str) {
    if SINK.get().is_some_and(|s| s.debug) {
        write("debug", msg);
    }
}

/// Something asked for that molt does not do, or did differently.
pub fn warn(msg: &str) {
    write("warning", msg);
}

/// An error ends the command: a record in the log, and on stderr the plain message when the log
/// is a file (runc's fatal()).
pub fn error(msg: &str) {
    write("error", msg);
    if SINK.get().is_some_and(|s| s.path.is_some()) {
        // A closed stderr (podman closes it for `state`) must not turn into a panic.
        let _ = writeln!(std::io::stderr(), "{msg}");
    }
}

/// One record as logrus formats it, with a newline.
pub fn record(format: Format, level: &str, msg: &str, time: &str) -> String {
    match format {
        Format::Json => format!("{}\n", serde_json::json!({"level": level, "msg": msg, "time": time})),
        Format::Text => format!("time={} level={level} msg={}\n", logfmt_value(time), logfmt_value(msg)),
    }
}

/// logrus's TextFormatter: a value made only of safe characters stands bare, any other is quoted
/// the way Go's strconv.Quote does.
fn logfmt_value(v: &str) -> String {
    let bare = !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || "-._/@^+".contains(c));
    if bare {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn write(level: &str, msg: &str) {
    let (path, format) = match SINK.get() {
        Some(s) => (s.path.as_ref(), s.format),
        None => (None, Format::Text),
    };
    let line = record(format, level, msg, &now_rfc3339_seconds());
    match path {
        // O_APPEND: the file is shared by every call an engine makes for the container.
        Some(path) => {
            if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
                let _ = f.write_all(line.as_bytes());
            }
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

/// What another molt (or runc) printed on stderr, for a person: the msg of each log record (text
/// or JSON), other lines as they are.
pub fn messages_of(stderr: &str) -> String {
    let msg_of = |line: &str| -> Option<String> {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            return v["msg"].as_str().map(String::from);
        }
        let (_, quoted) = line.strip_prefix("time=")?.split_once(" msg=")?;
        let Some(inner) = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')) else { return Some(quoted.to_string()) };
        // Undo strconv.Quote's escapes (\n, \t, \", \\; \xNN kept as written).
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match (c, c == '\\') {
                (_, true) => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some('x') => out.push_str("\\x"),
                    Some(o) => out.push(o),
                    None => out.push('\\'),
                },
                (c, false) => out.push(c),
            }
        }
        Some(out)
    };
    stderr.lines().map(|l| msg_of(l).unwrap_or_else(|| l.to_string())).collect::<Vec<_>>().join("\n").trim().to_string()
}

/// The current time as logrus stamps its records: RFC 3339 to the second.
pub fn now_rfc3339_seconds() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    rfc3339(now.as_secs() as i64, 0)
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

    #[test]
    fn records_have_logrus_shape() {
        let t = "2026-12-01T19:28:35Z";
        assert_eq!(record(Format::Text, "error", "container x does not exist", t), "time=\"2026-12-01T19:28:35Z\" level=error msg=\"container x does not exist\"\n");
        assert_eq!(record(Format::Text, "warning", "plain", t), "time=\"2026-12-01T19:28:35Z\" level=warning msg=plain\n");
        assert_eq!(record(Format::Text, "error", "a \"b\"\n\\c\u{1}", t), "time=\"2026-12-01T19:28:35Z\" level=error msg=\"a \\\"b\\\"\\n\\\\c\\x01\"\n");
        assert_eq!(record(Format::Json, "error", "x \"y\"", t), "{\"level\":\"error\",\"msg\":\"x \\\"y\\\"\",\"time\":\"2026-12-01T19:28:35Z\"}\n");
        assert_eq!(Format::parse("xml"), Err("invalid log-format: xml".to_string()));
        for (format, msg) in [(Format::Text, "a \"b\"\nc\\d"), (Format::Json, "x \"y\""), (Format::Text, "bare")] {
            assert_eq!(messages_of(&record(format, "error", msg, t)), msg);
        }
        assert_eq!(messages_of("plain text\n"), "plain text");
    }
}
