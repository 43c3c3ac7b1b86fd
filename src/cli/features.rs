//! `molt features`: runtime-spec features JSON listing only what molt really does.

use std::io::Write;

use super::CmdResult;

pub fn run() -> CmdResult {
    let caps: Vec<String> = {
        let mut v: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
        v.sort();
        v
    };
    let doc = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": [
            "async", "atime", "bind", "dev", "diratime", "dirsync", "exec", "lazytime", "mand", "noatime",
            "nodev", "nodiratime", "noexec", "nolazytime", "nomand", "norelatime", "nostrictatime", "nosuid",
            "private", "rbind", "relatime", "remount", "ro", "rprivate", "rshared", "rslave", "runbindable",
            "rw", "shared", "slave", "strictatime", "suid", "sync", "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {"enabled": false},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}},
            "netDevices": {"enabled": true}
        },
        "annotations": {
            "io.molt.upgrade": "in-place upgrade keeping volumes and network identity",
            "io.molt.net.bridge": "bridge for a veth set up by molt",
            "io.molt.net.address": "CIDR address of the container's eth0",
            "io.molt.net.gateway": "default gateway of the container"
        }
    });
    std::io::stdout().write_all(format!("{}\n", serde_json::to_string_pretty(&doc)?).as_bytes())?;
    Ok(0)
}
