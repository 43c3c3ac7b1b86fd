//! The two documents of a bundle upgrade: the manifest (what runs where) and the upgrade document
//! (what to roll out, in which order, how carefully). Parsing and every check that needs no host:
//! a bad document is refused with its file and field named before anything is touched.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::BundleError;
use crate::upgrade::eligibility::{parse_semver, CONSTRAINT_ANNOTATION, VERSION_ANNOTATION};

/// The bundle manifest: its roles, its hosts, and which container of which role runs where.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub roles: Vec<String>,
    pub hosts: BTreeMap<String, Host>,
    pub containers: Vec<ContainerEntry>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerEntry {
    pub id: String,
    pub role: String,
    pub host: String,
}

/// A host: `"local": true` (the operator's own machine), or `"ssh"`: a destination for OpenSSH's
/// client (an address, or a Host name from the ssh config).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    #[serde(default)]
    pub local: bool,
    pub ssh: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// Private key file (ssh -i); relative to the manifest's directory.
    pub identity: Option<PathBuf>,
    /// An ssh config file to use instead of ~/.ssh/config (ssh -F); relative to the manifest's directory.
    pub ssh_config: Option<PathBuf>,
    /// How long ssh may take to connect and shake hands (ConnectTimeout), and how long the host
    /// may be silent before it counts as gone (three ServerAliveIntervals of it): default 5s.
    pub connect_timeout: Option<String>,
    /// molt's --root on that host.
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// The molt binary on that host (a name on its PATH, or a path).
    #[serde(default = "default_molt")]
    pub molt: String,
}

impl Host {
    /// `connect_timeout` in whole seconds for ssh (5 when not given); None when it is not a
    /// duration of at least one second.
    pub fn ssh_timeout_secs(&self) -> Option<u64> {
        match &self.connect_timeout {
            None => Some(5),
            Some(t) => crate::upgrade::parse_duration(t).ok().map(|d| d.as_secs_f64().ceil() as u64).filter(|s| *s >= 1),
        }
    }
}

fn default_root() -> PathBuf {
    PathBuf::from("/run/molt")
}

fn default_molt() -> String {
    "molt".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Stop before the next batch; the failed container was rolled back by `molt upgrade`.
    #[default]
    Stop,
    /// As stop, and the batch's containers that did upgrade go back to the bundle they ran
    /// before (`molt upgrade --force`).
    RollbackBatch,
}

/// The upgrade document: the new version, the rule, the new application per role, and the pace.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeDoc {
    pub version: String,
    /// A semver requirement the running version must satisfy (absent: any earlier version).
    pub constraint: Option<String>,
    pub roles: BTreeMap<String, RoleUpgrade>,
    /// Roles in the order they are upgraded; every role of `roles` exactly once.
    pub order: Vec<String>,
    #[serde(default = "one")]
    pub batch_size: usize,
    /// Health gate of every role unless the role names its own: exec:CMD, tcp:PORT or running:DUR.
    pub health: Option<String>,
    pub health_timeout: Option<String>,
    /// Passed to `molt upgrade --stop-signal` / `--stop-timeout` on each host.
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<String>,
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// How many containers of each role go first, in a batch of their own.
    #[serde(default)]
    pub canary: usize,
    /// How long a canary batch must stay healthy before the rollout goes on.
    pub min_healthy: Option<String>,
    /// true (default): each container keeps its own deployment and takes only the application
    /// from the role's bundle (`molt upgrade --derive`); false: the role's bundle is the whole
    /// new config of every container of the role.
    #[serde(default = "yes")]
    pub derive: bool,
}

fn yes() -> bool {
    true
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleUpgrade {
    /// The new application: an OCI bundle directory on the operator's machine, relative to the
    /// upgrade document's directory...
    #[serde(default)]
    pub bundle: Option<PathBuf>,
    /// ...or an OCI image there: `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` or
    /// `docker-archive:FILE[:NAME:TAG]` (each host then runs `molt upgrade --image`, which keeps
    /// the container's deployment).
    #[serde(default)]
    pub image: Option<String>,
    pub health: Option<String>,
    /// Shell commands run on the container's host before its upgrade (MOLT_CONTAINER, MOLT_ROLE set).
    #[serde(default)]
    pub pre_upgrade: Vec<String>,
    #[serde(default)]
    pub post_upgrade: Vec<String>,
}

fn read_json<T: for<'de> Deserialize<'de>>(file: &Path) -> Result<T, BundleError> {
    let text = std::fs::read_to_string(file).map_err(|e| BundleError::Read { file: file.into(), reason: e.to_string() })?;
    serde_json::from_str(&text).map_err(|e| BundleError::Parse { file: file.into(), reason: e.to_string() })
}

fn invalid(file: &Path, field: impl Into<String>, reason: impl Into<String>) -> BundleError {
    BundleError::Invalid { file: file.into(), field: field.into(), reason: reason.into() }
}

fn relative_to(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.into()
    } else {
        base.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// Both documents, read and checked against each other.
#[derive(Debug, Clone)]
pub struct Documents {
    pub manifest_file: PathBuf,
    pub upgrade_file: PathBuf,
    pub manifest: Manifest,
    pub upgrade: UpgradeDoc,
}

impl Manifest {
    /// The manifest alone (status, history, pause...), read and checked; its paths made
    /// relative to its own directory.
    pub fn load(manifest_file: &Path) -> Result<Manifest, BundleError> {
        let mut manifest: Manifest = read_json(manifest_file)?;
        for h in manifest.hosts.values_mut() {
            h.identity = h.identity.as_deref().map(|p| relative_to(manifest_file, p));
            h.ssh_config = h.ssh_config.as_deref().map(|p| relative_to(manifest_file, p));
        }
        validate_manifest(manifest_file, &manifest)?;
        Ok(manifest)
    }
}

impl Documents {
    pub fn load(manifest_file: &Path, upgrade_file: &Path) -> Result<Documents, BundleError> {
        let manifest = Manifest::load(manifest_file)?;
        let mut upgrade: UpgradeDoc = read_json(upgrade_file)?;
        for r in upgrade.roles.values_mut() {
            r.bundle = r.bundle.as_deref().map(|b| relative_to(upgrade_file, b));
            // The image's path, like a bundle's, is relative to the document.
            r.image = r.image.as_deref().map(|i| match i.split_once(':') {
                Some((kind, rest)) if !rest.starts_with('/') => format!("{kind}:{}", relative_to(upgrade_file, Path::new(rest)).display()),
                _ => i.to_string(),
            });
        }
        let docs = Documents { manifest_file: manifest_file.into(), upgrade_file: upgrade_file.into(), manifest, upgrade };
        docs.validate()?;
        Ok(docs)
    }

    /// Every check that needs no host; the role bundles' config.json are read too.
    pub fn validate(&self) -> Result<(), BundleError> {
        validate_manifest(&self.manifest_file, &self.manifest)?;
        validate_upgrade(&self.upgrade_file, &self.upgrade, &self.manifest)?;
        for (role, r) in &self.upgrade.roles {
            check_role_bundle(&self.upgrade_file, role, r, &self.upgrade)?;
        }
        Ok(())
    }
}

pub fn validate_manifest(file: &Path, m: &Manifest) -> Result<(), BundleError> {
    // The name names the bundle's state directory on the operator's machine.
    crate::container::validate_id(&m.name).map_err(|e| invalid(file, "name", e.to_string()))?;
    let mut roles = BTreeSet::new();
    for (i, r) in m.roles.iter().enumerate() {
        if r.trim().is_empty() {
            return Err(invalid(file, format!("roles[{i}]"), "is empty"));
        }
        if !roles.insert(r.as_str()) {
            return Err(invalid(file, format!("roles[{i}]"), format!("role {r:?} is listed twice")));
        }
    }
    for (name, h) in &m.hosts {
        let field = |f: &str| format!("hosts.{name}.{f}");
        match (h.local, &h.ssh) {
            (true, Some(_)) => return Err(invalid(file, field("ssh"), "a host is either local or reached over ssh, not both")),
            (false, None) => return Err(invalid(file, format!("hosts.{name}"), "needs \"local\": true or an \"ssh\" destination")),
            (false, Some(d)) if d.trim().is_empty() || d.starts_with('-') => {
                return Err(invalid(file, field("ssh"), format!("{d:?} is not an ssh destination")))
            }
            _ => {}
        }
        if h.local && (h.user.is_some() || h.port.is_some() || h.identity.is_some() || h.ssh_config.is_some() || h.connect_timeout.is_some()) {
            return Err(invalid(file, format!("hosts.{name}"), "user, port, identity, ssh_config and connect_timeout are for ssh hosts, not a local one"));
        }
        if h.connect_timeout.is_some() && h.ssh_timeout_secs().is_none() {
            let why = h.connect_timeout.as_deref().map(crate::upgrade::parse_duration).and_then(Result::err).unwrap_or_else(|| "must be at least 1s".into());
            return Err(invalid(file, field("connect_timeout"), why));
        }
        if let Some(u) = &h.user {
            if u.is_empty() || u.starts_with('-') || u.contains(char::is_whitespace) {
                return Err(invalid(file, field("user"), format!("{u:?} is not a user name")));
            }
        }
        if !h.root.is_absolute() {
            return Err(invalid(file, field("root"), format!("{} is not an absolute path", h.root.display())));
        }
        if h.molt.trim().is_empty() {
            return Err(invalid(file, field("molt"), "is empty"));
        }
    }
    let mut ids = BTreeSet::new();
    for (i, c) in m.containers.iter().enumerate() {
        let field = |f: &str| format!("containers[{i}].{f}");
        crate::container::validate_id(&c.id).map_err(|e| invalid(file, field("id"), e.to_string()))?;
        if !ids.insert(c.id.as_str()) {
            return Err(invalid(file, field("id"), format!("container id {:?} is listed twice", c.id)));
        }
        if !roles.contains(c.role.as_str()) {
            return Err(invalid(file, field("role"), format!("role {:?} is not in roles {:?}", c.role, m.roles)));
        }
        if !m.hosts.contains_key(&c.host) {
            let known: Vec<_> = m.hosts.keys().collect();
            return Err(invalid(file, field("host"), format!("host {:?} is not in hosts {known:?}", c.host)));
        }
    }
    Ok(())
}

pub fn validate_upgrade(file: &Path, u: &UpgradeDoc, m: &Manifest) -> Result<(), BundleError> {
    parse_semver(&u.version).map_err(|e| invalid(file, "version", format!("{:?} is not a semantic version: {e}", u.version)))?;
    if let Some(c) = &u.constraint {
        semver::VersionReq::parse(c).map_err(|e| invalid(file, "constraint", format!("{c:?} is not a semver requirement: {e}")))?;
    }
    if u.batch_size == 0 {
        return Err(invalid(file, "batch_size", "must be at least 1"));
    }
    let mut seen = BTreeSet::new();
    for (i, r) in u.order.iter().enumerate() {
        if !m.roles.contains(r) {
            return Err(invalid(file, format!("order[{i}]"), format!("role {r:?} is not a role of the manifest {:?}", m.roles)));
        }
        if !seen.insert(r.as_str()) {
            return Err(invalid(file, format!("order[{i}]"), format!("role {r:?} comes twice in the order (a cycle)")));
        }
        if !u.roles.contains_key(r) {
            return Err(invalid(file, format!("order[{i}]"), format!("role {r:?} has no entry in roles (no new application for it)")));
        }
    }
    for r in u.roles.keys() {
        if !m.roles.contains(r) {
            return Err(invalid(file, format!("roles.{r}"), format!("role {r:?} is not a role of the manifest {:?}", m.roles)));
        }
        if !seen.contains(r.as_str()) {
            return Err(invalid(file, "order", format!("role {r:?} has a new application but is not in the order")));
        }
    }
    let durations = [("health_timeout", &u.health_timeout), ("stop_timeout", &u.stop_timeout), ("min_healthy", &u.min_healthy)];
    for (f, v) in durations {
        if let Some(v) = v {
            crate::upgrade::parse_duration(v).map_err(|e| invalid(file, f, e))?;
        }
    }
    if let Some(sig) = &u.stop_signal {
        crate::container::kill::parse_signal(sig).map_err(|e| invalid(file, "stop_signal", e.to_string()))?;
    }
    if let Some(h) = &u.health {
        crate::upgrade::Health::parse(h).map_err(|e| invalid(file, "health", e))?;
    }
    for (role, r) in &u.roles {
        if let Some(h) = &r.health {
            crate::upgrade::Health::parse(h).map_err(|e| invalid(file, format!("roles.{role}.health"), e))?;
        }
    }
    Ok(())
}

/// The role's bundle must be the version the document announces: `molt upgrade` on the host
/// decides by the bundle's own annotations, and the plan must decide the same way.
fn check_role_bundle(file: &Path, role: &str, r: &RoleUpgrade, u: &UpgradeDoc) -> Result<(), BundleError> {
    let (field, config, ann): (String, String, std::collections::HashMap<String, String>) = match (&r.bundle, &r.image) {
        (Some(b), None) => {
            let field = format!("roles.{role}.bundle");
            let config = b.join("config.json");
            let text = std::fs::read_to_string(&config).map_err(|e| invalid(file, &field, format!("{}: {e}", config.display())))?;
            let spec: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| invalid(file, &field, format!("{}: not JSON: {e}", config.display())))?;
            let ann = spec.get("annotations").and_then(|a| serde_json::from_value(a.clone()).ok()).unwrap_or_default();
            (field, config.display().to_string(), ann)
        }
        (None, Some(i)) => {
            let field = format!("roles.{role}.image");
            let reference = crate::image::layout::Reference::parse(i).map_err(|e| invalid(file, &field, e.to_string()))?;
            // The whole image is checked here (digests, platform), before any host is asked.
            let img = crate::image::layout::Image::open(&reference, &std::env::temp_dir()).map_err(|e| invalid(file, &field, e.to_string()))?;
            (field, format!("image {i}"), img.labels())
        }
        (Some(_), Some(_)) => return Err(invalid(file, format!("roles.{role}"), "names both a bundle and an image: one new application per role")),
        (None, None) => return Err(invalid(file, format!("roles.{role}"), "needs \"bundle\" (a bundle directory) or \"image\" (oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG])")),
    };
    let config = PathBuf::from(config);
    let ann = |k: &str| ann.get(k).cloned();
    match ann(VERSION_ANNOTATION) {
        Some(v) if parse_semver(&v).ok() == parse_semver(&u.version).ok() => {}
        Some(v) => {
            return Err(invalid(file, &field, format!("{} has {VERSION_ANNOTATION} {v:?}, the document's version is {:?}", config.display(), u.version)))
        }
        None => return Err(invalid(file, &field, format!("{} has no {VERSION_ANNOTATION} annotation", config.display()))),
    }
    if let (Some(c), Some(doc)) = (ann(CONSTRAINT_ANNOTATION), &u.constraint) {
        if c.trim() != doc.trim() {
            return Err(invalid(file, &field, format!("{} has {CONSTRAINT_ANNOTATION} {c:?}, the document's constraint is {doc:?}", config.display())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(json: &str) -> Result<Manifest, BundleError> {
        let m: Manifest = serde_json::from_str(json).map_err(|e| BundleError::Parse { file: "m.json".into(), reason: e.to_string() })?;
        validate_manifest(Path::new("m.json"), &m)?;
        Ok(m)
    }

    const GOOD: &str = r#"{"name": "shop", "roles": ["db", "app"],
        "hosts": {"a": {"local": true}, "b": {"ssh": "b.example", "user": "ops", "port": 2222}},
        "containers": [{"id": "db-1", "role": "db", "host": "a"}, {"id": "app-1", "role": "app", "host": "b"}]}"#;

    fn upgrade(json: &str) -> Result<UpgradeDoc, BundleError> {
        let u: UpgradeDoc = serde_json::from_str(json).map_err(|e| BundleError::Parse { file: "u.json".into(), reason: e.to_string() })?;
        validate_upgrade(Path::new("u.json"), &u, &manifest(GOOD)?)?;
        Ok(u)
    }

    fn err(r: Result<impl std::fmt::Debug, BundleError>) -> String {
        r.expect_err("should be refused").to_string()
    }

    #[test]
    fn a_good_manifest_has_defaults() {
        let m = manifest(GOOD).unwrap();
        assert_eq!(m.hosts["a"].root, Path::new("/run/molt"));
        assert_eq!(m.hosts["b"].molt, "molt");
    }

    #[test]
    fn manifest_errors_name_file_and_field() {
        let e = err(manifest(&GOOD.replace("\"port\"", "\"prot\"")));
        assert!(e.contains("m.json") && e.contains("unknown field `prot`"), "{e}");
        let e = err(manifest(&GOOD.replace(r#""host": "b""#, r#""host": "c""#)));
        assert!(e.contains("m.json") && e.contains("containers[1].host") && e.contains("\"c\""), "{e}");
        let e = err(manifest(&GOOD.replace("app-1", "db-1")));
        assert!(e.contains("containers[1].id") && e.contains("twice"), "{e}");
        let e = err(manifest(&GOOD.replace(r#""role": "app""#, r#""role": "web""#)));
        assert!(e.contains("containers[1].role") && e.contains("web"), "{e}");
        let e = err(manifest(&GOOD.replace(r#"{"local": true}"#, "{}")));
        assert!(e.contains("hosts.a") && e.contains("local"), "{e}");
        let e = err(manifest(&GOOD.replace(r#""name": "shop", "#, "")));
        assert!(e.contains("missing field `name`"), "{e}");
        let e = err(manifest(&GOOD.replace(r#""port": 2222"#, r#""port": 2222, "connect_timeout": "5x""#)));
        assert!(e.contains("hosts.b.connect_timeout") && e.contains("unit must be"), "{e}");
        let e = err(manifest(&GOOD.replace(r#""port": 2222"#, r#""port": 2222, "connect_timeout": "0s""#)));
        assert!(e.contains("hosts.b.connect_timeout") && e.contains("at least 1s"), "{e}");
        let e = err(manifest(&GOOD.replace(r#"{"local": true}"#, r#"{"local": true, "connect_timeout": "9s"}"#)));
        assert!(e.contains("hosts.a") && e.contains("connect_timeout are for ssh hosts"), "{e}");
    }

    const UP: &str = r#"{"version": "1.1.0", "constraint": ">=1.0.0, <2.0.0",
        "roles": {"db": {"bundle": "db"}, "app": {"bundle": "app"}}, "order": ["db", "app"], "batch_size": 2}"#;

    #[test]
    fn upgrade_errors_name_file_and_field() {
        let u = upgrade(UP).unwrap();
        assert_eq!(u.failure_policy, FailurePolicy::Stop);
        let e = err(upgrade(&UP.replace("1.1.0", "1.1")));
        assert!(e.contains("u.json") && e.contains("field version") && e.contains("\"1.1\""), "{e}");
        let e = err(upgrade(&UP.replace(">=1.0.0, <2.0.0", ">>1")));
        assert!(e.contains("field constraint") && e.contains(">>1"), "{e}");
        let e = err(upgrade(&UP.replace(r#"["db", "app"]"#, r#"["db", "app", "db"]"#)));
        assert!(e.contains("order[2]") && e.contains("twice"), "{e}");
        let e = err(upgrade(&UP.replace(r#"["db", "app"]"#, r#"["db", "cache"]"#)));
        assert!(e.contains("order[1]") && e.contains("cache"), "{e}");
        let e = err(upgrade(&UP.replace(r#"["db", "app"]"#, r#"["db"]"#)));
        assert!(e.contains("field order") && e.contains("app"), "{e}");
        let e = err(upgrade(&UP.replace("\"batch_size\": 2", "\"batch_size\": 0")));
        assert!(e.contains("batch_size"), "{e}");
        let e = err(upgrade(&UP.replace("\"batch_size\"", "\"batchsize\"")));
        assert!(e.contains("unknown field `batchsize`"), "{e}");
        let e = err(upgrade(&UP.replace("\"batch_size\": 2", "\"failure_policy\": \"retry\"")));
        assert!(e.contains("retry"), "{e}");
        let e = err(upgrade(&UP.replace("\"batch_size\": 2", "\"health\": \"http:80\"")));
        assert!(e.contains("field health"), "{e}");
    }

    #[test]
    fn role_bundle_must_carry_the_documents_version() {
        let dir = std::env::temp_dir().join(format!("molt-bundle-doc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let u: UpgradeDoc = serde_json::from_str(UP).unwrap();
        let r = RoleUpgrade { bundle: Some(dir.clone()), image: None, health: None, pre_upgrade: vec![], post_upgrade: vec![] };
        let file = Path::new("u.json");
        let e = check_role_bundle(file, "db", &r, &u).unwrap_err().to_string();
        assert!(e.contains("roles.db.bundle") && e.contains("config.json"), "{e}");
        std::fs::write(dir.join("config.json"), r#"{"annotations": {"org.opencontainers.image.version": "1.2.0"}}"#).unwrap();
        let e = check_role_bundle(file, "db", &r, &u).unwrap_err().to_string();
        assert!(e.contains("1.2.0") && e.contains("1.1.0"), "{e}");
        std::fs::write(dir.join("config.json"), r#"{"annotations": {"org.opencontainers.image.version": "v1.1.0"}}"#).unwrap();
        check_role_bundle(file, "db", &r, &u).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
