//! The order in which the init enters its namespaces, where order is security: a user namespace
//! first (created by clone, or joined by path), and root in it before anything else, so every
//! other namespace is joined or created with the capabilities it grants and owned by it; the
//! namespaces given by path before the new ones, which unshare then makes.

use std::path::PathBuf;

use nix::sched::CloneFlags;

use super::InitError;
use crate::kernel::Kernel;

/// Joins `join` (the user namespace first, whatever the list's order), then unshares `unshare`.
/// `between` runs after the joins and before the unshare (the init reads its cgroups there,
/// before a new cgroup namespace hides their host names); its result is returned.
pub(super) fn enter<T>(
    k: &impl Kernel,
    join: &[(CloneFlags, PathBuf)],
    unshare: CloneFlags,
    new_user_ns: bool,
    between: impl FnOnce() -> T,
) -> Result<T, InitError> {
    if new_user_ns {
        become_root(k)?;
    }
    let (user, others): (Vec<_>, Vec<_>) = join.iter().partition(|(kind, _)| *kind == CloneFlags::CLONE_NEWUSER);
    for (kind, path) in user.into_iter().chain(others) {
        let f = std::fs::File::open(path).map_err(|e| InitError::new(format!("open namespace {}: {e}", path.display())))?;
        // A user namespace may be joined already: the helper that cloned a new pid namespace's
        // init entered it first (setns into one's own user namespace is EINVAL).
        if !(*kind == CloneFlags::CLONE_NEWUSER && k.is_own_ns(&f, "user")) {
            crate::logging::debug(&format!("namespace: join {kind:?} {}", path.display()));
            k.setns(&f, *kind, path).map_err(|e| InitError::new(format!("setns {}: {}", path.display(), e.desc())))?;
        }
        if *kind == CloneFlags::CLONE_NEWUSER {
            become_root(k)?;
        }
    }
    let got = between();
    if !unshare.is_empty() {
        crate::logging::debug(&format!("namespace: unshare {unshare:?}"));
        k.unshare(unshare).map_err(|e| InitError::new(format!("unshare namespaces {unshare:?}: {}", e.desc())))?;
    }
    Ok(got)
}

fn become_root(k: &impl Kernel) -> Result<(), InitError> {
    k.become_root().map_err(|e| InitError::new(format!("setresgid/setresuid 0 in the user namespace: {}", e.desc())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::recording::Recording;
    use std::path::Path;

    /// Namespace files that open (setns is the fake's): any readable file will do.
    fn files(tag: &str, kinds: &[CloneFlags]) -> (PathBuf, Vec<(CloneFlags, PathBuf)>) {
        let dir = std::env::temp_dir().join(format!("molt-seam-ns-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let join = kinds
            .iter()
            .map(|k| {
                let p = dir.join(crate::kernel::ns_name(*k));
                std::fs::write(&p, "").unwrap();
                (*k, p)
            })
            .collect();
        (dir, join)
    }

    #[test]
    fn a_user_namespace_given_by_path_is_joined_first_and_root_taken_in_it_before_the_others() {
        // Listed last on purpose: the order of the list must not matter.
        let (dir, join) = files("order", &[CloneFlags::CLONE_NEWNET, CloneFlags::CLONE_NEWIPC, CloneFlags::CLONE_NEWUSER]);
        let k = Recording::default();
        let unshare = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS;
        enter(&k, &join, unshare, false, || k.calls.borrow_mut().push("read-cgroups".into())).unwrap();
        let user = dir.join("user");
        let want = vec![
            format!("setns user {}", user.display()),
            "become-root".to_string(),
            format!("setns net {}", dir.join("net").display()),
            format!("setns ipc {}", dir.join("ipc").display()),
            "read-cgroups".to_string(),
            format!("unshare {unshare:?}"),
        ];
        assert_eq!(k.lines(), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn in_a_new_user_namespace_root_comes_before_any_join_or_unshare() {
        let (dir, join) = files("new", &[CloneFlags::CLONE_NEWNET]);
        let k = Recording::default();
        enter(&k, &join, CloneFlags::CLONE_NEWNS, true, || ()).unwrap();
        assert_eq!(k.pos("become-root"), 0, "{:?}", k.lines());
        assert!(k.pos("setns net") < k.pos("unshare"), "{:?}", k.lines());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_join_that_fails_stops_before_anything_is_created() {
        let (dir, join) = files("fail", &[CloneFlags::CLONE_NEWUSER, CloneFlags::CLONE_NEWNET]);
        let k = Recording::failing_at("setns net");
        let e = enter(&k, &join, CloneFlags::CLONE_NEWNS, false, || ()).unwrap_err();
        assert!(e.0.contains("setns") && e.0.contains("net"), "{e}");
        assert!(!k.has("unshare"), "{:?}", k.lines());
        let e = enter(&Recording::default(), &[(CloneFlags::CLONE_NEWNET, Path::new("/nonexistent/molt-ns").into())], CloneFlags::empty(), false, || ()).unwrap_err();
        assert!(e.0.contains("open namespace /nonexistent/molt-ns"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
