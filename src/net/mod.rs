//! Container network identity: veth set-up from annotations, snapshot and move between namespaces.
