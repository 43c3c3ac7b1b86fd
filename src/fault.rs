//! Test-only fault injection: MOLT_TEST_CRASH_AT=<point> makes molt SIGKILL itself right there,
//! so tests can prove what a crash at that point leaves (an upgrade's `<step>:<when>`, an image
//! unpack's `image-unpack:applied`). Only with the `fault-injection` feature (on for `cargo
//! test`): a release build ignores the variable.

#[cfg(feature = "fault-injection")]
pub fn crash_at(point: &str) {
    if std::env::var("MOLT_TEST_CRASH_AT").is_ok_and(|spec| spec == point) {
        // SAFETY: raising SIGKILL on ourselves; nothing after this runs.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn crash_at(_point: &str) {}
