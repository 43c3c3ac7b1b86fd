//! Writing OCI resource limits: the plan (`plan/`) says which file gets which value in which
//! order; this runs it against the hierarchy that owns each controller.

use std::collections::BTreeSet;
use std::path::PathBuf;

use nix::errno::Errno;
use oci_spec::runtime::LinuxResources;

use super::dirs::enable_controllers;
use super::plan::{self, Absent, Step};
use super::{fsio, CgroupError, Cgroup, Version};

impl Cgroup {
    /// Writes every limit in `r` into the hierarchy that owns its controller.
    pub fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let version_of = |c: &str| self.route(c).map(|h| h.version);
        let steps = plan::plan(r, self.layout, &version_of)?;
        // v2 files appear only once the controller is enabled in every ancestor's subtree_control.
        if let Some(v2) = self.v2() {
            let mut needed = BTreeSet::new();
            for s in &steps {
                let ws: Vec<&plan::Write> = match s {
                    Step::One(w) => vec![w],
                    Step::EitherOrder(a, b) => vec![a, b],
                    Step::FirstPresent(alts) => alts.iter().collect(),
                    Step::Ignored(_) | Step::DeviceFilter(_) => vec![],
                };
                for w in ws {
                    if w.controller != "cgroup"
                        && self.route(&w.controller).map(|h| h.version) == Some(Version::V2)
                    {
                        needed.insert(w.controller.as_str());
                    }
                }
            }
            let needed: Vec<&str> = needed.into_iter().collect();
            enable_controllers(v2, &needed)?;
        }
        for step in &steps {
            self.run(step)?;
        }
        Ok(())
    }

    /// `molt update`: applies what `runc update` changes (see `plan::for_update`) and warns about
    /// the rest. Zero values are "not set" as in `apply`, so docker's whole structures change only
    /// what was asked.
    pub fn update(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let (mut r, ignored) = plan::for_update(r);
        if !ignored.is_empty() {
            crate::logging::warn(&format!(
                "update: not changed (set at create only, as with runc): {}",
                ignored.join(", ")
            ));
        }
        let cpu_v2 = self.route("cpu").filter(|h| h.version == Version::V2);
        if let (Some(h), Some(c)) = (cpu_v2, r.cpu_mut()) {
            let (quota, period) = (c.quota().unwrap_or(0), c.period().unwrap_or(0));
            if (quota == 0) != (period == 0) {
                let file = h.dir.join("cpu.max");
                let current = fsio::read(&file)?;
                let (q, p) = plan::keep_cpu_max(quota, period, &current).ok_or_else(|| {
                    CgroupError::Parse {
                        file: file.display().to_string(),
                        line: current.trim().to_string(),
                        reason: "expected \"$QUOTA $PERIOD\"".to_string(),
                    }
                })?;
                c.set_quota(Some(q));
                c.set_period(Some(p));
            }
        }
        self.apply(&r)
    }

    fn run(&self, step: &Step) -> Result<(), CgroupError> {
        match step {
            Step::One(w) => self.write(w),
            Step::EitherOrder(a, b) => match self.write(a) {
                Err(e) if e.errno() == Some(Errno::EINVAL) => {
                    self.write(b)?;
                    self.write(a)
                }
                Err(e) => Err(e),
                Ok(()) => self.write(b),
            },
            Step::FirstPresent(alts) => {
                let found = alts
                    .iter()
                    .find(|w| self.file_of(w).is_some_and(|p| p.exists()));
                // None present: write the last (the long-standing name) for an error naming it.
                match found.or(alts.last()) {
                    Some(w) => self.write(w),
                    None => Ok(()),
                }
            }
            Step::Ignored(msg) => {
                crate::logging::warn(&format!("cgroup: {msg}"));
                Ok(())
            }
            Step::DeviceFilter(rules) => {
                let v2 = self.v2().ok_or_else(|| CgroupError::NoController {
                    field: "linux.resources.devices".to_string(),
                    controller: "cgroup v2".to_string(),
                })?;
                super::device_filter::attach(&v2.dir, rules)
            }
        }
    }

    fn file_of(&self, w: &plan::Write) -> Option<PathBuf> {
        self.dir_for(&w.controller).map(|d| d.join(&w.file))
    }

    fn write(&self, w: &plan::Write) -> Result<(), CgroupError> {
        let path = self.file_of(w).ok_or_else(|| CgroupError::NoController {
            field: w.field.clone(),
            controller: w.controller.clone(),
        })?;
        match fsio::write(&path, &w.value, &w.field) {
            Err(e) if e.errno() == Some(Errno::ENOENT) => match w.when_absent {
                Absent::Fail => Err(e),
                Absent::Skip => Ok(()),
                Absent::Warn => {
                    crate::logging::warn(&format!(
                        "cgroup: {} = {} ignored: this kernel has no {}",
                        w.field,
                        w.value,
                        path.display()
                    ));
                    Ok(())
                }
            },
            other => other,
        }
    }
}
