//! Container network identity: the veth from a host bridge into a new container (from
//! annotations), snapshotting a namespace's links, addresses and routes, and moving them to
//! another namespace for an upgrade (or back for a rollback). Talks rtnetlink directly.

mod error;
mod spec;

pub use error::NetError;
pub use spec::{
    check_ifname, host_veth_name, spec_from_annotations, IpCidr, NetSpec, ANNOTATION_ADDRESS,
    ANNOTATION_BRIDGE, ANNOTATION_GATEWAY,
};
