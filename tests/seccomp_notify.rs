//! SCMP_ACT_NOTIFY as runtime-spec describes it: molt sends the filter's listener fd and the
//! container process state to the agent at `linux.seccomp.listenerPath`, and the agent decides
//! the trapped calls. The agent here answers mkdir with EPERM, for the init and for `exec`.

mod common;
use common::*;

use serde_json::{json, Value};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

#[repr(C)]
#[derive(Default)]
struct SeccompData {
    nr: i32,
    arch: u32,
    instruction_pointer: u64,
    args: [u64; 6],
}

#[repr(C)]
#[derive(Default)]
struct Notif {
    id: u64,
    pid: u32,
    flags: u32,
    data: SeccompData,
}

#[repr(C)]
struct NotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

const NOTIF_RECV: u64 = 0xC050_2100;
const NOTIF_SEND: u64 = 0xC018_2101;

/// One agent connection: the state document, then every notification answered EPERM until the
/// filter has no process left. Returns the document and the syscall numbers it was asked about.
fn serve(conn: std::os::unix::net::UnixStream) -> (Value, Vec<i32>) {
    let mut buf = vec![0u8; 1 << 16];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let (n, fd) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), nix::sys::socket::MsgFlags::empty()).expect("recvmsg");
        let fd = msg.cmsgs().ok().into_iter().flatten().find_map(|c| match c {
            nix::sys::socket::ControlMessageOwned::ScmRights(f) => f.first().copied(),
            _ => None,
        });
        (msg.bytes, fd.expect("the listener fd came with the state"))
    };
    // SAFETY: the fd just arrived by SCM_RIGHTS and is ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let doc: Value = serde_json::from_slice(&buf[..n]).expect("the container process state is JSON");
    let mut asked = vec![];
    loop {
        let mut p = [nix::libc::pollfd { fd: fd.as_raw_fd(), events: nix::libc::POLLIN, revents: 0 }];
        // SAFETY: poll on one pollfd we own.
        let r = unsafe { nix::libc::poll(p.as_mut_ptr(), 1, 10_000) };
        if r <= 0 || p[0].revents & nix::libc::POLLIN == 0 {
            break;
        }
        let mut req = Notif::default();
        // SAFETY: the kernel fills a zeroed struct of its layout.
        if unsafe { nix::libc::ioctl(fd.as_raw_fd(), NOTIF_RECV as _, &mut req) } != 0 {
            continue;
        }
        asked.push(req.data.nr);
        let resp = NotifResp { id: req.id, val: 0, error: -nix::libc::EPERM, flags: 0 };
        // SAFETY: a response of the kernel's layout for the request just received.
        unsafe { nix::libc::ioctl(fd.as_raw_fd(), NOTIF_SEND as _, &resp) };
    }
    (doc, asked)
}

#[test]
fn a_notify_profile_sends_its_listener_to_the_agent_which_decides_the_call() {
    require_root!();
    let dir = TempDir::new("molt-agent");
    let sock = dir.join("agent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    // Each connection served on its own thread, as an agent must: the init's filter lives on.
    let agent = std::thread::spawn(move || {
        let serving: Vec<_> = (0..2)
            .map(|_| {
                let (conn, _) = listener.accept().expect("the runtime connects to the agent");
                std::thread::spawn(move || serve(conn))
            })
            .collect();
        let mut done = serving.into_iter().map(|t| t.join().expect("agent thread"));
        (done.next().unwrap(), done.next().unwrap())
    });
    let mut b = Bundle::new(&["sh", "-c", "mkdir /tmp/a 2>&1; echo rc=$?; sleep 1000"]);
    b.tmpfs("/tmp");
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": sock, "listenerMetadata": "agent-says-hello",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    let root = Root::new();
    let id = unique("notify");
    root.ok(&["run", "--detach", "--bundle", &b.write(), &id]);
    // exec in the same container: a second listener, the same agent.
    let out = root.molt(&["exec", &id, "sh", "-c", "mkdir /tmp/b 2>&1; echo rc=$?"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("Operation not permitted") && stdout_of(&out).contains("rc=1"), "{}", stdout_of(&out));
    let pid = root.state(&id)["pid"].as_i64().unwrap();
    root.ok(&["kill", &id, "KILL"]);
    assert!(wait_until(10, || root.state(&id)["status"] == "stopped"));
    let ((doc, asked), (doc2, asked2)) = agent.join().expect("agent");
    assert_eq!(doc["fds"], json!(["seccompFd"]), "{doc}");
    assert_eq!((doc["metadata"].as_str(), doc["pid"].as_i64()), (Some("agent-says-hello"), Some(pid)), "{doc}");
    assert_eq!(doc["state"]["id"], id.as_str(), "{doc}");
    assert!(!asked.is_empty() && !asked2.is_empty(), "the agent decided the mkdir calls: {asked:?} {asked2:?}");
    assert_eq!(doc2["state"]["id"], id.as_str(), "{doc2}");
    // No agent named: refused at create, never a process hanging on its first trapped call.
    let mut bad = Bundle::new(&["true"]);
    bad.config["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]});
    let out = root.molt(&["create", "--bundle", &bad.write(), &unique("noagent")]);
    assert!(!out.status.success());
    let msg = stderr_of(&out).lines().filter_map(logrus_text).map(|(_, m)| m).collect::<Vec<_>>().join("\n");
    assert!(msg.contains("listenerPath"), "{msg}");
}
