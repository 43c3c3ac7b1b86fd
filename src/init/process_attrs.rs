//! The system calls the init makes just before execve for the process attributes runtime-spec
//! 1.3 adds over runc 1.1 (`linux.personality`, `process.ioPriority`, `process.scheduler`,
//! `process.execCPUAffinity`, `linux.memoryPolicy`); their validation is `crate::spec::process_attrs`.

use oci_spec::runtime::{
    ExecCPUAffinity, IOPriorityClass, LinuxMemoryPolicy, LinuxPersonalityDomain, LinuxSchedulerPolicy,
    MemoryPolicyFlagType, MemoryPolicyModeType, Process, Scheduler, Spec,
};

pub use crate::spec::process_attrs::AttrError;
use crate::spec::process_attrs::{invalid, parse_list, MAX_CPUS, MAX_NODES, SCHED_FLAGS};

fn last_errno(field: &'static str, call: &'static str) -> AttrError {
    AttrError::Kernel { field, call, errno: std::io::Error::last_os_error() }
}

// --- the system calls ---------------------------------------------------------------------------

/// linux.personality: the execution domain (LINUX32 makes uname report i686 and the like).
pub fn set_personality(spec: &Spec) -> Result<(), AttrError> {
    let Some(p) = spec.linux().as_ref().and_then(|l| l.personality().clone()) else { return Ok(()) };
    let persona = match p.domain() {
        LinuxPersonalityDomain::PerLinux => 0x0000,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    };
    // SAFETY: personality(2) takes a plain integer.
    if unsafe { libc::personality(persona) } < 0 {
        return Err(last_errno("linux.personality", "personality"));
    }
    Ok(())
}

const IOPRIO_WHO_PROCESS: libc::c_int = 1;
const IOPRIO_CLASS_SHIFT: u32 = 13;

pub fn ioprio_value(class: IOPriorityClass, priority: i64) -> libc::c_int {
    let class = match class {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    (class << IOPRIO_CLASS_SHIFT) | (priority as libc::c_int & 0x1fff)
}

/// process.ioPriority. Before the capabilities go: IOPRIO_CLASS_RT needs CAP_SYS_ADMIN.
pub fn set_io_priority(p: &Process) -> Result<(), AttrError> {
    let Some(io) = p.io_priority() else { return Ok(()) };
    // SAFETY: ioprio_set(2) on this process with a plain integer.
    if unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, ioprio_value(io.class(), io.priority())) } < 0 {
        return Err(last_errno("process.ioPriority", "ioprio_set"));
    }
    Ok(())
}

/// struct sched_attr of sched_setattr(2), SCHED_ATTR_SIZE_VER1.
#[repr(C)]
#[derive(Debug, Default, PartialEq)]
pub struct SchedAttr {
    pub size: u32,
    pub policy: u32,
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
    pub util_min: u32,
    pub util_max: u32,
}

pub fn sched_attr(s: &Scheduler) -> SchedAttr {
    let policy = match s.policy() {
        LinuxSchedulerPolicy::SchedOther => 0,
        LinuxSchedulerPolicy::SchedFifo => 1,
        LinuxSchedulerPolicy::SchedRr => 2,
        LinuxSchedulerPolicy::SchedBatch => 3,
        // Refused at create (check_process); the kernel would say EINVAL.
        LinuxSchedulerPolicy::SchedIso => 4,
        LinuxSchedulerPolicy::SchedIdle => 5,
        LinuxSchedulerPolicy::SchedDeadline => 6,
    };
    let flags = s
        .flags()
        .iter()
        .flatten()
        .filter_map(|f| {
            let name = serde_json::to_value(f).ok()?;
            SCHED_FLAGS.iter().find(|(_, oci, _)| Some(*oci) == name.as_str()).map(|(_, _, bit)| *bit)
        })
        .fold(0, |a, b| a | b);
    SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy,
        flags,
        nice: s.nice().unwrap_or(0),
        priority: s.priority().unwrap_or(0).max(0) as u32,
        runtime: s.runtime().unwrap_or(0),
        deadline: s.deadline().unwrap_or(0),
        period: s.period().unwrap_or(0),
        // The spec has no clamp values: the clamp flags reset them to none.
        util_min: 0,
        util_max: 1024,
    }
}

/// process.scheduler. Before the capabilities go: the real-time policies and a negative nice
/// need CAP_SYS_NICE.
pub fn set_scheduler(p: &Process) -> Result<(), AttrError> {
    let Some(s) = p.scheduler() else { return Ok(()) };
    let attr = sched_attr(s);
    // SAFETY: sched_setattr(2) on this thread, reading a sched_attr whose size field is right.
    if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) } < 0 {
        return Err(last_errno("process.scheduler", "sched_setattr"));
    }
    Ok(())
}

fn cpu_set(list: &str) -> Result<nix::sched::CpuSet, AttrError> {
    let mut set = nix::sched::CpuSet::new();
    let field = "process.execCPUAffinity";
    for cpu in parse_list(list, MAX_CPUS).map_err(|e| invalid(field, e))? {
        set.set(cpu).map_err(|e| invalid(field, format!("CPU {cpu}: {}", e.desc())))?;
    }
    Ok(set)
}

fn set_affinity(pid: i32, list: Option<&String>, field: &'static str) -> Result<(), AttrError> {
    let Some(list) = list.filter(|l| !l.is_empty()) else { return Ok(()) };
    let set = cpu_set(list)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(pid), &set)
        .map_err(|e| AttrError::Kernel { field, call: "sched_setaffinity", errno: std::io::Error::from(e) })
}

/// process.execCPUAffinity.initial, by the runtime on the new process before it joins the
/// container's cgroup. Not for the container's init: the spec makes the field exec's alone.
pub fn set_initial_affinity(pid: i32, a: Option<&ExecCPUAffinity>) -> Result<(), AttrError> {
    set_affinity(pid, a.and_then(|a| a.initial().as_ref()), "process.execCPUAffinity.initial")
}

/// process.execCPUAffinity.final, by the process itself once it is in the cgroup (joining a
/// cpuset resets the affinity to the cpuset's CPUs), just before execve.
pub fn set_final_affinity(a: Option<&ExecCPUAffinity>) -> Result<(), AttrError> {
    set_affinity(0, a.and_then(|a| a.cpu_affinity_final().as_ref()), "process.execCPUAffinity.final")
}

pub fn mempolicy_mode(m: &LinuxMemoryPolicy) -> libc::c_int {
    let mode = match m.mode() {
        MemoryPolicyModeType::MpolDefault => 0,
        MemoryPolicyModeType::MpolPreferred => 1,
        MemoryPolicyModeType::MpolBind => 2,
        MemoryPolicyModeType::MpolInterleave => 3,
        MemoryPolicyModeType::MpolLocal => 4,
        MemoryPolicyModeType::MpolPreferredMany => 5,
        MemoryPolicyModeType::MpolWeightedInterleave => 6,
    };
    let flags = m
        .flags()
        .iter()
        .flatten()
        .map(|f| match f {
            MemoryPolicyFlagType::MpolFNumaBalancing => 1 << 13,
            MemoryPolicyFlagType::MpolFRelativeNodes => 1 << 14,
            MemoryPolicyFlagType::MpolFStaticNodes => 1 << 15,
        })
        .fold(0, |a, b| a | b);
    mode | flags
}

/// linux.memoryPolicy: the task's NUMA policy, which execve keeps.
pub fn set_memory_policy(spec: &Spec) -> Result<(), AttrError> {
    let Some(m) = spec.linux().as_ref().and_then(|l| l.memory_policy().clone()) else { return Ok(()) };
    let mut mask = [0u64; MAX_NODES / 64];
    let nodes = m.nodes().as_deref().filter(|n| !n.is_empty());
    if let Some(list) = nodes {
        for n in parse_list(list, MAX_NODES).map_err(|e| invalid("linux.memoryPolicy.nodes", e))? {
            mask[n / 64] |= 1 << (n % 64);
        }
    }
    let (ptr, maxnode) = match nodes {
        // set_mempolicy(2) reads maxnode - 1 bits (libnuma passes the mask's size + 1).
        Some(_) => (mask.as_ptr(), MAX_NODES as libc::c_ulong + 1),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: set_mempolicy(2) reads at most maxnode - 1 bits of `mask`, which lives until it returns.
    if unsafe { libc::syscall(libc::SYS_set_mempolicy, mempolicy_mode(&m), ptr, maxnode) } < 0 {
        return Err(last_errno("linux.memoryPolicy", "set_mempolicy"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::process_attrs::{check_config, translate_sched_flags};
    use serde_json::json;

    #[test]
    fn good_values_pass_and_parse_after_translation() {
        let mut config = json!({
            "process": {
                "ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 0},
                "scheduler": {"policy": "SCHED_BATCH", "nice": 5, "flags": ["SCHED_FLAG_RESET_ON_FORK", "SCHED_FLAG_DL_OVERRUN"]},
                "execCPUAffinity": {"initial": "0", "final": "0-1"},
                "cwd": "/", "user": {"uid": 0, "gid": 0}, "args": ["true"]
            },
            "linux": {"personality": {"domain": "LINUX32"}, "memoryPolicy": {"mode": "MPOL_INTERLEAVE", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]}}
        });
        check_config(&config).unwrap();
        translate_sched_flags(&mut config["process"]);
        let p: Process = serde_json::from_value(config["process"].clone()).unwrap();
        let attr = sched_attr(p.scheduler().as_ref().unwrap());
        assert_eq!((attr.policy, attr.flags, attr.nice, attr.size), (3, 0x05, 5, 56));
        let io = p.io_priority().unwrap();
        assert_eq!(ioprio_value(io.class(), io.priority()), 3 << 13);
        let linux: oci_spec::runtime::Linux = serde_json::from_value(config["linux"].clone()).unwrap();
        assert_eq!(mempolicy_mode(linux.memory_policy().as_ref().unwrap()), 3 | 1 << 15);
    }
}
