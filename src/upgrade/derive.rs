//! `--derive`: the new bundle brings only the application (its rootfs, process arguments,
//! environment, working directory and user, its version and constraint and its other labels);
//! the running container keeps its deployment (mounts and volumes, namespaces, hostname,
//! resources, hooks, its `io.molt.*` and other annotations). One application bundle then serves many containers of a bundled application,
//! each upgraded with its own volume and identity. The derived config is written to
//! `<root>/.derived/ID/<stamp>/` (it must outlive the create: a rollback re-creates from it) and
//! pruned when the upgrade commits or rolls back, and when the container is deleted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, Spec};

/// The annotation that names the application bundle a derived config was made from: what a
/// later upgrade back to this version derives from (`molt bundle`'s rollback-batch reads it).
pub const APP_BUNDLE_ANNOTATION: &str = "io.molt.app-bundle";

fn absolute(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.into()
    } else {
        base.join(p)
    }
}

/// A mount whose source is a path on the host (a bind, or a loop image): relative sources are
/// relative to their bundle, which the derived config no longer lives in.
fn anchor_mount(m: &Mount, bundle: &Path) -> Mount {
    let opts = m.options().clone().unwrap_or_default();
    let by_path = m.typ().as_deref() == Some("bind") || opts.iter().any(|o| o == "bind" || o == "rbind" || o == "loop");
    let mut out = m.clone();
    if let Some(src) = m.source() {
        if by_path && src.is_relative() {
            out.set_source(Some(bundle.join(src)));
        }
    }
    out
}

/// The running container's config with the application of `app` put in: pure, so the rule is
/// tested without a container.
pub fn merge(old: &Spec, old_bundle: &Path, app: &Spec, app_bundle: &Path) -> Result<Spec, String> {
    let mut out = old.clone();
    let app_root = app.root().as_ref().ok_or("the new bundle's config.json has no root")?;
    let mut root = old.root().clone().unwrap_or_default();
    root.set_path(absolute(app_bundle, app_root.path()));
    out.set_root(Some(root));
    if let Some(mounts) = old.mounts() {
        out.set_mounts(Some(mounts.iter().map(|m| anchor_mount(m, old_bundle)).collect()));
    }
    let app_proc = app.process().as_ref().ok_or("the new bundle's config.json has no process")?;
    let mut proc = old.process().clone().unwrap_or_default();
    proc.set_args(app_proc.args().clone());
    proc.set_cwd(app_proc.cwd().clone());
    proc.set_user(app_proc.user().clone());
    // The deployment's variables stay; the application's win where both set one.
    let mut env: Vec<String> = old.process().as_ref().and_then(|p| p.env().clone()).unwrap_or_default();
    for kv in app_proc.env().clone().unwrap_or_default() {
        let key = kv.split('=').next().unwrap_or_default().to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    }
    proc.set_env(Some(env));
    out.set_process(Some(proc));
    let mut ann = merge_annotations(old.annotations().clone().unwrap_or_default(), app.annotations().clone().unwrap_or_default());
    ann.insert(APP_BUNDLE_ANNOTATION.into(), app_bundle.display().to_string());
    out.set_annotations(Some(ann));
    Ok(out)
}

/// What the application describes about itself: the `org.opencontainers.image.*` labels (its
/// version among them) and its upgrade constraint. These come from the new application only: a
/// running one's are dropped even when the new one has none (its version is then missing, not
/// the old one's).
fn belongs_to_the_application(key: &str) -> bool {
    key.starts_with("org.opencontainers.image.") || key == super::eligibility::CONSTRAINT_ANNOTATION
}

/// The running config's annotations with the application's put in. The deployment's stay: an
/// `io.molt.*` key (what to listen on, the network identity) is never taken from the
/// application, and any other key the running config sets keeps its value; the application
/// only adds keys the deployment does not set.
fn merge_annotations(old: HashMap<String, String>, app: HashMap<String, String>) -> HashMap<String, String> {
    let mut ann: HashMap<String, String> = old.into_iter().filter(|(k, _)| !belongs_to_the_application(k)).collect();
    for (k, v) in app {
        if belongs_to_the_application(&k) {
            ann.insert(k, v);
        } else if !k.starts_with("io.molt.") {
            ann.entry(k).or_insert(v);
        }
    }
    ann
}

/// One field of the running config that the upgrade changes (what a dry run shows).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Change {
    pub field: &'static str,
    pub from: String,
    pub to: String,
}

/// How `new` differs from `old` in what an application brings: args, env, cwd, user, version
/// (and the rootfs). Pure, for the dry run.
pub fn changes(old: &Spec, new: &Spec) -> Vec<Change> {
    let proc = |s: &Spec| s.process().clone().unwrap_or_default();
    let (a, b) = (proc(old), proc(new));
    let json = |v: &Option<Vec<String>>| serde_json::to_string(&v.clone().unwrap_or_default()).unwrap_or_default();
    let user = |p: &oci_spec::runtime::Process| format!("{}:{}", p.user().uid(), p.user().gid());
    let version = |s: &Spec| s.annotations().as_ref().and_then(|a| a.get(super::eligibility::VERSION_ANNOTATION).cloned()).unwrap_or_else(|| "-".into());
    let root = |s: &Spec| s.root().as_ref().map(|r| r.path().display().to_string()).unwrap_or_default();
    let fields = [
        ("version", version(old), version(new)),
        ("args", json(a.args()), json(b.args())),
        ("env", json(a.env()), json(b.env())),
        ("cwd", a.cwd().display().to_string(), b.cwd().display().to_string()),
        ("user", user(&a), user(&b)),
        ("root", root(old), root(new)),
    ];
    let mut out: Vec<Change> = fields.into_iter().filter(|(_, f, t)| f != t).map(|(field, from, to)| Change { field, from, to }).collect();
    out.extend(annotation_changes(old, new));
    out
}

/// The annotations (labels such as the constraint, exposed ports, the application bundle) that
/// the upgrade adds, removes or changes, beside the version shown on its own: the keys that
/// differ, with their old and new values (null when absent), as JSON objects.
fn annotation_changes(old: &Spec, new: &Spec) -> Option<Change> {
    let of = |s: &Spec| s.annotations().clone().unwrap_or_default();
    let (a, b) = (of(old), of(new));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).filter(|k| k.as_str() != super::eligibility::VERSION_ANNOTATION && a.get(*k) != b.get(*k)).collect();
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        return None;
    }
    let side = |m: &HashMap<String, String>| serde_json::Value::Object(keys.iter().map(|k| (k.to_string(), m.get(*k).map_or(serde_json::Value::Null, |v| v.clone().into()))).collect());
    Some(Change { field: "annotations", from: side(&a).to_string(), to: side(&b).to_string() })
}

/// Write the derived bundle for container `id` and return its directory.
pub fn write(root: &Path, id: &str, old: &Spec, old_bundle: &Path, app_bundle: &Path) -> Result<PathBuf, String> {
    let app_bundle = app_bundle.canonicalize().map_err(|e| format!("new bundle {}: {e}", app_bundle.display()))?;
    let app = crate::container::create::load_spec(&app_bundle).map_err(|e| e.to_string())?;
    let spec = merge(old, old_bundle, &app, &app_bundle)?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let dir = crate::container::derived_dir(root, id).join(stamp.to_string());
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let text = serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("config.json"), text).map_err(|e| format!("{}: {e}", dir.join("config.json").display()))?;
    Ok(dir)
}

/// Remove every derived bundle of `id` except `keep` (the one its container now runs from).
pub fn prune(root: &Path, id: &str, keep: &Path) {
    for e in std::fs::read_dir(crate::container::derived_dir(root, id)).into_iter().flatten().flatten() {
        if e.path() != keep {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    // Gone when empty (nothing derived is left for this id).
    let _ = std::fs::remove_dir(crate::container::derived_dir(root, id));
}

/// A derived bundle that is removed on drop unless the upgrade took it over (journaled).
pub struct Scratch(pub Option<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(&d);
            if let Some(parent) = d.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_application_comes_from_the_new_bundle_and_the_deployment_stays() {
        let old = spec(serde_json::json!({
            "ociVersion": "1.0.2", "hostname": "db-1",
            "root": {"path": "rootfs", "readonly": true},
            "process": {"args": ["app", "v1"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "env": ["DATA=/data/db-1", "VERSION=1"], "terminal": false},
            "mounts": [
                {"destination": "/data", "source": "vol/db-1.img", "options": ["loop", "rw"]},
                {"destination": "/etc/cfg", "source": "/srv/cfg", "options": ["rbind", "ro"]},
                {"destination": "/proc", "type": "proc", "source": "proc"}
            ],
            "annotations": {"org.opencontainers.image.version": "1.0.0", "io.molt.listen": "tcp:0.0.0.0:80"}
        }));
        let app = spec(serde_json::json!({
            "ociVersion": "1.0.2", "hostname": "template",
            "root": {"path": "rootfs"},
            "process": {"args": ["app", "v2"], "cwd": "/srv", "user": {"uid": 1000, "gid": 1000}, "env": ["VERSION=2", "NEW=1"]},
            "mounts": [{"destination": "/data", "source": "/shared.img", "options": ["loop"]}],
            "annotations": {"org.opencontainers.image.version": "1.1.0", "io.molt.upgrade.from": ">=1.0.0"}
        }));
        let m = merge(&old, Path::new("/b/db-1"), &app, Path::new("/apps/v2")).unwrap();
        assert_eq!(m.hostname().as_deref(), Some("db-1"));
        let root = m.root().clone().unwrap();
        assert_eq!((root.path().as_path(), root.readonly()), (Path::new("/apps/v2/rootfs"), Some(true)));
        let p = m.process().clone().unwrap();
        assert_eq!(p.args().clone().unwrap(), vec!["app", "v2"]);
        assert_eq!((p.cwd().as_path(), p.user().uid()), (Path::new("/srv"), 1000));
        assert_eq!(p.env().clone().unwrap(), vec!["DATA=/data/db-1", "VERSION=2", "NEW=1"]);
        let mounts = m.mounts().clone().unwrap();
        assert_eq!(mounts.len(), 3, "the running container's mounts, not the template's");
        assert_eq!(mounts[0].source().as_deref(), Some(Path::new("/b/db-1/vol/db-1.img")));
        assert_eq!(mounts[1].source().as_deref(), Some(Path::new("/srv/cfg")));
        assert_eq!(mounts[2].source().as_deref(), Some(Path::new("proc")));
        let ann = m.annotations().clone().unwrap();
        assert_eq!(ann["org.opencontainers.image.version"], "1.1.0");
        assert_eq!(ann["io.molt.upgrade.from"], ">=1.0.0");
        assert_eq!(ann["io.molt.listen"], "tcp:0.0.0.0:80");
        assert_eq!(ann[APP_BUNDLE_ANNOTATION], "/apps/v2");
        let ch = changes(&old, &m);
        let names: Vec<&str> = ch.iter().map(|c| c.field).collect();
        assert_eq!(names, ["version", "args", "env", "cwd", "user", "root", "annotations"]);
        let (from, to): (serde_json::Value, serde_json::Value) = (serde_json::from_str(&ch[6].from).unwrap(), serde_json::from_str(&ch[6].to).unwrap());
        assert_eq!(to["io.molt.upgrade.from"], ">=1.0.0", "{to}");
        assert_eq!(to[APP_BUNDLE_ANNOTATION], "/apps/v2", "{to}");
        assert!(from.get("io.molt.listen").is_none() && to.get("io.molt.listen").is_none(), "a kept annotation is no change: {to}");
        assert_eq!((ch[0].from.as_str(), ch[0].to.as_str()), ("1.0.0", "1.1.0"));
        assert_eq!(ch[4].to, "1000:1000");
        assert!(changes(&m, &m).is_empty());
    }

    #[test]
    fn an_image_label_never_replaces_what_the_deployment_sets() {
        let map = |pairs: &[(&str, &str)]| -> HashMap<String, String> { pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
        let old = map(&[
            ("io.molt.listen", "tcp:0.0.0.0:80"),
            ("io.molt.net.address", "10.0.0.2/24"),
            ("team", "payments"),
            ("org.opencontainers.image.version", "1.0.0"),
            ("org.opencontainers.image.revision", "abc"),
            ("io.molt.upgrade.from", ">=0.9.0"),
        ]);
        let app = map(&[
            ("io.molt.listen", "tcp:0.0.0.0:9999"),
            ("io.molt.net.address", "10.9.9.9/24"),
            ("io.molt.net.bridge", "evil0"),
            ("team", "other"),
            ("tier", "web"),
            ("org.opencontainers.image.version", "1.1.0"),
        ]);
        let m = merge_annotations(old, app);
        let expect = map(&[
            ("io.molt.listen", "tcp:0.0.0.0:80"),
            ("io.molt.net.address", "10.0.0.2/24"),
            ("team", "payments"),
            ("tier", "web"),
            ("org.opencontainers.image.version", "1.1.0"),
        ]);
        assert_eq!(m, expect, "the old image's revision and constraint go with it; no io.molt.* key comes from the image");
    }
}
