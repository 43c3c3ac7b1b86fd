//! Remote and local volumes attached once on the host, shared and counted, bind-mounted into rootfs.
