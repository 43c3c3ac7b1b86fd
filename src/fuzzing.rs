//! Fuzz targets: every parser of what comes from outside molt, each taking arbitrary bytes. The
//! property is the same for all: an answer (a value or an error), never a panic, an abort or a
//! hang, and no system call that changes the host (the layer target writes only inside its own
//! temporary directory, and checks that nothing landed beside the root it was given).
//!
//! Three drivers call them: `fuzz/` (cargo fuzz, coverage-guided, `scripts/fuzz`), the seed
//! corpus replayed by `cargo test` (`fuzz/corpus/TARGET/`), and a short deterministic mutation
//! run of each target in the same test (`tests/fuzz_targets.rs`).

use std::collections::HashMap;
use std::path::Path;

/// A fuzz target: its name and the function that takes one input.
pub type Target = (&'static str, fn(&[u8]));

/// Every target by name, as `fuzz/fuzz_targets/NAME.rs` and `fuzz/corpus/NAME/` name them.
pub const TARGETS: &[Target] = &[
    ("config", config),
    ("process", process),
    ("annotations", annotations),
    ("volume_source", volume_source),
    ("version", version),
    ("journal", journal),
    ("bundle_docs", bundle_docs),
    ("hook_output", hook_output),
    ("kernel_files", kernel_files),
    ("cli_values", cli_values),
    ("image_layer", image_layer),
];

/// Text targets take the input as UTF-8 (lossily: the parsers receive `&str` from the places
/// that read them, which decode the same way).
fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// Splits one input into `n` strings on NUL bytes, so a target with several inputs gets all of
/// them from one buffer.
fn fields(data: &[u8], n: usize) -> Vec<String> {
    let mut out: Vec<String> = data.splitn(n, |b| *b == 0).map(text).collect();
    out.resize(n, String::new());
    out
}

/// config.json as `create` reads and checks it before anything on the host is made: the parse,
/// the field checks, the namespace plan, the volumes, the network and listening annotations and
/// the cgroup plan for each layout.
pub fn config(data: &[u8]) {
    use crate::container::config as c;
    let Ok(spec) = c::spec_from_bytes(Path::new("/fuzz-bundle"), data) else { return };
    let _ = c::validate_process(&spec);
    let _ = c::validate_listen(&spec, 0);
    let _ = c::validate_sysctls(&spec);
    let _ = c::plan_namespaces(&spec, None);
    for m in spec.mounts().iter().flatten() {
        let options = m.options().clone().unwrap_or_default();
        let _ = crate::volume::parse_mount(m.destination(), m.typ().as_deref(), m.source().as_deref(), &options);
        let _ = crate::mount_options::parse_options(&options);
    }
    let _ = crate::net::spec_from_annotations(&spec.annotations().clone().unwrap_or_default());
    if let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
        use crate::cgroups::{plan, Layout, Version};
        for (layout, v) in [(Layout::V1, Version::V1), (Layout::V2, Version::V2), (Layout::Hybrid, Version::V1)] {
            let _ = plan::plan(r, layout, &|_: &str| Some(v));
        }
        let _ = plan::for_update(r);
    }
}

/// process.json of `exec --process`.
pub fn process(data: &[u8]) {
    let _ = crate::cli::exec::parse_process(data);
}

/// molt's annotations: `io.molt.listen` and the network ones (address, bridge, gateway).
pub fn annotations(data: &[u8]) {
    let f = fields(data, 4);
    let _ = crate::listen::parse(&f[0]);
    let a: HashMap<String, String> = [
        (crate::net::ANNOTATION_ADDRESS, &f[1]),
        (crate::net::ANNOTATION_BRIDGE, &f[2]),
        (crate::net::ANNOTATION_GATEWAY, &f[3]),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect();
    let _ = crate::net::spec_from_annotations(&a);
    let _ = crate::net::check_ifname(&f[2]);
}

/// A volume mount's type, source and options (loop, block, NFS and iSCSI source strings).
pub fn volume_source(data: &[u8]) {
    let f = fields(data, 3);
    let options: Vec<String> = f[2].split(',').map(String::from).collect();
    for typ in [f[0].as_str(), "nfs", "nfs4", "iscsi", "ext4"] {
        let _ = crate::volume::parse_mount(Path::new("/data"), Some(typ), Some(Path::new(&f[1])), &options);
    }
}

/// Versions and constraints (the image labels and the bundle annotations carry them).
pub fn version(data: &[u8]) {
    let f = fields(data, 3);
    fn opt(s: &str) -> Option<&str> {
        (!s.is_empty()).then_some(s)
    }
    let _ = crate::upgrade::eligibility::evaluate(opt(&f[0]), opt(&f[1]), opt(&f[2]));
    let _ = crate::upgrade::eligibility::parse_semver(&f[0]);
}

/// The upgrade journal, as `--resume` and every command that settles an interrupted upgrade
/// read it.
pub fn journal(data: &[u8]) {
    if let Ok(rec) = crate::upgrade::journal::parse(Path::new("/fuzz/.upgrade-x.json"), data) {
        for s in crate::upgrade::journal::ALL {
            let _ = (rec.started(*s), rec.finished(*s));
        }
    }
    let _ = crate::upgrade::journal::Step::parse(&text(data));
}

/// The bundle manifest and upgrade document (NUL between them), parsed and checked as `molt
/// bundle plan` checks them before asking any host.
pub fn bundle_docs(data: &[u8]) {
    use crate::bundle::doc;
    let mut parts = data.splitn(2, |b| *b == 0);
    let (m, u) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let Ok(manifest) = serde_json::from_slice::<doc::Manifest>(m) else { return };
    let mf = Path::new("/fuzz/manifest.json");
    if doc::validate_manifest(mf, &manifest).is_err() {
        return;
    }
    if let Ok(upgrade) = serde_json::from_slice::<doc::UpgradeDoc>(u) {
        let _ = doc::validate_upgrade(Path::new("/fuzz/upgrade.json"), &upgrade, &manifest);
    }
}

/// What a failed hook printed, quoted in its error.
pub fn hook_output(data: &[u8]) {
    let _ = crate::hooks::failure_output(data);
}

/// The kernel's files molt reads (mountinfo, cgroup, stat): a kernel or a container's own
/// /proc may show unusual paths (spaces, newlines escaped, "(deleted)").
pub fn kernel_files(data: &[u8]) {
    let t = text(data);
    let _ = crate::procfs::parse_mountinfo(&t);
    let _ = crate::procfs::parse_cgroup(&t);
    let _ = crate::procfs::parse_stat(&t);
}

/// Values given on the command line: durations, health gates, sizes, signals, log formats,
/// image references.
pub fn cli_values(data: &[u8]) {
    let t = text(data);
    let _ = crate::upgrade::parse_duration(&t);
    let _ = crate::upgrade::Health::parse(&t);
    let _ = crate::cli::update::parse_bytes(&t);
    let _ = crate::cli::events::parse_interval(&t);
    let _ = crate::container::kill::parse_signal(&t);
    let _ = crate::logging::Format::parse(&t);
    let _ = crate::spec::process_attrs::parse_list(&t, 1024);
    if !t.contains('\0') {
        let _ = crate::image::Reference::parse(&t);
    }
}

/// An image layer (tar, gzip or zstd by its first bytes) applied to an empty root: refused or
/// applied, but nothing may appear beside the root.
pub fn image_layer(data: &[u8]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("molt-fuzz-layer-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    let (rootfs, blob) = (dir.join("rootfs"), dir.join("blob"));
    if std::fs::create_dir_all(&rootfs).is_err() || std::fs::write(&blob, data).is_err() {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let media = match data {
        [0x1f, 0x8b, ..] => "application/vnd.oci.image.layer.v1.tar+gzip",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "application/vnd.oci.image.layer.v1.tar+zstd",
        _ => "application/vnd.oci.image.layer.v1.tar",
    };
    let d = oci_spec::image::DescriptorBuilder::default()
        .media_type(oci_spec::image::MediaType::from(media))
        .digest(oci_spec::image::Digest::try_from(format!("sha256:{}", "0".repeat(64))).expect("a valid digest"))
        .size(data.len() as u64)
        .build()
        .expect("a complete descriptor");
    let _ = crate::image::apply::apply_layer("fuzz", &d, &blob, &rootfs);
    let beside: Vec<_> = std::fs::read_dir(&dir).map(|r| r.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(beside.len() == 2, "a layer wrote beside its root: {beside:?}");
}

/// xorshift64*: small and deterministic, for the mutation drivers in the tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Values that make parsers take their rare paths.
const INTERESTING: &[&[u8]] = &[
    b"\0", b"\xff\xfe", b"-1", b"0", b"18446744073709551616", b"1e308", b"NaN", b"../../", b"/proc/self/fd/3",
    b"\"", b"\\u0000", b"[]", b"{}", b"null", b":", b",", b"=", b"%d", b"\n", b" ", b"\\040",
];

/// One byte-level mutation of `data` (flip, insert, delete, duplicate, truncate, splice in an
/// interesting value); what libFuzzer does without coverage guidance.
pub fn mutate(data: &mut Vec<u8>, rng: &mut Rng) {
    let at = |rng: &mut Rng, len: usize| rng.below(len + 1);
    match rng.below(6) {
        0 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] ^= 1 << rng.below(8);
        }
        1 => {
            let i = at(rng, data.len());
            data.insert(i, rng.next_u64() as u8);
        }
        2 if !data.is_empty() => {
            let i = rng.below(data.len());
            let n = rng.below(data.len() - i).min(64) + 1;
            data.drain(i..i + n);
        }
        3 if !data.is_empty() => {
            let i = rng.below(data.len());
            let n = rng.below(data.len() - i).min(256) + 1;
            let chunk = data[i..i + n].to_vec();
            let j = at(rng, data.len());
            data.splice(j..j, chunk);
        }
        4 => {
            let keep = at(rng, data.len());
            data.truncate(keep);
        }
        _ => {
            let v = INTERESTING[rng.below(INTERESTING.len())];
            let i = at(rng, data.len());
            let n = rng.below(4).min(data.len() - i);
            data.splice(i..i + n, v.iter().copied());
        }
    }
}
