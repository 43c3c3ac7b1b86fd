//! `molt features`: runtime-spec features JSON listing only what molt really does.

use std::io::Write;

use super::CmdResult;
use crate::spec::process_attrs as attrs;

pub fn run() -> CmdResult {
    let caps: Vec<String> = {
        let mut v: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
        v.sort();
        v
    };
    let doc = serde_json::json!({
        "ociVersionMin": crate::spec::OCI_VERSION_MIN,
        "ociVersionMax": crate::spec::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": crate::mount_options::known_options(),
        // Every annotation molt acts on (network identity, listening sockets, upgrade versions
        // and constraints) is under this prefix.
        "potentiallyUnsafeConfigAnnotations": ["io.molt."],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
                ],
                // What the linked libseccomp builds filters for, and the flags this kernel has.
                "archs": crate::seccomp_support::known_archs(),
                "knownFlags": [
                    "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"
                ],
                "supportedFlags": crate::seccomp_support::supported_flags()
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": true}},
            "netDevices": {"enabled": true},
            "memoryPolicy": {"modes": attrs::MEMORY_MODES, "flags": attrs::MEMORY_FLAGS}
        },
        "annotations": {
            "io.molt.upgrade": "in-place upgrade keeping volumes and network identity",
            "io.molt.net.bridge": "bridge for a veth set up by molt",
            "io.molt.net.address": "CIDR address of the container's eth0",
            "io.molt.net.gateway": "default gateway of the container",
            // The features document has no field for these runtime-spec 1.3 process attributes;
            // each is listed once tests/inside.rs proves it.
            "io.molt.features.process.ioPriority": "IOPRIO_CLASS_RT, IOPRIO_CLASS_BE, IOPRIO_CLASS_IDLE",
            "io.molt.features.process.scheduler": "SCHED_OTHER, SCHED_BATCH, SCHED_IDLE, SCHED_FIFO, SCHED_RR, SCHED_DEADLINE",
            "io.molt.features.process.execCPUAffinity": "initial, final",
            "io.molt.features.linux.personality": "LINUX, LINUX32"
        }
    });
    std::io::stdout().write_all(format!("{}\n", serde_json::to_string_pretty(&doc)?).as_bytes())?;
    Ok(0)
}
