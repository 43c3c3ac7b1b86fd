//! Remote and local volumes attached once on the host, shared and counted, bind-mounted into rootfs.
//! This module owns parsing a config.json mount into a volume, attaching it at
//! `<root>/volumes/<key>/mnt` (NFS, iSCSI, block device, loop image), the per-volume users and
//! records, and taking volumes down again; the container code does the bind mount itself.

mod attach;
pub mod command;
mod error;
mod holders;
mod loopdev;
mod registry;
mod source;
mod spec;
mod sys;

pub use attach::Timeouts;
pub use error::VolumeError;
pub use registry::{AttachmentInfo, AttachmentState, Registry};
pub use source::{derive_key, Source, ISCSI_DEFAULT_PORT};
pub use spec::{from_mount, parse_mount, VolumeSpec, MKFS_OPTION};
