//! `exec --cgroup`: the sub-cgroup of the container's cgroup an exec'd process joins instead of
//! the container's own, as runc's `[CONTROLLER[,CONTROLLER]:]PATH`. One PATH alone applies to
//! every hierarchy (the only form on pure v2); CONTROLLER:PATH to the v1 hierarchy binding it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Cgroup, CgroupError, Version};

/// The parsed `--cgroup` arguments: a path below the container's cgroup, for every hierarchy
/// or per v1 controller. Paths are kept normalized, as components below the container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubCgroup {
    All(PathBuf),
    PerController(BTreeMap<String, PathBuf>),
}

fn bad(arg: &str, reason: impl Into<String>) -> CgroupError {
    CgroupError::SubCgroup { arg: arg.to_string(), reason: reason.into() }
}

/// `path` below the container's cgroup: "/" and "" are the cgroup itself, a leading "/" is the
/// container's root (as runc's path.Join), ".." may not climb out of it.
fn below(arg: &str, path: &str) -> Result<PathBuf, CgroupError> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop().ok_or_else(|| bad(arg, format!("{path:?} is not a sub-cgroup of the container's cgroup")))?;
            }
            p => parts.push(p),
        }
    }
    Ok(parts.iter().collect())
}

impl SubCgroup {
    /// runc's rules: a PATH alone only as the one argument; a controller given twice keeps the
    /// last PATH. Unlike runc, ":PATH" beside CONTROLLER:PATH arguments is refused (runc drops
    /// the latter), and a PATH that leaves the container's cgroup by ".." is refused however it
    /// is spelled (runc compares string prefixes, so "../ab" passes for a cgroup "a").
    pub fn parse(args: &[String]) -> Result<Option<SubCgroup>, CgroupError> {
        let mut per = BTreeMap::new();
        let mut all = None;
        for arg in args {
            let fields: Vec<&str> = arg.splitn(3, ':').collect();
            match fields[..] {
                [path] | ["", path] if args.len() == 1 => all = Some(below(arg, path)?),
                [_] | ["", _] => return Err(bad(arg, "give CONTROLLER:PATH when --cgroup is repeated")),
                [controllers, path] => {
                    let path = below(arg, path)?;
                    for c in controllers.split(',') {
                        if c.is_empty() {
                            return Err(bad(arg, "empty controller name"));
                        }
                        per.insert(c.to_string(), path.clone());
                    }
                }
                _ => return Err(bad(arg, "not [CONTROLLER[,CONTROLLER]:]PATH")),
            }
        }
        Ok(match all {
            Some(p) => Some(SubCgroup::All(p)),
            None if per.is_empty() => None,
            None => Some(SubCgroup::PerController(per)),
        })
    }
}

impl Cgroup {
    /// This cgroup with each hierarchy's directory moved down to `sub`'s path: every hierarchy
    /// for a PATH alone; for CONTROLLER:PATH the v1 hierarchies binding a named controller (the
    /// others stay at the container's cgroup). Nothing is created: joining a sub-cgroup that does
    /// not exist fails when the process is added, as with runc.
    pub fn sub(&self, sub: &SubCgroup) -> Result<Cgroup, CgroupError> {
        let mut c = self.clone();
        match sub {
            SubCgroup::All(path) => {
                for h in &mut c.hierarchies {
                    h.dir.push(path);
                }
            }
            SubCgroup::PerController(per) => {
                for (controller, path) in per {
                    let bound = |cs: &[String]| cs.iter().any(|c| c == controller);
                    if !c.hierarchies.iter().any(|h| h.version == Version::V1 && bound(&h.controllers)) {
                        let hint = if c.hierarchies.iter().all(|h| h.version == Version::V2) {
                            " (cgroup v2 has one hierarchy for all controllers: give the PATH alone)"
                        } else {
                            ""
                        };
                        return Err(bad(&format!("{controller}:/{}", path.display()), format!("unknown controller {controller}: no mounted cgroup v1 hierarchy binds it{hint}")));
                    }
                }
                for h in c.hierarchies.iter_mut().filter(|h| h.version == Version::V1) {
                    let mut paths = per.iter().filter(|(ctl, _)| h.controllers.contains(ctl)).map(|(_, p)| p);
                    let Some(first) = paths.next() else { continue };
                    if let Some(other) = paths.find(|p| *p != first) {
                        return Err(bad(
                            &h.controllers.join(","),
                            format!("{} and {} for controllers of one hierarchy ({})", first.display(), other.display(), h.mount_point.display()),
                        ));
                    }
                    h.dir.push(first);
                }
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::{parse_mountinfo, parse_proc_cgroup};

    fn args(a: &[&str]) -> Result<Option<SubCgroup>, CgroupError> {
        SubCgroup::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn hybrid() -> Cgroup {
        let mounts = parse_mountinfo(
            "32 31 0:29 / /cg/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             35 31 0:32 / /cg/memory rw - cgroup cgroup rw,memory\n\
             41 31 0:38 / /cg/unified rw - cgroup2 cgroup2 rw\n",
        )
        .expect("fixture");
        let own = parse_proc_cgroup("2:memory:/\n1:cpu,cpuacct:/\n0::/\n").expect("fixture");
        Cgroup::resolve_on(&mounts, &own, Some("/c"), "c", false).expect("resolve")
    }

    fn dirs(c: &Cgroup) -> Vec<String> {
        c.hierarchies().iter().map(|h| h.dir.display().to_string()).collect()
    }

    #[test]
    fn paths_are_normalized_below_the_container_and_never_above() {
        assert_eq!(args(&[]).unwrap(), None);
        assert_eq!(args(&["/"]).unwrap(), Some(SubCgroup::All(PathBuf::new())));
        assert_eq!(args(&["/a/./b//"]).unwrap(), Some(SubCgroup::All(PathBuf::from("a/b"))));
        assert_eq!(args(&["a/../b"]).unwrap(), Some(SubCgroup::All(PathBuf::from("b"))));
        assert_eq!(args(&[":x"]).unwrap(), Some(SubCgroup::All(PathBuf::from("x"))));
        for escape in ["..", "a/../..", "/../c2", "memory:.."] {
            let e = args(&[escape]).unwrap_err().to_string();
            assert!(e.contains("not a sub-cgroup"), "{escape}: {e}");
        }
    }

    #[test]
    fn controllers_split_on_commas_and_the_last_path_of_one_wins() {
        let p = args(&["cpu,cpuacct:s", "memory:m", "memory:n"]).unwrap();
        let want: BTreeMap<String, PathBuf> =
            [("cpu", "s"), ("cpuacct", "s"), ("memory", "n")].iter().map(|(c, p)| (c.to_string(), PathBuf::from(p))).collect();
        assert_eq!(p, Some(SubCgroup::PerController(want)));
        for wrong in [&["a", "b"][..], &["a", "memory:b"], &["a:b:c"], &[",cpu:x"]] {
            assert!(args(wrong).is_err(), "{wrong:?} accepted");
        }
    }

    #[test]
    fn a_path_alone_moves_every_hierarchy_a_controller_only_its_own() {
        let cg = hybrid();
        let all = cg.sub(&args(&["s"]).unwrap().unwrap()).unwrap();
        assert_eq!(dirs(&all), ["/cg/cpu,cpuacct/c/s", "/cg/memory/c/s", "/cg/unified/c/s"]);
        let mem = cg.sub(&args(&["memory:m"]).unwrap().unwrap()).unwrap();
        assert_eq!(dirs(&mem), ["/cg/cpu,cpuacct/c", "/cg/memory/c/m", "/cg/unified/c"]);
        let e = cg.sub(&args(&["pids:p"]).unwrap().unwrap()).unwrap_err().to_string();
        assert!(e.contains("unknown controller pids"), "{e}");
        let e = cg.sub(&args(&["cpu:a", "cpuacct:b"]).unwrap().unwrap()).unwrap_err().to_string();
        assert!(e.contains("one hierarchy"), "{e}");
        assert!(cg.sub(&args(&["cpu:a", "cpuacct:a"]).unwrap().unwrap()).is_ok());
    }

    #[test]
    fn pure_v2_takes_the_path_alone() {
        let mounts = parse_mountinfo("41 31 0:38 / /nonexistent-cg rw - cgroup2 cgroup2 rw\n").expect("fixture");
        let own = parse_proc_cgroup("0::/\n").expect("fixture");
        let cg = Cgroup::resolve_on(&mounts, &own, Some("/c"), "c", false).expect("resolve");
        assert_eq!(dirs(&cg.sub(&args(&["s/t"]).unwrap().unwrap()).unwrap()), ["/nonexistent-cg/c/s/t"]);
        let e = cg.sub(&args(&["memory:m"]).unwrap().unwrap()).unwrap_err().to_string();
        assert!(e.contains("unknown controller memory") && e.contains("give the PATH alone"), "{e}");
    }
}
