//! Listening sockets molt owns for a container (annotation `io.molt.listen`): created in the
//! container's namespaces before its process starts and passed to it by systemd's
//! socket-activation protocol; on upgrade the same sockets go from the old application to the new
//! one, so connections that arrive during the swap wait in the accept queue instead of being refused.
//! A unix socket's file goes with it: a copy of its mount in the old container is attached at the
//! same path in the new one, which a tmpfs or a rootfs of its own would otherwise lack.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const ANNOTATION: &str = "io.molt.listen";
/// The first fd of the socket-activation protocol (SD_LISTEN_FDS_START).
pub const FIRST_FD: RawFd = 3;
/// listen(2) backlog: the kernel caps it at net.core.somaxconn.
const BACKLOG: i32 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Addr {
    Tcp(SocketAddr),
    /// A path inside the container.
    Unix(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Its name in LISTEN_FDNAMES.
    pub name: String,
    pub addr: Addr,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.addr {
            Addr::Tcp(a) => write!(f, "tcp:{a}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("annotation {ANNOTATION}: entry {entry:?}: {reason}")]
    Parse { entry: String, reason: String },
    #[error("listening socket {endpoint}: {step}: {source}")]
    Socket { endpoint: String, step: &'static str, source: std::io::Error },
}

/// `[NAME=]tcp:ADDR:PORT` or `[NAME=]unix:/PATH`, comma-separated; IPv6 as `tcp:[::]:8080`.
pub fn parse(text: &str) -> Result<Vec<Endpoint>, ListenError> {
    let mut out: Vec<Endpoint> = vec![];
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let err = |reason: &str| ListenError::Parse { entry: entry.to_string(), reason: reason.to_string() };
        let (name, spec) = match entry.split_once('=') {
            Some((n, s)) => (Some(n.trim()), s.trim()),
            None => (None, entry),
        };
        let addr = if let Some(a) = spec.strip_prefix("tcp:") {
            let a: SocketAddr = a.parse().map_err(|_| err("not ADDR:PORT (IPv6 in brackets: [::]:8080)"))?;
            if a.port() == 0 {
                return Err(err("port 0 would pick a new port for every container; name the port"));
            }
            Addr::Tcp(a)
        } else if let Some(p) = spec.strip_prefix("unix:") {
            let p = PathBuf::from(p);
            if !p.is_absolute() || p.as_os_str().len() >= 108 {
                return Err(err("a unix socket path must be absolute (inside the container) and shorter than 108 bytes"));
            }
            Addr::Unix(p)
        } else {
            return Err(err("use tcp:ADDR:PORT or unix:/PATH"));
        };
        let name = match name {
            Some(n) if n.is_empty() || n.len() > 255 || n.chars().any(|c| c == ':' || c.is_control()) => {
                return Err(err("a name must be 1 to 255 characters without ':' (LISTEN_FDNAMES)"))
            }
            Some(n) => n.to_string(),
            None => match &addr {
                Addr::Tcp(a) => format!("tcp-{}", a.port()),
                Addr::Unix(p) => format!("unix-{}", p.file_name().map(|f| f.to_string_lossy()).unwrap_or_default()),
            },
        };
        if out.iter().any(|e| e.addr == addr) {
            return Err(err("listed twice"));
        }
        out.push(Endpoint { name, addr });
    }
    Ok(out)
}

pub fn from_spec(spec: &oci_spec::runtime::Spec) -> Result<Vec<Endpoint>, ListenError> {
    match spec.annotations().as_ref().and_then(|a| a.get(ANNOTATION)) {
        Some(text) => parse(text),
        None => Ok(vec![]),
    }
}

fn last_os(endpoint: &Endpoint, step: &'static str) -> ListenError {
    ListenError::Socket { endpoint: endpoint.to_string(), step, source: std::io::Error::last_os_error() }
}

fn set_int(fd: RawFd, level: i32, opt: i32, v: i32) -> i32 {
    // SAFETY: setsockopt with a pointer to a live int of the right size.
    unsafe { libc::setsockopt(fd, level, opt, &v as *const i32 as *const libc::c_void, std::mem::size_of::<i32>() as u32) }
}

/// A socket handed over to a new container: molt's fd of it and, for a unix socket, a detached
/// mount of its file in the old container (open_tree), to attach at the path in the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handed {
    pub socket: RawFd,
    pub file: Option<RawFd>,
}

/// In the init, after the switch to its root: make the handed-over unix socket reachable at its
/// path by attaching `file` (a detached mount of the socket's file) there. Nothing is done when
/// the path already is that file (a volume or a rootfs both versions share); a stale socket file
/// is covered; anything else in the way is an error. A missing path is made as a socket inode
/// (mknod), so what outlives the container in a rootfs on the host is a stale socket file, which
/// a later `create` replaces.
pub fn place_file(ep: &Endpoint, file: RawFd) -> Result<(), ListenError> {
    use crate::mount_target::{self, Links, Make};
    let Addr::Unix(path) = &ep.addr else { return Ok(()) };
    let fail = |step: &'static str, e: String| ListenError::Socket { endpoint: ep.to_string(), step, source: std::io::Error::other(e) };
    let ino = |fd: RawFd| nix::sys::stat::fstat(fd).map(|st| (st.st_dev, st.st_ino, st.st_mode & libc::S_IFMT));
    let root = mount_target::RootDir::open(Path::new("/")).map_err(|e| fail("open the root", e))?;
    let target = mount_target::open_target(&root, path, Make::Socket, Links::Follow).map_err(|e| fail("socket file", e))?;
    let (want, here) = (ino(file), ino(target.fd.as_raw_fd()));
    match (want, here) {
        (Ok((dev, ino, _)), Ok((d, i, _))) if (dev, ino) == (d, i) => return Ok(()),
        (_, Ok((_, _, kind))) if kind != libc::S_IFSOCK => {
            return Err(fail("socket file", format!("{} is in the way and is not a socket", path.display())))
        }
        _ => {}
    }
    // SAFETY: F_DUPFD_CLOEXEC of an fd inherited from molt; the result is checked, then owned.
    let dup = unsafe { libc::fcntl(file, libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(last_os(ep, "dup the old socket file"));
    }
    // SAFETY: a fresh fd.
    let tree = unsafe { OwnedFd::from_raw_fd(dup) };
    mount_target::attach(tree, &target).map(|_| ()).map_err(|e| fail("attach the old socket file", e))
}

/// A new listening socket in the caller's network (and, for unix, mount) namespace. TCP sockets
/// may bind an address the namespace does not hold yet (IP_FREEBIND): in `--network move` the
/// address arrives with the veth after the socket exists.
pub fn open(ep: &Endpoint) -> Result<OwnedFd, ListenError> {
    let domain = match &ep.addr {
        Addr::Tcp(SocketAddr::V4(_)) => libc::AF_INET,
        Addr::Tcp(SocketAddr::V6(_)) => libc::AF_INET6,
        Addr::Unix(_) => libc::AF_UNIX,
    };
    // SAFETY: plain socket(2); the result is owned right away.
    let raw = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(last_os(ep, "socket"));
    }
    // SAFETY: `raw` is a fresh fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let bound = match &ep.addr {
        Addr::Tcp(a) => {
            set_int(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
            match a {
                SocketAddr::V4(_) => set_int(raw, libc::IPPROTO_IP, libc::IP_FREEBIND, 1),
                SocketAddr::V6(_) => set_int(raw, libc::IPPROTO_IPV6, libc::IPV6_FREEBIND, 1),
            };
            let sa = nix::sys::socket::SockaddrStorage::from(*a);
            nix::sys::socket::bind(raw, &sa).map_err(std::io::Error::from)
        }
        Addr::Unix(p) => bind_unix(raw, p),
    };
    bound.map_err(|source| ListenError::Socket { endpoint: ep.to_string(), step: "bind", source })?;
    // SAFETY: listen on the socket created above.
    if unsafe { libc::listen(raw, BACKLOG) } != 0 {
        return Err(last_os(ep, "listen"));
    }
    Ok(fd)
}

/// Parent directories are made and a stale socket file is replaced, as systemd does for its
/// socket units; anything else at the path is an error. The socket is open to every user (0666).
fn bind_unix(fd: RawFd, path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "a file that is not a socket is in the way")),
        Err(_) => {}
    }
    let sa = nix::sys::socket::UnixAddr::new(path).map_err(std::io::Error::from)?;
    nix::sys::socket::bind(fd, &sa).map_err(std::io::Error::from)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
}

/// Whether `fd` is a listening socket bound to the endpoint's address.
pub fn is_listening_on(fd: RawFd, ep: &Endpoint) -> bool {
    use nix::sys::socket::{getsockname, getsockopt, sockopt, SockaddrLike, SockaddrStorage};
    // SAFETY: the fd is borrowed for the duration of the two queries only.
    let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    if !getsockopt(&bfd, sockopt::AcceptConn).unwrap_or(false) {
        return false;
    }
    let Ok(name) = getsockname::<SockaddrStorage>(fd) else { return false };
    match &ep.addr {
        Addr::Tcp(SocketAddr::V4(a)) => name.as_sockaddr_in().is_some_and(|s| std::net::SocketAddrV4::from(*s) == *a),
        Addr::Tcp(SocketAddr::V6(a)) => name.as_sockaddr_in6().is_some_and(|s| s.ip() == *a.ip() && s.port() == a.port()),
        Addr::Unix(p) => name.family() == Some(nix::sys::socket::AddressFamily::Unix)
            && name.as_unix_addr().and_then(|u| u.path()).is_some_and(|got| got == p.as_path()),
    }
}

/// A handle on another process for taking duplicates of its fds (pidfd_open + pidfd_getfd,
/// Linux 5.6; needs ptrace rights over it) and for waiting for its exit.
pub struct Pidfd(OwnedFd);

impl Pidfd {
    pub fn open(pid: i32) -> std::io::Result<Pidfd> {
        // SAFETY: a raw system call whose result is checked and owned at once.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if pidfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh pidfd owned here.
        Ok(Pidfd(unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) }))
    }

    /// Waits up to `timeout` for the process to exit (the pidfd turns readable then).
    pub fn wait_exit(&self, timeout: std::time::Duration) {
        let mut p = libc::pollfd { fd: self.0.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: poll(2) on one pollfd we own; an error or EINTR just ends the wait early.
        unsafe { libc::poll(&mut p, 1, ms) };
    }

    /// A duplicate of the process's `fd` (close-on-exec).
    pub fn take(&self, fd: RawFd) -> std::io::Result<OwnedFd> {
        // SAFETY: a raw system call whose result is checked and owned at once.
        let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.0.as_raw_fd(), fd, 0) };
        if got < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: pidfd_getfd returned a new fd for us alone.
        Ok(unsafe { OwnedFd::from_raw_fd(got as RawFd) })
    }
}

/// The listening sockets for `eps` that any of `pids` holds (the app's own or the ones molt gave
/// it), duplicated into this process; None where no process holds one.
pub fn take(pids: &[i32], eps: &[Endpoint]) -> Vec<Option<OwnedFd>> {
    let mut found: Vec<Option<OwnedFd>> = eps.iter().map(|_| None).collect();
    let mut seen = std::collections::HashSet::new();
    for &pid in pids {
        if found.iter().all(Option::is_some) {
            break;
        }
        let (Ok(fds), Ok(pidfd)) = (crate::procfs::fds(pid), Pidfd::open(pid)) else { continue };
        for (n, path) in fds {
            let Ok(link) = std::fs::read_link(&path) else { continue };
            let link = link.to_string_lossy().to_string();
            if !link.starts_with("socket:[") || !seen.insert(link) {
                continue;
            }
            let Ok(fd) = pidfd.take(n) else { continue };
            if let Some(i) = eps.iter().enumerate().position(|(i, ep)| found[i].is_none() && is_listening_on(fd.as_raw_fd(), ep)) {
                found[i] = Some(fd);
            }
        }
    }
    found
}

/// The connections waiting in a TCP listening socket's accept queue (TCP_INFO's tcpi_unacked,
/// which the kernel fills with the backlog for a socket in LISTEN state).
pub fn accept_queue(fd: RawFd) -> Option<u32> {
    let mut info = [0u8; 104];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let r = unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, info.as_mut_ptr() as *mut libc::c_void, &mut len) };
    // struct tcp_info: 8 one-byte fields, then u32 rto, ato, snd_mss, rcv_mss, unacked (offset 24).
    if r != 0 || len < 28 {
        return None;
    }
    Some(u32::from_ne_bytes([info[24], info[25], info[26], info[27]]))
}

/// In the init, just before execve: the sockets go to fds 3, 4, ... (clearing close-on-exec) and
/// the environment gets LISTEN_FDS, LISTEN_PID (this process, which execve keeps) and
/// LISTEN_FDNAMES, replacing any the config had.
pub fn install(fds: &[OwnedFd], names: &[String], env: &mut Vec<String>) -> std::io::Result<()> {
    if fds.is_empty() {
        return Ok(());
    }
    let n = fds.len() as RawFd;
    // First out of the way of the targets, then into place: a source may sit on a target number.
    let mut high = vec![];
    for fd in fds {
        // SAFETY: F_DUPFD_CLOEXEC returns a new fd owned by `high`.
        let d = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, FIRST_FD + n) };
        if d < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd.
        high.push(unsafe { OwnedFd::from_raw_fd(d) });
    }
    for (i, fd) in high.iter().enumerate() {
        // SAFETY: dup2 onto a number in the protocol's range; what was there is replaced.
        if unsafe { libc::dup2(fd.as_raw_fd(), FIRST_FD + i as RawFd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    env.retain(|e| !["LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES="].iter().any(|p| e.starts_with(p)));
    env.push(format!("LISTEN_FDS={n}"));
    env.push(format!("LISTEN_PID={}", std::process::id()));
    env.push(format!("LISTEN_FDNAMES={}", names.join(":")));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_default_and_given_names() {
        let eps = parse("tcp:0.0.0.0:8080, web=tcp:[::1]:443,unix:/run/app.sock").unwrap();
        assert_eq!(eps.len(), 3);
        assert_eq!(eps[0], Endpoint { name: "tcp-8080".into(), addr: Addr::Tcp("0.0.0.0:8080".parse().unwrap()) });
        assert_eq!(eps[1].name, "web");
        assert_eq!(eps[1].to_string(), "tcp:[::1]:443");
        assert_eq!(eps[2], Endpoint { name: "unix-app.sock".into(), addr: Addr::Unix("/run/app.sock".into()) });
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_entries_name_the_entry_and_the_rule() {
        for (text, why) in [
            ("tcp:8080", "ADDR:PORT"),
            ("tcp:0.0.0.0:0", "port 0"),
            ("udp:0.0.0.0:53", "tcp:ADDR:PORT or unix"),
            ("unix:run/app.sock", "absolute"),
            ("a:b=tcp:0.0.0.0:1", "without ':'"),
            ("tcp:0.0.0.0:1,tcp:0.0.0.0:1", "twice"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(ANNOTATION) && e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn a_socket_is_found_by_its_address_and_taken_from_a_process() {
        // Loopback of whatever namespace the test runs in; port chosen by a first bind.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let ep = Endpoint { name: "t".into(), addr: Addr::Tcp(format!("127.0.0.1:{port}").parse().unwrap()) };
        let fd = open(&ep).unwrap();
        assert!(is_listening_on(fd.as_raw_fd(), &ep));
        let other = Endpoint { name: "o".into(), addr: Addr::Tcp("127.0.0.1:1".parse().unwrap()) };
        assert!(!is_listening_on(fd.as_raw_fd(), &other));
        let me = std::process::id() as i32;
        let taken = take(&[me], &[other.clone(), ep.clone()]);
        assert!(taken[0].is_none());
        let dup = taken[1].as_ref().expect("the socket is found among this process's fds");
        assert!(is_listening_on(dup.as_raw_fd(), &ep));
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while accept_queue(dup.as_raw_fd()) != Some(1) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(accept_queue(dup.as_raw_fd()), Some(1), "the connection waits in the queue");
    }
}
