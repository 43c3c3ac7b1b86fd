//! Linux namespaces seen from outside the container: the /proc file that names one, keeping one
//! alive with a bind mount (`pin`), and running code inside another process's (`enter`). The
//! lifecycle, exec and the upgrade share them.

mod enter;
mod pin;

use std::path::{Path, PathBuf};

pub use enter::run_in;
pub use pin::{pin, unpin};

/// `/proc/PID/ns/NAME`: the file that names (and, opened, holds) a namespace of `pid`.
pub fn path(pid: i32, name: &str) -> PathBuf {
    Path::new("/proc").join(pid.to_string()).join("ns").join(name)
}
