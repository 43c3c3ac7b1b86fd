//! The fuzz targets of `molt::fuzzing` (every parser of outside input) run in the ordinary test
//! suite: each seed of `fuzz/corpus/TARGET/` as it is, then MOLT_FUZZ_MUTATIONS (default 2 000)
//! byte-level mutations of the seeds. A panic fails the test and leaves the input under
//! `target/.../fuzz-failures/` to replay (`scripts/fuzz TARGET --replay FILE`). The
//! coverage-guided runs are `scripts/fuzz` (cargo fuzz; CI's short one is tests/fuzz_libfuzzer.rs).
//! Needs no root (the layer target writes under the temporary directory only).

use molt::fuzzing::{mutate, Rng, TARGETS};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Runs `f` on `input`; on a panic, keeps the input and says where.
fn run(target: &str, f: fn(&[u8]), input: &[u8], n: usize) -> Option<String> {
    if catch_unwind(AssertUnwindSafe(|| f(input))).is_ok() {
        return None;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{target}-{n}"));
    std::fs::write(&file, input).unwrap();
    Some(format!("{target}: input {n} panicked, kept in {}", file.display()))
}

#[test]
fn every_fuzz_target_answers_its_seeds_and_their_mutations_without_a_panic() {
    let mutations: usize = std::env::var("MOLT_FUZZ_MUTATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let seed: u64 = std::env::var("MOLT_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x6d6f_6c74);
    // Panics are caught and reported below; keep their messages out of the way.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = vec![];
    for (target, f) in TARGETS {
        let seeds = corpus(target);
        assert!(!seeds.is_empty(), "fuzz/corpus/{target} holds no seed");
        failures.extend(seeds.iter().enumerate().filter_map(|(n, s)| run(target, *f, s, n)));
        let mut rng = Rng(seed ^ target.len() as u64);
        for n in 0..mutations {
            let mut input = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(4) {
                mutate(&mut input, &mut rng);
            }
            failures.extend(run(target, *f, &input, seeds.len() + n));
        }
    }
    let _ = std::panic::take_hook();
    assert!(failures.is_empty(), "seed {seed}:\n{}", failures.join("\n"));
}

#[test]
fn every_target_has_a_cargo_fuzz_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for (target, _) in TARGETS {
        let file = root.join(format!("fuzz_targets/{target}.rs"));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(text.contains(&format!("molt::fuzzing::{target}(")), "{} does not call its target", file.display());
        assert!(manifest.contains(&format!("name = \"{target}\"")), "fuzz/Cargo.toml has no bin {target}");
    }
}
