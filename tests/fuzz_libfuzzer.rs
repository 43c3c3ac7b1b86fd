//! The coverage-guided short run CI makes: `scripts/fuzz --dev` builds every cargo-fuzz target of
//! `fuzz/` (libFuzzer, instrumented, unoptimised) and runs each for MOLT_LIBFUZZER_SECS (default
//! 10) seconds, two at a time, from the seeds of `fuzz/corpus/`; what it learns stays under the
//! target directory. A crash or hang fails the test with the kept input. Skipped, saying why,
//! only when this machine cannot build libFuzzer targets (scripts/fuzz exit status 3: no C++
//! compiler, cargo-fuzz cannot be installed). Needs no root. From nothing (cargo-fuzz installed,
//! the instrumented build, the runs) 373 s of CPU, 14 minutes on a loaded two-core machine, an
//! estimated 4-5 on a quiet one; 2 minutes once built (vendor-notes/cargo-fuzz.md).

use std::path::Path;
use std::process::Command;

#[test]
fn every_fuzz_target_survives_a_short_coverage_guided_libfuzzer_run() {
    let secs = std::env::var("MOLT_LIBFUZZER_SECS").unwrap_or_else(|_| "10".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fuzz");
    let out = Command::new(&script)
        .args(["--dev", "--parallel", "2", "--time", &secs])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The script's own lines: what it built and ran, each target's final count, the verdict.
    let summary: Vec<&str> = stderr.lines().filter(|l| l.starts_with("fuzz: ")).collect();
    match out.status.code() {
        Some(0) => eprintln!("{}", summary.join("\n")),
        Some(3) => eprintln!("SKIPPED: libFuzzer targets cannot be built here: {}", summary.join("; ")),
        _ => {
            let lines: Vec<&str> = stderr.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            panic!("scripts/fuzz --dev failed ({}):\n{}\n--- the end of its output ---\n{tail}", out.status, summary.join("\n"))
        }
    }
}
