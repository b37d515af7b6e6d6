//! Socket addresses for the `socket` and `udp` backends: listen, accept,
//! connect, and the filenames QEMU reports for each state.

use super::stream::Conn;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

/// Where a client connects.
#[derive(Clone, Debug)]
pub enum Target {
    Unix(PathBuf),
    Tcp { host: String, port: String },
}

fn resolve(host: &str, port: &str) -> Result<Vec<SocketAddr>, String> {
    let p: u16 = port
        .parse()
        .map_err(|_| format!("address resolution failed for {host}:{port}"))?;
    let h = if host.is_empty() { "0.0.0.0" } else { host };
    (h, p)
        .to_socket_addrs()
        .map(|a| a.collect())
        .map_err(|e| format!("address resolution failed for {host}:{port}: {e}"))
}

fn inet_name(a: &SocketAddr) -> String {
    match a {
        SocketAddr::V4(v) => format!("{}:{}", v.ip(), v.port()),
        SocketAddr::V6(v) => format!("[{}]:{}", v.ip(), v.port()),
    }
}

/// A connected descriptor as a stream backend's connection.
pub(crate) fn conn(fd: OwnedFd) -> Conn {
    let raw = fd.as_raw_fd();
    Conn {
        rd: Some(raw),
        wr: Some(raw),
        nonblocking: true,
        _owned: vec![fd],
    }
}

fn unix_local_name(fd: RawFd, listen: bool) -> String {
    // SAFETY: an all-zero sockaddr_un is valid; getsockname writes at
    // most `len` bytes into it.
    let path = unsafe {
        let mut sa: libc::sockaddr_un = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        if libc::getsockname(fd, (&mut sa as *mut libc::sockaddr_un).cast(), &mut len) != 0 {
            String::new()
        } else {
            let bytes: Vec<u8> = sa
                .sun_path
                .iter()
                .take_while(|c| **c != 0)
                .map(|c| *c as u8)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
    };
    format!("unix:{path}{}", if listen { ",server" } else { "" })
}

fn tcp_name(
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    listen: bool,
    telnet: bool,
) -> String {
    let show = |a: Option<SocketAddr>| a.map(|a| inet_name(&a)).unwrap_or_default();
    format!(
        "{}:{}{} <-> {}",
        if telnet { "telnet" } else { "tcp" },
        show(local),
        if listen { ",server" } else { "" },
        show(peer)
    )
}

/// Accepts one client; returns it (non-blocking) and the filename.
pub(crate) fn accept(listener: RawFd, telnet: bool) -> Option<(OwnedFd, String)> {
    // SAFETY: accept4 with null address arguments on a listening socket.
    let fd = unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: accept4 returned a fresh descriptor we now own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = describe_connected(fd, true, telnet);
    Some((owned, name))
}

fn describe_connected(fd: RawFd, listen: bool, telnet: bool) -> String {
    let mut family: libc::sockaddr_storage =
        // SAFETY: sockaddr_storage is plain data; all zero is valid.
        unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into `family`.
    unsafe {
        libc::getsockname(
            fd,
            (&mut family as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if i32::from(family.ss_family) == libc::AF_UNIX {
        return unix_local_name(fd, listen);
    }
    // SAFETY: the descriptor stays owned by the caller; the borrowed
    // TcpStream is forgotten before it could close it.
    let s = unsafe { TcpStream::from_raw_fd(fd) };
    let name = tcp_name(s.local_addr().ok(), s.peer_addr().ok(), listen, telnet);
    let _ = s.into_raw_fd();
    name
}

/// Connects (blocking, then switches to non-blocking).
pub(crate) fn connect(target: &Target) -> Result<(OwnedFd, String), String> {
    match target {
        Target::Unix(path) => {
            let s = UnixStream::connect(path).map_err(|e| {
                format!(
                    "Failed to connect socket {}: {}",
                    path.display(),
                    os_text(&e)
                )
            })?;
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            let fd = OwnedFd::from(s);
            let name = unix_local_name(fd.as_raw_fd(), false);
            Ok((fd, name))
        }
        Target::Tcp { host, port } => {
            let mut last = None;
            for a in resolve(host, port)? {
                match TcpStream::connect(a) {
                    Ok(s) => {
                        s.set_nonblocking(true).map_err(|e| e.to_string())?;
                        let name = tcp_name(s.local_addr().ok(), s.peer_addr().ok(), false, false);
                        return Ok((OwnedFd::from(s), name));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(match last {
                Some(e) => format!("Failed to connect socket: {}", os_text(&e)),
                None => format!("address resolution failed for {host}:{port}"),
            })
        }
    }
}

/// The OS's text for an error, without Rust's " (os error N)".
pub(crate) fn os_text(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A listening socket; returns it (non-blocking), the unix path to
/// remove on close, and the disconnected filename.
pub(crate) fn listen(
    target: &Target,
    telnet: bool,
) -> Result<(OwnedFd, Option<PathBuf>, String), String> {
    match target {
        Target::Unix(path) => {
            // A stale socket from an earlier run is replaced, as QEMU does.
            let _ = std::fs::remove_file(path);
            let l = UnixListener::bind(path).map_err(|e| {
                format!(
                    "Failed to bind socket to {}: {}",
                    path.display(),
                    os_text(&e)
                )
            })?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            let name = format!("disconnected:unix:{},server", path.display());
            Ok((OwnedFd::from(l), Some(path.clone()), name))
        }
        Target::Tcp { host, port } => {
            let mut last = None;
            for a in resolve(host, port)? {
                match TcpListener::bind(a) {
                    Ok(l) => {
                        l.set_nonblocking(true).map_err(|e| e.to_string())?;
                        // The port actually bound (port 0 picks one).
                        let bound = l.local_addr().map(|a| a.port()).unwrap_or(0);
                        let name = format!(
                            "disconnected:{}:{host}:{bound},server",
                            if telnet { "telnet" } else { "tcp" }
                        );
                        return Ok((OwnedFd::from(l), None, name));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(match last {
                Some(e) => format!("Failed to bind socket: {}", os_text(&e)),
                None => format!("address resolution failed for {host}:{port}"),
            })
        }
    }
}

/// Waits for the first client (`server` with `wait`).
pub(crate) fn accept_blocking(listener: RawFd, telnet: bool) -> (OwnedFd, String) {
    loop {
        super::stream::poll_one(listener, libc::POLLIN, -1);
        if let Some(c) = accept(listener, telnet) {
            return c;
        }
    }
}

/// The client's filename before it connects.
pub(crate) fn disconnected_client_name(target: &Target) -> String {
    match target {
        Target::Unix(p) => format!("disconnected:unix:{}", p.display()),
        Target::Tcp { host, port } => format!("disconnected:tcp:{host}:{port}"),
    }
}

/// A connected UDP socket to `remote`, bound to `local` if given.
pub(crate) fn udp(remote: (&str, &str), local: Option<(&str, &str)>) -> Result<OwnedFd, String> {
    let remote_addrs = resolve(remote.0, remote.1)?;
    let first = remote_addrs
        .first()
        .copied()
        .ok_or_else(|| format!("address resolution failed for {}:{}", remote.0, remote.1))?;
    let bind_to = match local {
        Some((h, p)) => {
            let h = if h.is_empty() {
                if first.is_ipv4() {
                    "0.0.0.0"
                } else {
                    "::"
                }
            } else {
                h
            };
            let p = if p.is_empty() { "0" } else { p };
            resolve(h, p)?
                .first()
                .copied()
                .ok_or_else(|| format!("address resolution failed for {h}:{p}"))?
        }
        None if first.is_ipv4() => SocketAddr::from(([0, 0, 0, 0], 0)),
        None => SocketAddr::from(([0u16; 8], 0)),
    };
    let s =
        UdpSocket::bind(bind_to).map_err(|e| format!("Failed to bind socket: {}", os_text(&e)))?;
    s.connect(first)
        .map_err(|e| format!("Failed to connect socket: {}", os_text(&e)))?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(OwnedFd::from(s))
}
