//! The one error type of the network module. Every message names what was being done, to which
//! interface, in which network namespace, and the errno the kernel gave.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A `io.molt.net.*` annotation has a value we cannot use.
    #[error("annotation {annotation}: invalid value {value:?}: {reason}")]
    Annotation {
        annotation: &'static str,
        value: String,
        reason: String,
    },

    /// Opening or entering a network namespace file failed.
    #[error("{op} network namespace {netns}: {source}")]
    Netns {
        op: &'static str,
        netns: String,
        #[source]
        source: io::Error,
    },

    /// A netlink request was refused by the kernel (or its reply could not be read).
    #[error("{op} interface {iface} in network namespace {netns}: {source}")]
    Netlink {
        op: &'static str,
        iface: String,
        netns: String,
        #[source]
        source: io::Error,
    },

    #[error("interface {iface} already exists in network namespace {netns}: {why}")]
    LinkExists {
        iface: String,
        netns: String,
        why: String,
    },

    #[error("interface {iface} not found in network namespace {netns}")]
    LinkMissing { iface: String, netns: String },

    #[error("interface {iface} in network namespace {netns} is a {found}, expected a {expected}")]
    WrongKind {
        iface: String,
        netns: String,
        found: String,
        expected: &'static str,
    },

    /// The helper thread that enters a namespace could not be started or died.
    #[error("helper thread for network namespace {netns}: {reason}")]
    Thread { netns: String, reason: String },
}

impl NetError {
    /// The errno behind this error, when the kernel gave one; callers use it to tell
    /// "already there" (EEXIST) or "gone" (ENODEV) from real failures.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetError::Netns { source, .. } | NetError::Netlink { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }

    pub(crate) fn netlink(
        op: &'static str,
        iface: impl Into<String>,
        netns: &str,
        source: io::Error,
    ) -> NetError {
        NetError::Netlink {
            op,
            iface: iface.into(),
            netns: netns.to_string(),
            source,
        }
    }
}
