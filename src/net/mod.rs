//! Container network identity: the veth from a host bridge into a new container (from
//! annotations), snapshotting a namespace's links, addresses and routes, and moving them to
//! another namespace for an upgrade (or back for a rollback). Talks rtnetlink directly.
//!
//! Every operation on another namespace opens its netlink socket there from a helper thread
//! (`netns.rs`); no thread of the caller ever changes namespace.

mod announce;
mod attach;
mod error;
mod hold;
mod identity;
mod netlink;
mod netns;
mod spec;

pub use attach::{attach, detach, set_lo_up, Attachment, CONTAINER_IF};
pub use error::NetError;
pub use identity::{
    move_host_device, move_links, snapshot, AddrIdentity, LinkIdentity, RouteIdentity,
};
pub use spec::{
    check_ifname, host_veth_name, spec_from_annotations, IpCidr, NetSpec, ANNOTATION_ADDRESS,
    ANNOTATION_BRIDGE, ANNOTATION_GATEWAY,
};
