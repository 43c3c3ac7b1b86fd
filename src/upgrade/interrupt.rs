//! SIGINT and SIGTERM during `molt upgrade`: noted by the handler, acted on between steps and in
//! waits, where the upgrade can still roll back cleanly (or finish a commit that had begun).

use std::sync::atomic::{AtomicI32, Ordering};

/// The SIGINT or SIGTERM that reached `molt upgrade` (0: none). The handler only notes it; the
/// upgrade acts on it at its next step or wait, where it can still roll back cleanly.
static INTERRUPT: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_interrupt(sig: libc::c_int) {
    let _ = INTERRUPT.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

/// From now on SIGINT and SIGTERM interrupt the upgrade instead of killing molt: it rolls back
/// (or finishes a commit that had begun) and the command exits 128 + the signal.
pub fn catch_interrupts() -> Result<(), nix::Error> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    // SA_RESTART: a system call the signal lands in goes on; the flag is read between steps.
    let act = SigAction::new(SigHandler::Handler(note_interrupt), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &act) }?;
    }
    Ok(())
}

/// The signal that interrupted this upgrade, if one did.
pub fn interrupted_by() -> Option<i32> {
    Some(INTERRUPT.load(Ordering::SeqCst)).filter(|s| *s != 0)
}

pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("signal {sig}"))
}

pub(super) fn check_interrupt() -> Result<(), String> {
    match interrupted_by() {
        Some(sig) => Err(format!("interrupted by {}", signal_name(sig))),
        None => Ok(()),
    }
}
