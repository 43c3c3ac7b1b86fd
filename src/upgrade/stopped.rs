//! An upgrade of a container whose application has stopped (`molt upgrade --allow-stopped`:
//! what a bundle's rollback-batch asks for a container whose new version died after its
//! upgrade). The steps are the same; only what a stopped container no longer has differs: no
//! process to take sockets or stdio from, no network namespace to join or links to move. So the
//! new version gets the container's address afresh at create (its `io.molt.net.*` annotations,
//! as `create` gives it), its volumes by the usual hand-over from their host attachments, and
//! the id, cgroup path and hostname as always. A rollback leaves the old record stopped, as it
//! was, with its volumes.

use std::time::Duration;

use super::rollback::Back;
use super::steps::Run;
use crate::container::delete::stop_all;
use crate::container::Container;

/// move-network's note when the old version had stopped.
pub(super) const NETWORK_NOTE: &str = "the old version had stopped, its network namespace with it: the new one got the container's address at create";

/// Step 1 when the old version has stopped: whatever is left of it (a process outside its pid
/// namespace) goes first, with the network namespace it held; then the new version is created
/// held before start, with a network of its own.
pub(super) fn create_new(r: &mut Run, old: &Container) -> Result<String, String> {
    if !stop_all(old, Duration::from_secs(10)) {
        return Err(format!("processes of the stopped container {} still alive after SIGKILL", old.state.id));
    }
    let (next_id, new_bundle) = (r.rec.next_id.clone(), r.rec.new_bundle.clone());
    let new = r.create_held(&next_id, &new_bundle, None, r.rec.new_cgroup_temp.clone(), r.opts.systemd_cgroup)?;
    let net = new.state.net.as_ref().map(|a| format!("; its address on bridge {} (host veth {})", a.bridge, a.host_veth)).unwrap_or_default();
    Ok(format!("{next_id} created from {}, held before start; the old version had stopped: nothing taken from it{net}", new_bundle.display()))
}

/// Undo of stop-old when the old version had stopped before the upgrade: it is not started
/// again (it had died). The failed new version stops and its network, made for it at create,
/// goes; the old record gets back the volumes hand-over gave away (their host attachments stay
/// with the id).
pub(super) fn leave_stopped(b: &mut Back) -> Result<(), String> {
    let (root, rec) = (b.run.root, b.run.rec.clone());
    if let Ok(mut failed) = Container::load(root, &rec.next_id) {
        if !stop_all(&failed, Duration::from_secs(10)) {
            return Err(format!("processes of {} still alive after SIGKILL", failed.state.id));
        }
        if let Some(att) = failed.state.net.take() {
            crate::net::detach(&att).map_err(|e| format!("remove the failed version's network: {e}"))?;
            failed.save().map_err(|e| e.to_string())?;
        }
    }
    let mut old = Container::load(root, &rec.id).map_err(|e| format!("the old container's record is gone: {e}"))?;
    for key in &rec.volumes {
        if !old.state.volumes.contains(key) {
            old.state.volumes.push(key.clone());
        }
    }
    old.save().map_err(|e| e.to_string())?;
    b.kept = old.state.volumes.clone();
    Ok(())
}
