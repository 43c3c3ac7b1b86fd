//! The health of `molt bundle status`: each container's state, and where the upgrade document
//! names a check for its role (the health gate `molt upgrade` would run), that check run now on
//! the container's host: one `molt bundle probe` per host, however many containers it holds.

use std::path::Path;
use std::time::Duration;

use super::doc::{Manifest, UpgradeDoc};
use super::plan::Observed;
use super::transport::Transport;
use crate::upgrade::Health;

/// What a host says about one check (`molt bundle probe`'s JSON).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Probed {
    pub id: String,
    pub healthy: bool,
    pub detail: String,
}

/// `ID=CHECK` of `molt bundle probe` (container ids hold no `=`).
pub fn parse_check(arg: &str) -> Result<(String, Health), String> {
    let (id, check) = arg.split_once('=').ok_or_else(|| format!("{arg:?}: use ID=CHECK (CHECK as --health: exec:CMD, tcp:PORT or running:DUR)"))?;
    Ok((id.to_string(), Health::parse(check).map_err(|e| format!("{id}: {e}"))?))
}

/// On the host: every check at once, each in a process of its own (`molt bundle probe --one`:
/// an exec check forks, which a threaded process must not do) given `timeout` (an exec that
/// hangs is reported, and left to the container's init to reap).
pub fn probe_here(root: &Path, checks: &[String], timeout: Duration) -> Vec<Probed> {
    let id_of = |arg: &String| arg.split_once('=').map_or(arg.clone(), |(id, _)| id.to_string());
    let mut running: Vec<(String, Result<std::process::Child, String>)> = checks
        .iter()
        .map(|arg| {
            let child = std::process::Command::new("/proc/self/exe")
                .arg("--root")
                .arg(root)
                .args(["bundle", "probe", "--one"])
                .arg(arg)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("the check could not run: molt bundle probe --one: {e}"));
            (id_of(arg), child)
        })
        .collect();
    let deadline = std::time::Instant::now() + timeout;
    running
        .iter_mut()
        .map(|(id, child)| {
            let bad = |detail: String| Probed { id: id.clone(), healthy: false, detail };
            let child = match child {
                Ok(c) => c,
                Err(e) => return bad(e.clone()),
            };
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
                return bad(format!("no result within {} s", timeout.as_secs_f64()));
            }
            let mut out = String::new();
            if let Some(o) = child.stdout.as_mut() {
                let _ = std::io::Read::read_to_string(o, &mut out);
            }
            serde_json::from_str(&out).unwrap_or_else(|_| {
                let mut err = String::new();
                if let Some(e) = child.stderr.as_mut() {
                    let _ = std::io::Read::read_to_string(e, &mut err);
                }
                bad(format!("the check could not run: {}", crate::logging::messages_of(&err).trim()))
            })
        })
        .collect()
}

/// One check, in this process's only thread.
pub fn probe_one(root: &Path, id: String, check: &Health) -> Probed {
    match crate::container::Container::load(root, &id).map_err(|e| e.to_string()).and_then(|c| crate::upgrade::check_now(&c, check)) {
        Ok(detail) => Probed { id, healthy: true, detail },
        Err(detail) => Probed { id, healthy: false, detail },
    }
}

/// The check of a role: its own, else the document's.
pub fn check_of<'a>(upgrade: Option<&'a UpgradeDoc>, role: &str) -> Option<&'a str> {
    let u = upgrade?;
    u.roles.get(role).and_then(|r| r.health.as_deref()).or(u.health.as_deref())
}

/// Each container's check run now on its host, in manifest order; None where no check ran (no
/// check named, not running, host unreachable). Hosts are asked in parallel, each once.
pub fn probe_all(manifest: &Manifest, hosts: &[(Transport, Option<String>)], observed: &[Observed], upgrade: Option<&UpgradeDoc>) -> Vec<Option<Result<String, String>>> {
    let wanted: Vec<Option<&str>> = manifest
        .containers
        .iter()
        .zip(observed)
        .map(|(c, o)| match o {
            Observed::Found { status, .. } if status == "running" => check_of(upgrade, &c.role),
            _ => None,
        })
        .collect();
    let per_host: Vec<Vec<(usize, Result<String, String>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .filter(|(_, down)| down.is_none())
            .map(|(t, _)| {
                let wanted = &wanted;
                s.spawn(move || {
                    let mine: Vec<(usize, String)> = manifest
                        .containers
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| c.host == t.name)
                        .filter_map(|(i, c)| wanted[i].map(|check| (i, format!("{}={check}", c.id))))
                        .collect();
                    if mine.is_empty() {
                        return vec![];
                    }
                    let results = probe_host(t, &mine.iter().map(|(_, a)| a.as_str()).collect::<Vec<_>>());
                    mine.iter()
                        .zip(results)
                        .map(|((i, _), r)| (*i, r))
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let mut all = vec![None; manifest.containers.len()];
    for (i, r) in per_host.into_iter().flatten() {
        all[i] = Some(r);
    }
    all
}

/// One `molt bundle probe ID=CHECK...` on `t`; a result per argument, in order.
fn probe_host(t: &Transport, args: &[&str]) -> Vec<Result<String, String>> {
    let fail = |why: String| args.iter().map(|_| Err(why.clone())).collect();
    let mut words = vec!["bundle", "probe"];
    words.extend(args);
    let out = match t.molt(&words) {
        Ok(o) => o,
        Err(e) => return fail(format!("the check could not run: {e}")),
    };
    if !out.status.success() {
        let why = crate::logging::messages_of(&String::from_utf8_lossy(&out.stderr));
        return fail(format!("the check could not run: host {}: molt bundle probe: {}", t.name, why.trim()));
    }
    let probed: Vec<Probed> = match serde_json::from_slice(&out.stdout) {
        Ok(p) => p,
        Err(e) => return fail(format!("the check could not run: host {}: molt bundle probe: not JSON: {e}", t.name)),
    };
    args.iter()
        .map(|a| {
            let id = a.split_once('=').map_or(*a, |(id, _)| id);
            match probed.iter().find(|p| p.id == id) {
                Some(p) if p.healthy => Ok(p.detail.clone()),
                Some(p) => Err(p.detail.clone()),
                None => Err(format!("the check could not run: host {} gave no result for {id}", t.name)),
            }
        })
        .collect()
}

/// A container's health as `status` shows it, and why: healthy (its check passed now),
/// unhealthy (its check failed now, or it does not run), running (it runs and no check is
/// named), unknown (its host or the check could not be reached).
pub fn health_of(observed: &Observed, check: Option<&str>, result: Option<&Result<String, String>>) -> (&'static str, String) {
    match (observed, result) {
        (Observed::Unreachable { .. }, _) => ("unknown", "host unreachable".into()),
        (Observed::NotFound, _) => ("unhealthy", "not found on its host".into()),
        (Observed::Found { status, .. }, _) if status != "running" => ("unhealthy", format!("{status}, not running")),
        (Observed::Found { .. }, None) => match check {
            None => ("running", "no check named (none in the upgrade document, or no upgrade document given)".into()),
            Some(c) => ("unknown", format!("{c}: not run")),
        },
        (Observed::Found { .. }, Some(Ok(note))) => ("healthy", format!("{}: {note}", check.unwrap_or("check"))),
        (Observed::Found { .. }, Some(Err(why))) if why.starts_with("the check could not run") => ("unknown", format!("{}: {why}", check.unwrap_or("check"))),
        (Observed::Found { .. }, Some(Err(why))) => ("unhealthy", format!("{}: {why}", check.unwrap_or("check"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(status: &str) -> Observed {
        Observed::Found { status: status.into(), version: Some("1.0.0".into()), bundle: None }
    }

    #[test]
    fn health_says_what_runs_and_what_its_check_found() {
        assert_eq!(health_of(&found("running"), Some("tcp:80"), Some(&Ok("port 80 accepts connections".into()))).0, "healthy");
        let (h, why) = health_of(&found("running"), Some("exec:false"), Some(&Err("`false` ended with Exited(1)".into())));
        assert_eq!(h, "unhealthy");
        assert!(why.starts_with("exec:false: "), "{why}");
        assert_eq!(health_of(&found("stopped"), Some("tcp:80"), None), ("unhealthy", "stopped, not running".into()));
        assert_eq!(health_of(&Observed::NotFound, None, None).0, "unhealthy");
        assert_eq!(health_of(&found("running"), None, None).0, "running");
        assert_eq!(health_of(&Observed::Unreachable { reason: "x".into() }, Some("tcp:80"), None).0, "unknown");
        assert_eq!(health_of(&found("running"), Some("tcp:80"), Some(&Err("the check could not run: ssh".into()))).0, "unknown");
    }

    #[test]
    fn probe_arguments_are_id_and_check() {
        assert_eq!(parse_check("web=tcp:8080"), Ok(("web".into(), Health::Tcp(8080))));
        assert_eq!(parse_check("db=exec:test -f /data/ok").map(|(_, h)| h), Ok(Health::Exec(vec!["test".into(), "-f".into(), "/data/ok".into()])));
        assert!(parse_check("web").is_err() && parse_check("web=http:80").unwrap_err().contains("web"));
    }
}
