# Shared by the guest-side lab scripts: the lab's fixed names and addresses, and small helpers.
# Sourced, never run. Everything here describes the guest only: the lab never exists on the host.

LAB_RUN=/run/lab                      # all lab state lives on the guest's /run tmpfs
LAB_STORAGE_DIR=$LAB_RUN/storage      # backing files of the storage host
LAB_NS_DIR=$LAB_RUN/ns                # persistent mount-namespace handles

LAB_BRIDGE=labbr0
LAB_SUBNET_PREFIX=10.77.0
LAB_STORAGE_IP=10.77.0.1
LAB_APP1_IP=10.77.0.11
LAB_APP2_IP=10.77.0.12
LAB_INITIATOR_IP=10.77.0.254          # the guest's root netns on the bridge: iscsid lives there

LAB_NFS_IMAGE=$LAB_STORAGE_DIR/nfs.img
LAB_NFS_EXPORT=$LAB_STORAGE_DIR/export
LAB_LUN_IMAGE=$LAB_STORAGE_DIR/lun1.img
LAB_ISCSI_IQN=iqn.2026-11.lab.molt:vol1
LAB_ISCSI_LUN=1
LAB_ISCSI_PORTAL=$LAB_STORAGE_IP:3260
LAB_ISCSI_DEVICE=/dev/disk/by-path/ip-$LAB_ISCSI_PORTAL-iscsi-$LAB_ISCSI_IQN-lun-$LAB_ISCSI_LUN

lab_log() { local up; read -r up _ </proc/uptime; printf 'lab: [%7s] %s\n' "$up" "$*" >&2; }
lab_die() { printf 'lab: ERROR: %s\n' "$*" >&2; exit 1; }

# Run a command "on" a lab host. storage also enters the mount namespace its daemons run in
# (it holds /proc/fs/nfsd of the storage netns and its own /var/lib/nfs).
lab_on() {
    local host=$1; shift
    case $host in
        storage) nsenter --net=/run/netns/storage --mount=$LAB_NS_DIR/storage.mnt -- "$@" ;;
        app1|app2) nsenter --net=/run/netns/$host -- "$@" ;;
        *) lab_die "unknown lab host '$host' (storage, app1, app2)" ;;
    esac
}
