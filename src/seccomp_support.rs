//! What molt's seccomp supports here, shared by the init (which installs filters) and `molt
//! features` (which lists them): seccomp(2)'s filter flags, the architectures the linked
//! libseccomp builds a filter for, and the flags this kernel takes.

use libseccomp::{ScmpAction, ScmpArch, ScmpFilterContext};

// seccomp(2) and its filter flags (linux/seccomp.h).
pub const SET_MODE_FILTER: libc::c_ulong = 1;
pub const FLAG_TSYNC: libc::c_ulong = 1;
pub const FLAG_LOG: libc::c_ulong = 1 << 1;
pub const FLAG_SPEC_ALLOW: libc::c_ulong = 1 << 2;
pub const FLAG_NEW_LISTENER: libc::c_ulong = 1 << 3;
pub const FLAG_WAIT_KILLABLE_RECV: libc::c_ulong = 1 << 5;

/// The spec's architectures the linked libseccomp builds a filter for (`molt features`).
pub fn known_archs() -> Vec<&'static str> {
    const NAMES: &[&str] = &[
        "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32",
        "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64",
        "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_RISCV64", "SCMP_ARCH_S390", "SCMP_ARCH_S390X",
        "SCMP_ARCH_X32", "SCMP_ARCH_X86", "SCMP_ARCH_X86_64",
    ];
    let Ok(mut ctx) = ScmpFilterContext::new(ScmpAction::Allow) else { return Vec::new() };
    NAMES.iter().copied().filter(|n| n.parse::<ScmpArch>().is_ok_and(|a| ctx.add_arch(a).is_ok())).collect()
}

/// The filter flags molt takes and this kernel has (`molt features`): probed as libseccomp does,
/// with no program, which the kernel refuses with EFAULT once it has accepted the flags.
pub fn supported_flags() -> Vec<&'static str> {
    let has = |flags: libc::c_ulong| {
        // SAFETY: a NULL program is never read: the kernel fails with EFAULT or EINVAL.
        let r = unsafe { libc::syscall(libc::SYS_seccomp, SET_MODE_FILTER, flags, std::ptr::null::<libc::sock_fprog>()) };
        r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT)
    };
    [
        ("SECCOMP_FILTER_FLAG_TSYNC", FLAG_TSYNC),
        ("SECCOMP_FILTER_FLAG_LOG", FLAG_LOG),
        ("SECCOMP_FILTER_FLAG_SPEC_ALLOW", FLAG_SPEC_ALLOW),
        ("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", FLAG_NEW_LISTENER | FLAG_WAIT_KILLABLE_RECV),
    ]
    .into_iter()
    .filter(|(_, f)| has(*f))
    .map(|(n, _)| n)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_molt_features_says() {
        let archs = known_archs();
        for a in ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"] {
            assert!(archs.contains(&a), "{a} in {archs:?}");
        }
        // This kernel (5.19 or later) has every flag molt takes.
        assert_eq!(supported_flags().len(), 4, "{:?}", supported_flags());
    }
}
