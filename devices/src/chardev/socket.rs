//! Socket addresses for the `socket` and `udp` backends: listen, accept,
//! connect, and the filenames QEMU reports for each state.

use super::stream::Conn;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

/// Telnet option handling on a listening socket (`telnet=on` or
/// `tn3270=on`, as QEMU does it for servers only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TelnetMode {
    Off,
    Telnet,
    Tn3270,
}

const IAC: u8 = 255;
const IAC_SB: u8 = 250;
const IAC_BREAK: u8 = 243;
const IAC_IP: u8 = 244;
const IAC_NOP: u8 = 241;
const IAC_SE: u8 = 240;
const IAC_EOR: u8 = 239;

impl TelnetMode {
    /// What the server says first to each client: telnet in binary,
    /// single-character mode with the echo ours (WILL ECHO, WILL
    /// SUPPRESS-GO-AHEAD, WILL and DO BINARY); tn3270 per RFC 1576 (DO
    /// and WILL EOR, DO and WILL BINARY, DO TERMINAL-TYPE and the
    /// subnegotiation asking for it).
    pub fn negotiation(self) -> &'static [u8] {
        match self {
            TelnetMode::Off => &[],
            TelnetMode::Telnet => &[IAC, 251, 1, IAC, 251, 3, IAC, 251, 0, IAC, 253, 0],
            TelnetMode::Tn3270 => &[
                IAC, 253, 25, IAC, 251, 25, IAC, 253, 0, IAC, 251, 0, IAC, 253, 24, IAC, IAC_SB,
                24, 1, IAC, IAC_SE,
            ],
        }
    }
}

/// Removes a client's telnet commands from its input, as QEMU does:
/// `IAC IAC` is a data byte 255, `IAC BREAK` a break, every other
/// command takes three bytes (tn3270 keeps `IAC EOR`, `IAC SB` and
/// `IAC SE` in the data as record marks and drops `IAC IP`/`IAC NOP`).
#[derive(Clone, Copy, Debug)]
pub struct IacFilter {
    kind: TelnetMode,
    /// 1: data; 2: after IAC; 3: after IAC and a command.
    state: u8,
}

impl IacFilter {
    pub fn new(kind: TelnetMode) -> IacFilter {
        IacFilter { kind, state: 1 }
    }

    /// Filters `data` in place; returns how many breaks it held.
    pub fn filter(&mut self, data: &mut Vec<u8>) -> usize {
        if self.kind == TelnetMode::Off {
            return 0;
        }
        let tn3270 = self.kind == TelnetMode::Tn3270;
        let mut out = Vec::with_capacity(data.len());
        let mut breaks = 0;
        for &b in data.iter() {
            if self.state > 1 {
                if b == IAC && self.state == 2 {
                    out.push(IAC);
                    self.state = 1;
                } else {
                    if self.state == 2 {
                        if b == IAC_BREAK {
                            breaks += 1;
                            self.state += 1;
                        } else if tn3270 && matches!(b, IAC_EOR | IAC_SB | IAC_SE) {
                            out.extend_from_slice(&[IAC, b]);
                            self.state += 1;
                        } else if tn3270 && matches!(b, IAC_IP | IAC_NOP) {
                            self.state += 1;
                        }
                    }
                    self.state += 1;
                }
                if self.state >= 4 {
                    self.state = 1;
                }
            } else if b == IAC {
                self.state = 2;
            } else {
                out.push(b);
            }
        }
        *data = out;
        breaks
    }
}

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
/// A telnet server starts the option negotiation at once.
pub(crate) fn accept(listener: RawFd, telnet: TelnetMode) -> Option<(OwnedFd, String)> {
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
    let name = describe_connected(fd, true, telnet == TelnetMode::Telnet);
    // A fresh socket's buffer takes these few bytes; a client that is
    // already gone shows up on the first read.
    let _ = super::stream::write_fd(fd, telnet.negotiation());
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
pub(crate) fn accept_blocking(listener: RawFd, telnet: TelnetMode) -> (OwnedFd, String) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: TelnetMode, chunks: &[&[u8]]) -> (Vec<u8>, usize) {
        let mut f = IacFilter::new(kind);
        let mut all = Vec::new();
        let mut breaks = 0;
        for c in chunks {
            let mut d = c.to_vec();
            breaks += f.filter(&mut d);
            all.extend(d);
        }
        (all, breaks)
    }

    #[test]
    fn telnet_commands_leave_the_data() {
        // Options (split across reads), a doubled IAC and a break.
        let (d, b) = run(
            TelnetMode::Telnet,
            &[b"a\xff\xfd", b"\x01b\xff\xff", b"c\xff\xf3d"],
        );
        assert_eq!((d, b), (b"ab\xffcd".to_vec(), 1));
        // tn3270 keeps record marks and drops IP and NOP.
        let (d, b) = run(TelnetMode::Tn3270, &[b"x\xff\xefy\xff\xf1z\xff\xfb\x19w"]);
        assert_eq!((d, b), (b"x\xff\xefyzw".to_vec(), 0));
        assert_eq!(run(TelnetMode::Off, &[b"\xff\xfb\x01"]).0, b"\xff\xfb\x01");
    }
}
