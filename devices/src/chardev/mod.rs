//! Character devices (QEMU's chardevs): the backends a frontend (a serial
//! port, later virtio-serial or a TPM emulator) writes its bytes to and
//! gets its input from, created from the QAPI `ChardevBackend` that both
//! `-chardev` and `chardev-add` produce.
//!
//! A frontend attaches an [`Frontend`] to a [`Chardev`], writes with
//! [`Chardev::write`] (which never blocks: it takes what the backend can
//! hold now and the frontend keeps the rest until `output_ready`), and
//! takes input with [`Chardev::read_input`] when told `input_ready`.
//! Backends on file descriptors run one I/O thread each (`stream.rs`);
//! the others (null, file output, ringbuf) finish every write at once.
//!
//! [`Registry`] holds the chardevs by label and answers the QMP commands
//! (chardev-add/remove/change, query-chardev, ringbuf-read/write,
//! chardev-send-break) with QEMU 2.11's results and error texts.

mod mux;
pub mod ringbuf;
mod socket;
mod stream;

use qmp::qapi::{
    ChardevBackend, ChardevBackendInfo, ChardevCommon, ChardevInfo, DataFormat, SocketAddressLegacy,
};
use ringbuf::Ring;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use stream::{Conn, Mode, Stream};

pub use mux::{set_commit_hook, MAX_MUX};
pub(crate) use socket::os_text;
pub use stream::{IN_CAP, OUT_CAP};

/// A change of the backend's state, as QEMU's `CHR_EVENT_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The backend is open (a socket peer connected; a mux realized).
    Opened,
    /// The backend closed (the socket peer left).
    Closed,
    /// A mux gave this frontend the focus.
    MuxIn,
    /// A mux took the focus away from this frontend.
    MuxOut,
}

/// What a chardev tells the device using it. Called from the backend's
/// I/O thread or from the thread that changed the backend; a frontend
/// takes its own lock inside and must not call back into the chardev
/// while holding a lock the chardev's caller may hold.
pub trait Frontend: Send + Sync {
    /// Input waits: take it with [`Chardev::read_input`].
    fn input_ready(&self);
    /// A write that took less than offered may be retried now.
    fn output_ready(&self);
    /// A break condition (`chardev-send-break`).
    fn send_break(&self);
    /// The backend opened or closed, or a mux moved the focus.
    fn event(&self, _ev: Event) {}
}

/// The frontend of one chardev, shared with its backend's thread.
#[derive(Default)]
pub(crate) struct FrontendSlot {
    fe: Mutex<Option<Arc<dyn Frontend>>>,
}

impl FrontendSlot {
    fn get(&self) -> Option<Arc<dyn Frontend>> {
        self.fe.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn input_ready(&self) {
        if let Some(f) = self.get() {
            f.input_ready();
        }
    }

    fn output_ready(&self) {
        if let Some(f) = self.get() {
            f.output_ready();
        }
    }

    fn event(&self, ev: Event) {
        if let Some(f) = self.get() {
            f.event(ev);
        }
    }

    fn send_break(&self) {
        if let Some(f) = self.get() {
            f.send_break();
        }
    }
}

enum Imp {
    /// Output discarded, no input (null, vc, msmouse, wctablet, a
    /// claimed parallel port).
    Sink(#[allow(dead_code)] Option<OwnedFd>),
    /// Output written at once; input, if any, from a stream.
    File(Mutex<File>, Option<Stream>),
    Ring(Mutex<Ring>),
    Stream(Stream),
    /// kvm-unit-tests' test device: `NUMq` ends the process.
    Testdev(Mutex<Vec<u8>>),
    /// A chardev that a monitor serves itself; this is its name only.
    Monitor(String),
    /// Shared by several frontends (`mux.rs`).
    Mux(Arc<mux::Mux>),
}

struct Backend {
    /// The QOM type without `chardev-` (`file`, `socket`, `ringbuf`, ...).
    kind: &'static str,
    imp: Imp,
    /// `logfile`: a copy of all output.
    log: Option<Mutex<File>>,
    /// Stdio: restore the terminal and free stdio when closed.
    uses_stdio: bool,
}

impl Drop for Backend {
    fn drop(&mut self) {
        if self.uses_stdio {
            stdio::release();
        }
    }
}

/// One chardev; clones share it. The handle a frontend gets from
/// [`Chardev::attach`] also names that frontend (its mux tag).
#[derive(Clone)]
pub struct Chardev(Arc<Inner>, Option<usize>);

struct Inner {
    label: String,
    backend: Mutex<Arc<Backend>>,
    slot: Arc<FrontendSlot>,
    /// The frontend takes part in `chardev-change` (a serial port does,
    /// a monitor does not).
    hotswap: AtomicBool,
}

impl Chardev {
    fn backend(&self) -> Arc<Backend> {
        self.0
            .backend
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn label(&self) -> &str {
        &self.0.label
    }

    /// The QOM type name (`chardev-socket`, ...).
    pub fn type_name(&self) -> String {
        format!("chardev-{}", self.backend().kind)
    }

    /// The `filename` of query-chardev.
    pub fn filename(&self) -> String {
        let b = self.backend();
        match &b.imp {
            Imp::Stream(s) => s.filename(),
            Imp::Monitor(name) => name.clone(),
            _ => b.kind.to_string(),
        }
    }

    /// Whether a frontend uses it.
    pub fn frontend_open(&self) -> bool {
        if let Imp::Mux(m) = &self.backend().imp {
            return m.has_frontends();
        }
        self.0.slot.get().is_some()
    }

    /// Whether the backend is open: a socket has its peer; the others
    /// are open from their creation.
    fn is_open(&self) -> bool {
        match &self.backend().imp {
            Imp::Stream(s) => s.connected(),
            _ => true,
        }
    }

    /// Attaches the device that uses this chardev; `hotswap`: it follows
    /// a `chardev-change`. The frontend reads and writes through the
    /// handle returned (on a mux, it names the frontend). A frontend
    /// attached to an open backend hears `Opened` at once, as in QEMU.
    pub fn attach(&self, fe: Arc<dyn Frontend>, hotswap: bool) -> Result<Chardev, String> {
        if let Imp::Mux(m) = &self.backend().imp {
            let tag = m.attach(fe)?;
            return Ok(Chardev(self.0.clone(), Some(tag)));
        }
        let mut slot = self.0.slot.fe.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Err(format!("Device '{}' is in use", self.0.label));
        }
        *slot = Some(fe.clone());
        self.0.hotswap.store(hotswap, Ordering::Relaxed);
        drop(slot);
        if self.is_open() {
            fe.event(Event::Opened);
        }
        // Input that arrived before the frontend did.
        if self.has_input() {
            self.0.slot.input_ready();
        }
        Ok(self.clone())
    }

    /// Detaches the frontend of this handle.
    pub fn detach(&self) {
        if let Imp::Mux(m) = &self.backend().imp {
            if let Some(tag) = self.1 {
                m.detach(tag);
            }
            return;
        }
        *self.0.slot.fe.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Makes the backend tell its frontend about waiting input again
    /// (from its own thread): a mux stopped taking input while a
    /// frontend's buffer was full.
    fn renotify_input(&self) {
        match &self.backend().imp {
            Imp::Stream(s) | Imp::File(_, Some(s)) => s.renotify_input(),
            _ => {}
        }
    }

    /// A mux: tells its frontends the machine is complete (QEMU's
    /// `muxes_realized`); other chardevs ignore it.
    pub fn realize(&self) {
        if let Imp::Mux(m) = &self.backend().imp {
            m.realize();
        }
    }

    /// Writes what the backend can take now; returns how many bytes it
    /// took. Less than `data.len()` means full: `output_ready` follows.
    pub fn write(&self, data: &[u8]) -> usize {
        let b = self.backend();
        let n = match &b.imp {
            Imp::Sink(_) | Imp::Monitor(_) => data.len(),
            Imp::Mux(m) => m.write(data),
            Imp::File(f, _) => {
                let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
                // A failing file drops output rather than stopping the guest.
                let _ = f.write_all(data);
                data.len()
            }
            Imp::Ring(r) => {
                r.lock().unwrap_or_else(|e| e.into_inner()).write(data);
                data.len()
            }
            Imp::Stream(s) => s.write(data),
            Imp::Testdev(t) => {
                testdev(&mut t.lock().unwrap_or_else(|e| e.into_inner()), data);
                data.len()
            }
        };
        if let Some(log) = &b.log {
            let _ = log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write_all(&data[..n]);
        }
        n
    }

    /// Takes up to `max` bytes of input.
    pub fn read_input(&self, max: usize) -> Vec<u8> {
        match &self.backend().imp {
            Imp::Stream(s) | Imp::File(_, Some(s)) => s.read_input(max),
            Imp::Mux(m) => self.1.map(|t| m.read_input(t, max)).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    pub fn has_input(&self) -> bool {
        match &self.backend().imp {
            Imp::Stream(s) | Imp::File(_, Some(s)) => s.has_input(),
            Imp::Mux(m) => self.1.is_some_and(|t| m.has_input(t)),
            _ => false,
        }
    }

    /// A break condition to the frontend (on a mux, the one with the
    /// focus).
    pub fn send_break(&self) {
        if let Imp::Mux(m) = &self.backend().imp {
            m.send_break();
            return;
        }
        if let Some(f) = self.0.slot.get() {
            f.send_break();
        }
    }
}

/// kvm-unit-tests' protocol: a decimal argument then `q` exits with
/// `(arg << 1) | 1`; other bytes are ignored.
fn testdev(pending: &mut Vec<u8>, data: &[u8]) {
    for &b in data {
        match b {
            b'0'..=b'9' => pending.push(b),
            b'q' => {
                let arg: i32 = std::str::from_utf8(pending)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                std::process::exit((arg << 1) | 1);
            }
            _ => pending.clear(),
        }
    }
}

fn not_built(kind: &str) -> String {
    format!("'{kind}' is not a valid char driver name")
}

fn common(b: &ChardevBackend) -> ChardevCommon {
    let (logfile, logappend) = match b {
        ChardevBackend::File(c) => (c.logfile.clone(), c.logappend),
        ChardevBackend::Serial(c) | ChardevBackend::Parallel(c) | ChardevBackend::Pipe(c) => {
            (c.logfile.clone(), c.logappend)
        }
        ChardevBackend::Socket(c) => (c.logfile.clone(), c.logappend),
        ChardevBackend::Udp(c) => (c.logfile.clone(), c.logappend),
        ChardevBackend::Pty(c)
        | ChardevBackend::Null(c)
        | ChardevBackend::Msmouse(c)
        | ChardevBackend::Wctablet(c)
        | ChardevBackend::Braille(c)
        | ChardevBackend::Testdev(c)
        | ChardevBackend::Console(c) => (c.logfile.clone(), c.logappend),
        ChardevBackend::Mux(c) => (c.logfile.clone(), c.logappend),
        ChardevBackend::Stdio(c) => (c.logfile.clone(), c.logappend),
        ChardevBackend::Spicevmc(c) => (c.logfile.clone(), c.logappend),
        ChardevBackend::Spiceport(c) => (c.logfile.clone(), c.logappend),
        ChardevBackend::Vc(c) => (c.logfile.clone(), c.logappend),
        ChardevBackend::Ringbuf(c) | ChardevBackend::Memory(c) => (c.logfile.clone(), c.logappend),
    };
    ChardevCommon { logfile, logappend }
}

fn open_file(path: &str, write: bool, append: bool) -> Result<File, String> {
    let mut o = std::fs::OpenOptions::new();
    if write {
        o.write(true).create(true).mode(0o666);
        if append {
            o.append(true);
        } else {
            o.truncate(true);
        }
    } else {
        o.read(true);
    }
    o.open(path)
        .map_err(|e| format!("Could not open '{path}': {}", socket::os_text(&e)))
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// Raw mode for a tty we own (a pty or a host serial device).
fn make_raw(fd: RawFd) {
    // SAFETY: tcgetattr/cfmakeraw/tcsetattr on a local termios.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) == 0 {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSANOW, &t);
        }
    }
}

fn owned_conn(rd: Option<OwnedFd>, wr: Option<OwnedFd>, same: bool) -> Conn {
    let r = rd.as_ref().map(|f| f.as_raw_fd());
    let w = if same {
        r
    } else {
        wr.as_ref().map(|f| f.as_raw_fd())
    };
    Conn {
        rd: r,
        wr: w,
        nonblocking: true,
        _owned: rd.into_iter().chain(wr).collect(),
    }
}

fn start_stream(
    label: &str,
    mode: Mode,
    conn: Option<Conn>,
    filename: String,
    disconnected: String,
    slot: &Arc<FrontendSlot>,
) -> Result<Stream, String> {
    Stream::start(label, mode, conn, filename, disconnected, slot.clone())
        .map_err(|e| format!("chardev {label}: {e}"))
}

fn open_pty(label: &str, slot: &Arc<FrontendSlot>) -> Result<(Imp, String), String> {
    // SAFETY: plain libc calls; the returned descriptor is owned below.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "Failed to create PTY: {}",
            socket::os_text(&std::io::Error::last_os_error())
        ));
    }
    // SAFETY: posix_openpt returned a fresh descriptor we now own.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: grantpt/unlockpt on our master; ptsname_r writes at most
    // `name.len()` bytes.
    let ok = unsafe {
        libc::grantpt(fd) == 0
            && libc::unlockpt(fd) == 0
            && libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) == 0
    };
    if !ok {
        return Err(format!(
            "Failed to create PTY: {}",
            socket::os_text(&std::io::Error::last_os_error())
        ));
    }
    // SAFETY: ptsname_r wrote a NUL-terminated string into `name`.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    make_raw(fd);
    set_nonblocking(fd);
    let filename = format!("pty:{path}");
    let s = start_stream(
        label,
        Mode::Pty,
        Some(owned_conn(Some(master), None, true)),
        filename.clone(),
        filename,
        slot,
    )?;
    eprintln!("char device redirected to {path} (label {label})");
    Ok((Imp::Stream(s), path))
}

fn socket_target(addr: &SocketAddressLegacy) -> Result<socket::Target, String> {
    match addr {
        SocketAddressLegacy::Unix(u) => Ok(socket::Target::Unix(u.path.clone().into())),
        SocketAddressLegacy::Inet(i) => Ok(socket::Target::Tcp {
            host: i.host.clone(),
            port: i.port.clone(),
        }),
        SocketAddressLegacy::Vsock(_) => Err("vsock sockets are not supported by vmm".into()),
        SocketAddressLegacy::Fd(f) => Err(format!(
            "File descriptor named '{}' has not been found",
            f.str
        )),
    }
}

fn open_socket(
    label: &str,
    s: &qmp::qapi::ChardevSocket,
    slot: &Arc<FrontendSlot>,
) -> Result<Imp, String> {
    let server = s.server.unwrap_or(true);
    let wait = s.wait.unwrap_or(false);
    // QEMU negotiates telnet options on servers only; the filename
    // says `telnet:` for telnet, not for tn3270.
    let telnet = if !server {
        socket::TelnetMode::Off
    } else if s.tn3270.unwrap_or(false) {
        socket::TelnetMode::Tn3270
    } else if s.telnet.unwrap_or(false) {
        socket::TelnetMode::Telnet
    } else {
        socket::TelnetMode::Off
    };
    let reconnect = s.reconnect.unwrap_or(0).max(0) as u64;
    if let Some(creds) = &s.tls_creds {
        return Err(format!("No TLS credentials with id '{creds}'"));
    }
    let target = socket_target(&s.addr)?;
    if server {
        let (listener, unix_path, disconnected) =
            socket::listen(&target, telnet == socket::TelnetMode::Telnet)?;
        let conn = if wait {
            eprintln!("QEMU waiting for connection on: {disconnected}");
            Some(socket::accept_blocking(listener.as_raw_fd(), telnet))
        } else {
            None
        };
        let (conn, filename) = match conn {
            Some((fd, name)) => (Some(socket::conn(fd)), name),
            None => (None, disconnected.clone()),
        };
        let mode = Mode::Server {
            listener,
            telnet,
            unix_path,
        };
        Ok(Imp::Stream(start_stream(
            label,
            mode,
            conn,
            filename,
            disconnected,
            slot,
        )?))
    } else {
        let disconnected = socket::disconnected_client_name(&target);
        let (conn, filename) = match socket::connect(&target) {
            Ok((fd, name)) => (Some(socket::conn(fd)), name),
            // With reconnect, QEMU keeps trying in the background.
            Err(e) if reconnect > 0 => {
                eprintln!("vmm: Unable to connect character device {label}: {e}");
                (None, disconnected.clone())
            }
            Err(e) => return Err(e),
        };
        let mode = Mode::Client { target, reconnect };
        Ok(Imp::Stream(start_stream(
            label,
            mode,
            conn,
            filename,
            disconnected,
            slot,
        )?))
    }
}

fn inet_parts(a: &SocketAddressLegacy) -> Result<(String, String), String> {
    match a {
        SocketAddressLegacy::Inet(i) => Ok((i.host.clone(), i.port.clone())),
        _ => Err("udp chardevs need inet addresses".into()),
    }
}

/// Raw mode for a terminal on stdin, for the human monitor on stdio too.
pub use stdio::set_raw as set_stdin_raw;

mod stdio {
    //! The process's standard streams, used by one chardev at a time;
    //! the terminal is put in raw mode while in use and restored when
    //! released or at exit.
    use std::sync::Mutex;

    static STATE: Mutex<(bool, Option<libc::termios>)> = Mutex::new((false, None));

    extern "C" fn restore_at_exit() {
        if let Ok(st) = STATE.try_lock() {
            if let Some(t) = st.1 {
                // SAFETY: tcsetattr with a termios saved from tcgetattr.
                unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
            }
        }
    }

    pub fn claim(signal: bool) -> Result<(), String> {
        let mut st = STATE.lock().unwrap_or_else(|e| e.into_inner());
        if st.0 {
            return Err("cannot use stdio by multiple character devices".into());
        }
        st.0 = true;
        drop(st);
        set_raw(signal);
        Ok(())
    }

    /// Puts a terminal on stdin in raw mode, as QEMU's stdio does (no echo,
    /// no line editing, output processing kept, signals only with
    /// `signal`); the first settings come back at exit.
    pub fn set_raw(signal: bool) {
        let mut st = STATE.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: plain termios calls on stdin with local structures; atexit
        // with a function that lives forever.
        unsafe {
            if libc::isatty(libc::STDIN_FILENO) != 1 {
                return;
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut t) != 0 {
                return;
            }
            if st.1.is_none() {
                st.1 = Some(t);
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(|| {
                    libc::atexit(restore_at_exit);
                });
            }
            t.c_iflag &= !(libc::IGNBRK
                | libc::BRKINT
                | libc::PARMRK
                | libc::ISTRIP
                | libc::INLCR
                | libc::IGNCR
                | libc::ICRNL
                | libc::IXON);
            t.c_oflag |= libc::OPOST;
            t.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::IEXTEN);
            if !signal {
                t.c_lflag &= !libc::ISIG;
            }
            t.c_cflag &= !(libc::CSIZE | libc::PARENB);
            t.c_cflag |= libc::CS8;
            t.c_cc[libc::VMIN] = 1;
            t.c_cc[libc::VTIME] = 0;
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t);
        }
    }

    /// Marks stdio used by something outside this module (a monitor).
    pub fn claim_plain() -> Result<(), String> {
        let mut st = STATE.lock().unwrap_or_else(|e| e.into_inner());
        if st.0 {
            return Err("cannot use stdio by multiple character devices".into());
        }
        st.0 = true;
        Ok(())
    }

    pub fn release() {
        let mut st = STATE.lock().unwrap_or_else(|e| e.into_inner());
        st.0 = false;
        if let Some(t) = st.1 {
            // SAFETY: tcsetattr with a termios saved from tcgetattr.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
        }
    }
}

/// Opens a backend. Returns it and, for a pty, the slave's path.
fn open(
    label: &str,
    backend: &ChardevBackend,
    slot: &Arc<FrontendSlot>,
) -> Result<(Backend, Option<String>), String> {
    let com = common(backend);
    let log = match &com.logfile {
        Some(path) => {
            let append = com.logappend.unwrap_or(false);
            let f = open_file(path, true, append).map_err(|e| {
                let why = e.rsplit(": ").next().unwrap_or_default().to_string();
                format!("Unable to open logfile {path}: {why}")
            })?;
            Some(Mutex::new(f))
        }
        None => None,
    };
    let mut pty = None;
    let mut uses_stdio = false;
    let (kind, imp): (&'static str, Imp) = match backend {
        ChardevBackend::File(f) => {
            let out = open_file(&f.out, true, f.append.unwrap_or(false))?;
            let input = match &f.r#in {
                Some(path) => {
                    let inf = OwnedFd::from(open_file(path, false, false)?);
                    Some(start_stream(
                        label,
                        Mode::Fixed,
                        Some(owned_conn(Some(inf), None, false)),
                        "file".into(),
                        "file".into(),
                        slot,
                    )?)
                }
                None => None,
            };
            ("file", Imp::File(Mutex::new(out), input))
        }
        ChardevBackend::Serial(h) => {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
                .open(&h.device)
                .map_err(|e| format!("Could not open '{}': {}", h.device, socket::os_text(&e)))?;
            let fd = OwnedFd::from(f);
            make_raw(fd.as_raw_fd());
            let conn = owned_conn(Some(fd), None, true);
            (
                "serial",
                Imp::Stream(start_stream(
                    label,
                    Mode::Fixed,
                    Some(conn),
                    "serial".into(),
                    "serial".into(),
                    slot,
                )?),
            )
        }
        ChardevBackend::Parallel(h) => {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&h.device)
                .map_err(|e| format!("Could not open '{}': {}", h.device, socket::os_text(&e)))?;
            const PPCLAIM: libc::c_ulong = 0x708b;
            // SAFETY: PPCLAIM takes no argument; a non-ppdev file refuses it.
            if unsafe { libc::ioctl(f.as_raw_fd(), PPCLAIM) } < 0 {
                return Err(format!(
                    "not a parallel port: {}",
                    socket::os_text(&std::io::Error::last_os_error())
                ));
            }
            ("parallel", Imp::Sink(Some(OwnedFd::from(f))))
        }
        ChardevBackend::Pipe(h) => {
            let open = |p: &str, write: bool| {
                std::fs::OpenOptions::new()
                    .read(!write)
                    .write(true)
                    .open(p)
                    .ok()
                    .map(OwnedFd::from)
            };
            let conn = match (
                open(&format!("{}.in", h.device), false),
                open(&format!("{}.out", h.device), true),
            ) {
                (Some(i), Some(o)) => {
                    set_nonblocking(i.as_raw_fd());
                    set_nonblocking(o.as_raw_fd());
                    owned_conn(Some(i), Some(o), false)
                }
                _ => {
                    let f = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .open(&h.device)
                        .map_err(|e| {
                            format!("Could not open '{}': {}", h.device, socket::os_text(&e))
                        })?;
                    let fd = OwnedFd::from(f);
                    set_nonblocking(fd.as_raw_fd());
                    owned_conn(Some(fd), None, true)
                }
            };
            (
                "pipe",
                Imp::Stream(start_stream(
                    label,
                    Mode::Fixed,
                    Some(conn),
                    "pipe".into(),
                    "pipe".into(),
                    slot,
                )?),
            )
        }
        ChardevBackend::Socket(s) => ("socket", open_socket(label, s, slot)?),
        ChardevBackend::Udp(u) => {
            let (rh, rp) = inet_parts(&u.remote)?;
            let local = u.local.as_ref().map(inet_parts).transpose()?;
            let fd = socket::udp(
                (&rh, &rp),
                local.as_ref().map(|(h, p)| (h.as_str(), p.as_str())),
            )?;
            (
                "udp",
                Imp::Stream(start_stream(
                    label,
                    Mode::Fixed,
                    Some(owned_conn(Some(fd), None, true)),
                    "udp".into(),
                    "udp".into(),
                    slot,
                )?),
            )
        }
        ChardevBackend::Pty(_) => {
            let (imp, path) = open_pty(label, slot)?;
            pty = Some(path);
            ("pty", imp)
        }
        ChardevBackend::Null(_) => ("null", Imp::Sink(None)),
        ChardevBackend::Msmouse(_) => ("msmouse", Imp::Sink(None)),
        ChardevBackend::Wctablet(_) => ("wctablet", Imp::Sink(None)),
        ChardevBackend::Vc(_) => ("vc", Imp::Sink(None)),
        ChardevBackend::Testdev(_) => ("testdev", Imp::Testdev(Mutex::new(Vec::new()))),
        ChardevBackend::Stdio(s) => {
            stdio::claim(s.signal.unwrap_or(true))?;
            uses_stdio = true;
            let conn = Conn {
                rd: Some(libc::STDIN_FILENO),
                wr: Some(libc::STDOUT_FILENO),
                nonblocking: false,
                _owned: Vec::new(),
            };
            match start_stream(
                label,
                Mode::Fixed,
                Some(conn),
                "stdio".into(),
                "stdio".into(),
                slot,
            ) {
                Ok(s) => ("stdio", Imp::Stream(s)),
                Err(e) => {
                    stdio::release();
                    return Err(e);
                }
            }
        }
        ChardevBackend::Ringbuf(r) | ChardevBackend::Memory(r) => {
            let size = r.size.unwrap_or(ringbuf::DEFAULT_SIZE as i64);
            // QEMU keeps the size in a 32-bit int.
            let size = size as i32;
            if size <= 0 || size & (size - 1) != 0 {
                return Err("size of ringbuf chardev must be power of two".into());
            }
            let kind = if matches!(backend, ChardevBackend::Memory(_)) {
                "memory"
            } else {
                "ringbuf"
            };
            (kind, Imp::Ring(Mutex::new(Ring::new(size as usize))))
        }
        // Made by the registry, which knows the base chardev.
        ChardevBackend::Mux(m) => return Err(format!("mux: base chardev {} not found", m.chardev)),
        ChardevBackend::Braille(_) => return Err(not_built("braille")),
        ChardevBackend::Console(_) => return Err(not_built("console")),
        ChardevBackend::Spicevmc(_) => return Err(not_built("spicevmc")),
        ChardevBackend::Spiceport(_) => return Err(not_built("spiceport")),
    };
    Ok((
        Backend {
            kind,
            imp,
            log,
            uses_stdio,
        },
        pty,
    ))
}

/// What query-chardev-backends lists: QEMU 2.11's chardev types on
/// Linux, less those vmm is built without (braille, spicevmc,
/// spiceport), in the order QEMU reports them.
pub const BACKENDS: &[&str] = &[
    "tty", "parport", "udp", "file", "null", "vc", "socket", "pty", "memory", "serial", "pipe",
    "mux", "ringbuf", "stdio", "testdev", "wctablet", "parallel", "msmouse",
];

/// Every chardev, by label, in creation order.
#[derive(Default)]
pub struct Registry {
    list: Vec<Chardev>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    pub fn find(&self, id: &str) -> Option<Chardev> {
        self.list.iter().find(|c| c.0.label == id).cloned()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Chardev> {
        self.list.iter()
    }

    /// `chardev-add` and `-chardev`: returns the new chardev and, for a
    /// pty, the path of its other side.
    pub fn add(
        &mut self,
        id: &str,
        backend: &ChardevBackend,
    ) -> Result<(Chardev, Option<String>), String> {
        if self.find(id).is_some() {
            return Err(format!(
                "attempt to add duplicate property '{id}' to object (type 'container')"
            ));
        }
        let slot = Arc::new(FrontendSlot::default());
        let (b, pty) = self.open_backend(id, backend, &slot)?;
        let c = Chardev(
            Arc::new(Inner {
                label: id.to_string(),
                backend: Mutex::new(Arc::new(b)),
                slot,
                hotswap: AtomicBool::new(false),
            }),
            None,
        );
        self.list.push(c.clone());
        Ok((c, pty))
    }

    /// `-chardev ...,mux=on`: the backend as `ID-base` and a mux `ID`
    /// over it, as QEMU makes them.
    pub fn add_muxed(&mut self, id: &str, backend: &ChardevBackend) -> Result<Chardev, String> {
        let base = format!("{id}-base");
        self.add(&base, backend)?;
        let mux = ChardevBackend::Mux(qmp::qapi::ChardevMux {
            logfile: None,
            logappend: None,
            chardev: base.clone(),
        });
        match self.add(id, &mux) {
            Ok((c, _)) => Ok(c),
            Err(e) => {
                self.list.retain(|c| c.0.label != base);
                Err(e)
            }
        }
    }

    /// The end of machine creation: muxes tell their frontends the
    /// backend is open (QEMU's `muxes_realize_done`).
    pub fn realize_muxes(&self) {
        for c in &self.list {
            c.realize();
        }
    }

    /// Opens a backend; a mux finds its base chardev here.
    fn open_backend(
        &self,
        id: &str,
        backend: &ChardevBackend,
        slot: &Arc<FrontendSlot>,
    ) -> Result<(Backend, Option<String>), String> {
        let ChardevBackend::Mux(m) = backend else {
            return open(id, backend, slot);
        };
        let base = self
            .find(&m.chardev)
            .ok_or_else(|| format!("mux: base chardev {} not found", m.chardev))?;
        let com = common(backend);
        let log = match &com.logfile {
            Some(path) => Some(Mutex::new(
                open_file(path, true, com.logappend.unwrap_or(false)).map_err(|e| {
                    let why = e.rsplit(": ").next().unwrap_or_default().to_string();
                    format!("Unable to open logfile {path}: {why}")
                })?,
            )),
            None => None,
        };
        let mux = mux::Mux::new(id, base)?;
        Ok((
            Backend {
                kind: "mux",
                imp: Imp::Mux(mux),
                log,
                uses_stdio: false,
            },
            None,
        ))
    }

    /// A chardev a monitor serves itself, listed with `filename`; its
    /// `kind` is the backend type. It counts as in use.
    pub fn add_monitor(
        &mut self,
        id: &str,
        kind: &'static str,
        filename: &str,
    ) -> Result<(), String> {
        if kind == "stdio" {
            stdio::claim_plain()?;
        }
        struct MonitorFrontend;
        impl Frontend for MonitorFrontend {
            fn input_ready(&self) {}
            fn output_ready(&self) {}
            fn send_break(&self) {}
        }
        let c = Chardev(
            Arc::new(Inner {
                label: id.to_string(),
                backend: Mutex::new(Arc::new(Backend {
                    kind,
                    imp: Imp::Monitor(filename.to_string()),
                    log: None,
                    uses_stdio: false,
                })),
                slot: Arc::new(FrontendSlot {
                    fe: Mutex::new(Some(Arc::new(MonitorFrontend))),
                }),
                hotswap: AtomicBool::new(false),
            }),
            None,
        );
        self.list.push(c);
        Ok(())
    }

    /// `chardev-remove`.
    pub fn remove(&mut self, id: &str) -> Result<(), String> {
        let Some(i) = self.list.iter().position(|c| c.0.label == id) else {
            return Err(format!("Chardev '{id}' not found"));
        };
        // QEMU counts a mux busy even with no frontend left.
        let is_mux = matches!(self.list[i].backend().imp, Imp::Mux(_));
        if is_mux || self.list[i].frontend_open() {
            return Err(format!("Chardev '{id}' is busy"));
        }
        self.list.remove(i);
        Ok(())
    }

    /// `chardev-change`: a new backend under the same label; a serial
    /// port using it keeps running on the new one.
    pub fn change(&mut self, id: &str, backend: &ChardevBackend) -> Result<Option<String>, String> {
        let Some(c) = self.find(id) else {
            return Err(format!("Chardev '{id}' does not exist"));
        };
        if matches!(c.backend().imp, Imp::Mux(_)) {
            return Err("Mux device hotswap not supported yet".into());
        }
        if !c.frontend_open() {
            self.remove(id)?;
            return self.add(id, backend).map(|(_, pty)| pty);
        }
        if !c.0.hotswap.load(Ordering::Relaxed) {
            return Err("Chardev user does not support chardev hotswap".into());
        }
        let (b, pty) = self.open_backend(id, backend, &c.0.slot)?;
        let old = std::mem::replace(
            &mut *c.0.backend.lock().unwrap_or_else(|e| e.into_inner()),
            Arc::new(b),
        );
        drop(old);
        // The frontend may wait for room or have input to take.
        c.0.slot.output_ready();
        if c.has_input() {
            c.0.slot.input_ready();
        }
        Ok(pty)
    }

    /// `query-chardev`.
    pub fn query(&self) -> Vec<ChardevInfo> {
        self.list
            .iter()
            .map(|c| ChardevInfo {
                label: c.0.label.clone(),
                filename: c.filename(),
                frontend_open: c.frontend_open(),
            })
            .collect()
    }

    /// `query-chardev-backends`.
    pub fn backends() -> Vec<ChardevBackendInfo> {
        BACKENDS
            .iter()
            .map(|n| ChardevBackendInfo {
                name: n.to_string(),
            })
            .collect()
    }

    /// `chardev-send-break`.
    pub fn send_break(&self, id: &str) -> Result<(), String> {
        let c = self
            .find(id)
            .ok_or_else(|| format!("Chardev '{id}' not found"))?;
        c.send_break();
        Ok(())
    }

    fn ring(&self, device: &str) -> Result<Chardev, String> {
        let c = self
            .find(device)
            .ok_or_else(|| format!("Device '{device}' not found"))?;
        if !matches!(c.backend().imp, Imp::Ring(_)) {
            return Err(format!("{device} is not a ringbuf device"));
        }
        Ok(c)
    }

    /// `ringbuf-write`: the data joins what the frontend wrote.
    pub fn ringbuf_write(
        &self,
        device: &str,
        data: &str,
        format: Option<DataFormat>,
    ) -> Result<(), String> {
        let c = self.ring(device)?;
        let bytes = match format {
            Some(DataFormat::Base64) => ringbuf::base64_decode(data)?,
            // A C string in QEMU: it ends at the first NUL.
            _ => data
                .split('\0')
                .next()
                .unwrap_or_default()
                .as_bytes()
                .to_vec(),
        };
        if let Imp::Ring(r) = &c.backend().imp {
            r.lock().unwrap_or_else(|e| e.into_inner()).write(&bytes);
        }
        Ok(())
    }

    /// `ringbuf-read`.
    pub fn ringbuf_read(
        &self,
        device: &str,
        size: i64,
        format: Option<DataFormat>,
    ) -> Result<String, String> {
        let c = self.ring(device)?;
        if size <= 0 {
            return Err("size must be greater than zero".into());
        }
        let b = c.backend();
        let Imp::Ring(r) = &b.imp else {
            return Err(format!("{device} is not a ringbuf device"));
        };
        let max = usize::try_from(size).unwrap_or(usize::MAX);
        let bytes = r.lock().unwrap_or_else(|e| e.into_inner()).read(max);
        Ok(match format {
            Some(DataFormat::Base64) => ringbuf::base64_encode(&bytes),
            _ => {
                let text = bytes.split(|b| *b == 0).next().unwrap_or_default();
                String::from_utf8_lossy(text).into_owned()
            }
        })
    }
}

/// A unix socket chardev at `path` (a server that does not wait for its
/// client, or a client), for tests here and in other modules.
#[cfg(test)]
pub(crate) fn unix_socket_backend(path: &std::path::Path, server: bool) -> ChardevBackend {
    ChardevBackend::Socket(qmp::qapi::ChardevSocket {
        logfile: None,
        logappend: None,
        addr: qmp::qapi::SocketAddressLegacy::Unix(qmp::qapi::UnixSocketAddress {
            path: path.display().to_string(),
        }),
        tls_creds: None,
        server: Some(server),
        wait: server.then_some(false),
        nodelay: None,
        telnet: None,
        tn3270: None,
        reconnect: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::Condvar;
    use std::time::{Duration, Instant};

    #[derive(Default)]
    struct Waker {
        ready: Mutex<bool>,
        cv: Condvar,
    }

    impl Frontend for Waker {
        fn input_ready(&self) {}
        fn output_ready(&self) {
            *self.ready.lock().unwrap() = true;
            self.cv.notify_all();
        }
        fn send_break(&self) {}
    }

    #[test]
    fn a_slow_reader_gets_every_byte_and_writers_are_told_when_to_retry() {
        let dir = std::env::temp_dir().join(format!("chardev-bp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let backend = super::unix_socket_backend(&path, true);
        let mut reg = Registry::new();
        let (c, _) = reg.add("s", &backend).unwrap();
        let waker = Arc::new(Waker::default());
        c.attach(waker.clone(), false).unwrap();
        let mut client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.filename().starts_with("disconnected") {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        const TOTAL: usize = 4 << 20;
        let data: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
        // The reader starts late and reads slowly.
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let mut got = Vec::with_capacity(TOTAL);
            let mut buf = [0u8; 1000];
            while got.len() < TOTAL {
                let n = client.read(&mut buf).unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        let mut off = 0;
        let mut short_writes = 0;
        while off < TOTAL {
            let end = (off + 4096).min(TOTAL);
            let n = c.write(&data[off..end]);
            off += n;
            if n < end - (off - n) {
                short_writes += 1;
                let mut ready = waker.ready.lock().unwrap();
                while !*ready {
                    let (g, t) = waker
                        .cv
                        .wait_timeout(ready, Duration::from_secs(10))
                        .unwrap();
                    assert!(!t.timed_out(), "no output_ready");
                    ready = g;
                }
                *ready = false;
            }
        }
        assert!(short_writes > 0, "the queue never filled");
        let got = reader.join().unwrap();
        assert!(got == data, "bytes lost or reordered");
        drop(reg);
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
