//! Turns linux.cgroupsPath (plain or systemd "slice:prefix:name") into one checked cgroup path.
//! Pure string work: where the path lands on disk is decided in mod.rs from the mounts.

use super::error::CgroupError;

/// molt's cgroups live under this parent when the config gives no path; destroy removes it once empty.
pub const DEFAULT_PARENT: &str = "/molt";

/// A cgroup path as the config asked for it, before it meets a hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    /// Normalised: no empty, "." or ".." components; absolute ("/a/b") or relative ("a/b").
    pub path: String,
    /// Relative paths are placed under the calling process's own cgroup in each hierarchy,
    /// as runc does: that is what lets a runtime nested in a container without a cgroup
    /// namespace (or run from a delegated user slice) stay inside the part it may write to.
    pub relative: bool,
    /// Set when the path is molt's default, so destroy may also remove DEFAULT_PARENT.
    pub default_parent: bool,
}

pub fn requested(
    cgroups_path: Option<&str>,
    id: &str,
    systemd: bool,
) -> Result<Requested, CgroupError> {
    let given = cgroups_path.filter(|p| !p.trim().is_empty());
    let Some(given) = given else {
        check_component(id, id, "the container id")?;
        return Ok(Requested {
            path: format!("{DEFAULT_PARENT}/{id}"),
            relative: false,
            default_parent: true,
        });
    };
    let raw = if systemd {
        systemd_path(given)?
    } else {
        given.to_string()
    };
    let relative = !raw.starts_with('/');
    let mut parts = Vec::new();
    for c in raw.split('/').filter(|c| !c.is_empty() && *c != ".") {
        check_component(c, given, "a path component")?;
        parts.push(c);
    }
    if parts.is_empty() {
        return Err(bad(
            given,
            "it names the hierarchy root, which molt will neither configure nor remove",
        ));
    }
    let joined = parts.join("/");
    Ok(Requested {
        path: if relative {
            joined
        } else {
            format!("/{joined}")
        },
        relative,
        default_parent: false,
    })
}

fn bad(path: &str, reason: &str) -> CgroupError {
    CgroupError::BadPath {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

/// ".." would climb out of the tree molt was given; NUL and newline cannot be cgroup names
/// (and newline would corrupt /proc/<pid>/cgroup for everyone reading it).
fn check_component(c: &str, whole: &str, what: &str) -> Result<(), CgroupError> {
    if c.is_empty() || c == "." || c == ".." {
        return Err(bad(whole, &format!("{what} {c:?} is not a directory name")));
    }
    if c.contains('/') || c.contains('\0') || c.contains('\n') {
        return Err(bad(
            whole,
            &format!("{what} {c:?} contains '/', NUL or newline"),
        ));
    }
    Ok(())
}

/// "slice:prefix:name" -> "/<expanded slice>/<prefix>-<name>.scope", the directory systemd
/// would give that unit. No systemd is asked for anything: molt only borrows the naming so
/// podman/containerd paths land where those tools expect to find them.
pub fn systemd_path(spec: &str) -> Result<String, CgroupError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return Err(bad(
            spec,
            "with --systemd-cgroup the path must be \"slice:prefix:name\"",
        ));
    };
    if name.is_empty() {
        return Err(bad(spec, "the unit name (third field) is empty"));
    }
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    check_component(&unit, spec, "the unit name")?;
    Ok(format!(
        "{}/{unit}",
        expand_slice(slice, spec)?.trim_end_matches('/')
    ))
}

/// systemd nests slices by their dash-separated name: "a-b-c.slice" lives at
/// "/a.slice/a-b.slice/a-b-c.slice"; "-.slice" is the root.
fn expand_slice(slice: &str, spec: &str) -> Result<String, CgroupError> {
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(bad(
            spec,
            &format!("slice {slice:?} does not end in \".slice\""),
        ));
    };
    if stem == "-" {
        return Ok("/".to_string());
    }
    if stem.is_empty()
        || stem.contains('/')
        || stem.starts_with('-')
        || stem.ends_with('-')
        || stem.contains("--")
    {
        return Err(bad(
            spec,
            &format!("{slice:?} is not a valid systemd slice name"),
        ));
    }
    let mut out = String::new();
    let mut prefix = String::new();
    for word in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(word);
        out.push('/');
        out.push_str(&prefix);
        out.push_str(".slice");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: Option<&str>, systemd: bool) -> Result<Requested, CgroupError> {
        requested(p, "c1", systemd)
    }

    #[test]
    fn default_is_under_molt() {
        for p in [None, Some(""), Some("  ")] {
            let r = path(p, false).expect("default");
            assert_eq!(
                r,
                Requested {
                    path: "/molt/c1".into(),
                    relative: false,
                    default_parent: true
                }
            );
        }
        assert!(requested(None, "../x", false).is_err());
        assert!(requested(None, "", false).is_err());
    }

    #[test]
    fn plain_paths_are_normalised() {
        assert_eq!(path(Some("/a//b/./c/"), false).expect("abs").path, "/a/b/c");
        let rel = path(Some("x/y"), false).expect("rel");
        assert_eq!(
            (rel.path.as_str(), rel.relative, rel.default_parent),
            ("x/y", true, false)
        );
    }

    #[test]
    fn escapes_and_root_are_refused_naming_the_path() {
        for p in ["/a/../b", "..", "/", "/./", "a/\n"] {
            let e = path(Some(p), false).expect_err(p);
            assert!(e.to_string().contains(&format!("{p:?}")), "{e}");
        }
    }

    #[test]
    fn systemd_names_map_like_systemd() {
        let m = |s| path(Some(s), true).map(|r| r.path);
        assert_eq!(
            m("machine.slice:libpod:abc").expect("podman"),
            "/machine.slice/libpod-abc.scope"
        );
        assert_eq!(
            m("user-1000.slice:molt:c").expect("nested"),
            "/user.slice/user-1000.slice/molt-c.scope"
        );
        assert_eq!(
            m(":molt:c").expect("default slice"),
            "/system.slice/molt-c.scope"
        );
        assert_eq!(m("-.slice:molt:c").expect("root slice"), "/molt-c.scope");
        assert_eq!(
            m("system.slice::c").expect("no prefix"),
            "/system.slice/c.scope"
        );
        assert_eq!(
            m("a.slice:x:b.slice").expect("slice unit"),
            "/a.slice/b.slice"
        );
        for bad in [
            "/plain/path",
            "a.slice:b",
            "notaslice:p:n",
            "a--b.slice:p:n",
            "a.slice:p:",
            "a.slice:p:..:x",
            "a.slice:p:x/y",
        ] {
            assert!(m(bad).is_err(), "{bad} accepted");
        }
    }
}
