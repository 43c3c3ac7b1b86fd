//! Mutation fuzzing of what users hand molt: config.json for `create` (then `delete -f`), and the
//! bundle manifest and upgrade document for `molt bundle plan`. Each case changes one value of a
//! valid document (another type, a huge or negative number, an empty or very long string, a path
//! that climbs out, a deleted or an unknown key). molt must answer every case with success or a
//! clear error, never a panic or a signal, and leave nothing behind. Deterministic: the seed is
//! printed, and MOLT_FUZZ_SEED / MOLT_FUZZ_CASES replay or widen a run. Containers get a private
//! copy of the rootfs, and root.path is not mutated (it may name any host directory).

mod common;
use common::*;

use molt::fuzzing::Rng;
use serde_json::{json, Value};
use std::process::Command;

fn seed_and_cases(default_cases: usize) -> (u64, usize) {
    let seed = std::env::var("MOLT_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x6d6f_6c74);
    let cases = std::env::var("MOLT_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default_cases);
    (seed, cases)
}

/// Every path to a value in `v` (object keys and array indexes).
fn paths(v: &Value, here: Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => m.iter().for_each(|(k, c)| paths(c, [here.clone(), vec![k.clone()]].concat(), out)),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, c)| paths(c, [here.clone(), vec![i.to_string()]].concat(), out)),
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| match v {
        Value::Object(m) => m.get_mut(k),
        Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
        _ => None,
    })
}

/// One mutation of `doc`; returns what it did, for the failure message.
fn mutate(doc: &mut Value, rng: &mut Rng) -> String {
    let mut all = vec![];
    paths(doc, vec![], &mut all);
    // root.path may name any host directory (the spec allows it): pointed at the host's own
    // directories, a valid container would create its mount targets there. Not fuzzed.
    all.retain(|p| p.first().map(String::as_str) != Some("root"));
    let path = all[1 + rng.below(all.len() - 1)].clone();
    let replacements = [
        json!(null),
        json!(true),
        json!(-1),
        json!(0),
        json!(u64::MAX),
        json!(-9.9e300),
        json!(""),
        json!("x".repeat(10_000)),
        json!("../../../../etc/passwd"),
        json!("/proc/self/fd/3"),
        json!("\u{0}\u{202e}ünï"),
        json!([]),
        json!({}),
        json!([1, "a", null]),
    ];
    let kind = rng.below(replacements.len() + 2);
    let (parent, key) = path.split_at(path.len() - 1);
    if kind == replacements.len() {
        if let Some(Value::Object(m)) = at(doc, parent) {
            m.remove(&key[0]);
            return format!("deleted {path:?}");
        }
    }
    if kind == replacements.len() + 1 {
        if let Some(Value::Object(m)) = at(doc, parent) {
            m.insert("molt_fuzz_unknown".into(), json!(1));
            return format!("unknown key beside {path:?}");
        }
    }
    let r = replacements[kind % replacements.len()].clone();
    let what = format!("{path:?} = {}", r.to_string().chars().take(40).collect::<String>());
    if let Some(v) = at(doc, &path) {
        *v = r;
    }
    what
}

/// A panic exits 101; a signal has no code. Either is a defect whatever the input was.
fn assert_answered(out: &std::process::Output, case: &str) {
    let err = stderr_of(out);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{case}: exit {:?}\n{err}", out.status);
    assert!(!err.contains("panicked"), "{case}: {err}");
}

#[test]
fn mutated_configs_get_an_answer_and_leave_nothing() {
    require_root!();
    let (seed, cases) = seed_and_cases(60);
    eprintln!("fuzz: config.json, seed {seed}, {cases} cases");
    let mut rng = Rng(seed);
    let root = Root::new();
    // A private copy: a mutated config (no /dev tmpfs, odd mount targets) makes molt create
    // device nodes and directories in its rootfs, which must not be the shared fixture.
    let rootfs = RootfsCopy::new();
    for n in 0..cases {
        let mut b = Bundle::new(&["true"]);
        b.config["root"]["path"] = json!(rootfs.dir);
        let what = mutate(&mut b.config, &mut rng);
        let id = format!("fz{}-{n}", std::process::id());
        let case = format!("seed {seed} case {n}: {what}");
        b.write();
        let out = root.molt(&["create", "--bundle", b.dir.to_str().unwrap(), &id]);
        assert_answered(&out, &case);
        let out = root.molt(&["delete", "--force", &id]);
        assert_answered(&out, &case);
        assert!(!root.path.join(&id).exists(), "{case}: state left");
        assert!(cgroups_named(&id).is_empty(), "{case}: cgroups left: {:?}", cgroups_named(&id));
        assert!(host_mounts_with(&b.dir.display().to_string()).is_empty(), "{case}: mounts left");
    }
}

#[test]
fn mutated_bundle_documents_get_an_answer() {
    let (seed, cases) = seed_and_cases(60);
    eprintln!("fuzz: bundle documents, seed {seed}, {cases} cases");
    let mut rng = Rng(seed ^ 0xb0b);
    let dir = TempDir::new("molt-fuzz-docs");
    let app = Bundle::new(&["true"]);
    let mut app_cfg = app.config.clone();
    app_cfg["annotations"] = json!({"org.opencontainers.image.version": "1.1.0"});
    std::fs::write(app.dir.join("config.json"), app_cfg.to_string()).unwrap();
    let manifest = json!({"name": "fz", "roles": ["db", "app"], "hosts": {"a": {"local": true, "root": dir.join("root")}},
        "containers": [{"id": "db-1", "role": "db", "host": "a"}, {"id": "app-1", "role": "app", "host": "a"}]});
    let upgrade = json!({"version": "1.1.0", "constraint": ">=1.0.0", "roles": {"db": {"bundle": app.dir}, "app": {"bundle": app.dir}},
        "order": ["db", "app"], "batch_size": 2, "health": "running:1s", "canary": 1, "min_healthy": "1s"});
    for n in 0..cases {
        let (mut m, mut u) = (manifest.clone(), upgrade.clone());
        let what = if n % 2 == 0 { format!("manifest {}", mutate(&mut m, &mut rng)) } else { format!("upgrade {}", mutate(&mut u, &mut rng)) };
        std::fs::write(dir.join("m.json"), m.to_string()).unwrap();
        std::fs::write(dir.join("u.json"), u.to_string()).unwrap();
        let out = Command::new(molt_bin()).args(["bundle", "plan"]).arg(dir.join("m.json")).arg(dir.join("u.json")).output().unwrap();
        assert_answered(&out, &format!("seed {seed} case {n}: {what}"));
    }
}
