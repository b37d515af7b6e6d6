//! Monitors on their transports, and the main loop that serves them.
//!
//! A connection speaks QMP or, for a readline monitor, the human monitor
//! (`crate::hmp`). One thread, one mio poll: listening sockets, monitor
//! connections, stdio and signals. A socket monitor serves one client at a time, as a
//! QEMU socket chardev does; the next client is accepted when the first
//! leaves, and gets a fresh greeting and negotiation.
//!
//! A monitor on any other chardev (a mux it shares with a serial port,
//! a pty, ...) is that chardev's frontend ([`ChardevMonitor`]): the
//! chardev's thread queues what happened (input, room for output, the
//! backend opening, a mux moving the focus) and wakes the main loop,
//! which serves the queue in order.

use crate::commands::Vmm;
use crate::machine::MachineEvent;
use crate::vm::{Cause, LoopControl};
use devices::chardev::{Chardev, Event, Frontend};
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use qmp::server::{event_message, greeting, Monitor};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A client that leaves this much output unread is disconnected, so that
/// it cannot make the VMM hold unbounded memory.
pub const MAX_PENDING_OUTPUT: usize = 16 << 20;

/// Where a monitor listens or connects.
#[derive(Clone, Debug, PartialEq)]
pub enum Endpoint {
    Unix {
        path: PathBuf,
    },
    Tcp {
        host: String,
        port: u16,
    },
    Stdio,
    /// A frontend of the registry's chardev with this label.
    Chardev(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct MonitorSpec {
    pub endpoint: Endpoint,
    /// Listen (`server`) or connect.
    pub server: bool,
    /// With `server`, wait at start-up for the first client.
    pub wait: bool,
    pub pretty: bool,
    /// A human monitor (`mode=readline`) rather than QMP.
    pub hmp: bool,
}

/// What a connection speaks.
enum Protocol {
    Qmp(Monitor),
    Hmp(Box<crate::hmp::Session>),
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
    Stdio,
    /// The handle of a chardev frontend; never at its end.
    Chardev(Chardev),
}

impl Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
            Stream::Stdio => read_fd(libc::STDIN_FILENO, buf),
            Stream::Chardev(c) => {
                let bytes = c.read_input(buf.len());
                if bytes.is_empty() {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                buf[..bytes.len()].copy_from_slice(&bytes);
                Ok(bytes.len())
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
            Stream::Stdio => write_fd(libc::STDOUT_FILENO, buf),
            Stream::Chardev(c) => match c.write(buf) {
                // Full: the chardev says when there is room.
                0 if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
                n => Ok(n),
            },
        }
    }
}

/// What a chardev told its monitor frontend, in order.
enum Note {
    Input,
    Output,
    Event(Event),
}

/// A monitor as a chardev's frontend: notes for the main loop.
pub struct MonitorFrontend {
    notes: Mutex<VecDeque<Note>>,
    wake: Arc<MachineEvents>,
}

impl MonitorFrontend {
    fn note(&self, n: Note) {
        let mut q = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        // Consecutive input or output notes say nothing more.
        let same = matches!(
            (q.back(), &n),
            (Some(Note::Input), Note::Input) | (Some(Note::Output), Note::Output)
        );
        if !same {
            q.push_back(n);
        }
        drop(q);
        self.wake.wake();
    }

    fn take(&self) -> Vec<Note> {
        self.notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }
}

impl Frontend for MonitorFrontend {
    fn input_ready(&self) {
        self.note(Note::Input);
    }

    fn output_ready(&self) {
        self.note(Note::Output);
    }

    /// A monitor ignores breaks, as QEMU's does.
    fn send_break(&self) {}

    fn event(&self, ev: Event) {
        self.note(Note::Event(ev));
    }
}

/// A monitor attached to a chardev of the registry, waiting for the
/// main loop.
pub struct ChardevMonitor {
    label: String,
    chardev: Chardev,
    frontend: Arc<MonitorFrontend>,
    hmp: bool,
    pretty: bool,
}

impl ChardevMonitor {
    /// Attaches a monitor to `chardev` (on a mux, it takes the focus
    /// as any new frontend does).
    pub fn attach(
        chardev: &Chardev,
        hmp: bool,
        pretty: bool,
        wake: &Arc<MachineEvents>,
    ) -> Result<ChardevMonitor, String> {
        let frontend = Arc::new(MonitorFrontend {
            notes: Mutex::new(VecDeque::new()),
            wake: wake.clone(),
        });
        let handle = chardev.attach(frontend.clone(), false)?;
        Ok(ChardevMonitor {
            label: chardev.label().to_string(),
            chardev: handle,
            frontend,
            hmp,
            pretty,
        })
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor this process owns for its lifetime.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes for the whole call.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn write_fd(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes for the whole call.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

struct Connection {
    stream: Stream,
    protocol: Protocol,
    out: Vec<u8>,
}

enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

struct Port {
    spec: MonitorSpec,
    listener: Option<Listener>,
    conn: Option<Connection>,
    /// A chardev frontend's notes.
    frontend: Option<Arc<MonitorFrontend>>,
}

pub struct MonitorError(pub String);

impl std::fmt::Display for MonitorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn listen(spec: &MonitorSpec) -> Result<Listener, MonitorError> {
    match &spec.endpoint {
        Endpoint::Unix { path } => {
            // A stale socket from an earlier run is replaced, as QEMU does.
            let _ = std::fs::remove_file(path);
            let l = UnixListener::bind(path).map_err(|e| {
                MonitorError(format!("Failed to bind socket to {}: {e}", path.display()))
            })?;
            Ok(Listener::Unix(l, path.clone()))
        }
        Endpoint::Tcp { host, port } => {
            let addr = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| {
                    MonitorError(format!("address resolution failed for {host}:{port}: {e}"))
                })?
                .next()
                .ok_or_else(|| {
                    MonitorError(format!("address resolution failed for {host}:{port}"))
                })?;
            let std_listener = std::net::TcpListener::bind(addr)
                .map_err(|e| MonitorError(format!("Failed to bind socket: {e}")))?;
            std_listener
                .set_nonblocking(true)
                .map_err(|e| MonitorError(format!("Failed to bind socket: {e}")))?;
            Ok(Listener::Tcp(TcpListener::from_std(std_listener)))
        }
        Endpoint::Stdio | Endpoint::Chardev(_) => Err(MonitorError("only sockets listen".into())),
    }
}

fn connect(spec: &MonitorSpec) -> Result<Stream, MonitorError> {
    match &spec.endpoint {
        Endpoint::Unix { path } => {
            let s = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
                MonitorError(format!("Failed to connect socket {}: {e}", path.display()))
            })?;
            s.set_nonblocking(true)
                .map_err(|e| MonitorError(e.to_string()))?;
            Ok(Stream::Unix(UnixStream::from_std(s)))
        }
        Endpoint::Tcp { host, port } => {
            let s = std::net::TcpStream::connect((host.as_str(), *port))
                .map_err(|e| MonitorError(format!("Failed to connect socket: {e}")))?;
            s.set_nonblocking(true)
                .map_err(|e| MonitorError(e.to_string()))?;
            Ok(Stream::Tcp(TcpStream::from_std(s)))
        }
        Endpoint::Stdio => Ok(Stream::Stdio),
        Endpoint::Chardev(label) => Err(MonitorError(format!(
            "chardev '{label}' is not a transport of its own"
        ))),
    }
}

impl Port {
    fn describe(&self) -> String {
        match &self.spec.endpoint {
            Endpoint::Unix { path } => format!("disconnected:unix:{},server", path.display()),
            Endpoint::Tcp { host, port } => format!("disconnected:tcp:{host}:{port},server"),
            Endpoint::Stdio => "stdio".into(),
            Endpoint::Chardev(label) => label.clone(),
        }
    }
}

const SIGNAL_TOKEN: Token = Token(usize::MAX - 1);
const WAKER_TOKEN: Token = Token(usize::MAX - 2);

/// Events from vCPU threads, waiting for the main loop, which they wake.
#[derive(Default)]
pub struct MachineEvents {
    items: std::sync::Mutex<Vec<MachineEvent>>,
    waker: std::sync::OnceLock<mio::Waker>,
}

impl MachineEvents {
    pub fn push(&self, event: MachineEvent) {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
        if let Some(w) = self.waker.get() {
            // A failed wake leaves the event for the next iteration.
            let _ = w.wake();
        }
    }

    /// Wakes the main loop (a chardev monitor has notes).
    pub fn wake(&self) {
        if let Some(w) = self.waker.get() {
            let _ = w.wake();
        }
    }

    fn drain(&self) -> Vec<MachineEvent> {
        std::mem::take(&mut *self.items.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn listener_token(i: usize) -> Token {
    Token(2 * i)
}

fn conn_token(i: usize) -> Token {
    Token(2 * i + 1)
}

/// The main loop: owns the monitors and the VM's control plane.
pub struct MainLoop {
    poll: Poll,
    ports: Vec<Port>,
    signals: OwnedFd,
    /// The port on a stdin that epoll refuses (a regular file), served on
    /// every iteration until its end.
    unpollable_stdin: Option<usize>,
    machine_events: Arc<MachineEvents>,
    /// One read buffer for every connection, allocated once.
    read_buf: Vec<u8>,
    pub vmm: Vmm,
}

/// Blocks SIGINT, SIGTERM and SIGHUP and returns a signalfd that reports
/// them, so that they are handled in the main loop. Call before any other
/// thread starts, so that every thread inherits the mask.
pub fn block_termination_signals() -> io::Result<OwnedFd> {
    // SAFETY: plain libc calls on a local, initialised sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

impl MainLoop {
    /// Opens every monitor; for `server` without `nowait`, waits for the
    /// first client, as QEMU does before it starts the machine.
    pub fn new(
        specs: Vec<MonitorSpec>,
        chardev_monitors: Vec<ChardevMonitor>,
        signals: OwnedFd,
        machine_events: Arc<MachineEvents>,
        vmm: Vmm,
    ) -> Result<MainLoop, MonitorError> {
        let poll = Poll::new().map_err(|e| MonitorError(format!("poll: {e}")))?;
        let waker = mio::Waker::new(poll.registry(), WAKER_TOKEN)
            .map_err(|e| MonitorError(format!("poll: {e}")))?;
        let _ = machine_events.waker.set(waker);
        poll.registry()
            .register(
                &mut SourceFd(&signals.as_raw_fd()),
                SIGNAL_TOKEN,
                Interest::READABLE,
            )
            .map_err(|e| MonitorError(format!("poll: {e}")))?;
        let mut ml = MainLoop {
            poll,
            ports: Vec::new(),
            signals,
            unpollable_stdin: None,
            machine_events,
            read_buf: vec![0; 65536],
            vmm,
        };
        for (i, spec) in specs.into_iter().enumerate() {
            let mut port = Port {
                spec,
                listener: None,
                conn: None,
                frontend: None,
            };
            if port.spec.endpoint == Endpoint::Stdio {
                // Reads must not block the main loop (QEMU's stdio
                // chardev makes stdin non-blocking too).
                set_nonblocking(libc::STDIN_FILENO)
                    .map_err(|e| MonitorError(format!("stdio: {e}")))?;
                let registered = ml.poll.registry().register(
                    &mut SourceFd(&libc::STDIN_FILENO),
                    conn_token(i),
                    Interest::READABLE,
                );
                match registered {
                    Ok(()) => {}
                    // A regular file cannot be polled: it is always readable.
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                        ml.unpollable_stdin = Some(i)
                    }
                    Err(e) => return Err(MonitorError(format!("stdio: {e}"))),
                }
                if port.spec.hmp {
                    // The monitor echoes and edits the line itself; Ctrl-C
                    // stays a signal.
                    devices::chardev::set_stdin_raw(true);
                }
                port.conn = Some(ml.new_connection(Stream::Stdio, &port.spec));
            } else if port.spec.server {
                let mut listener = listen(&port.spec)?;
                if port.spec.wait {
                    eprintln!("QEMU waiting for connection on: {}", port.describe());
                    let stream = accept_blocking(&mut listener)?;
                    port.conn = Some(ml.open_connection(i, stream, &port.spec)?);
                } else {
                    ml.register_listener(i, &mut listener)?;
                }
                port.listener = Some(listener);
            } else {
                let stream = connect(&port.spec)?;
                port.conn = Some(ml.open_connection(i, stream, &port.spec)?);
            }
            ml.ports.push(port);
        }
        for m in chardev_monitors {
            let spec = MonitorSpec {
                endpoint: Endpoint::Chardev(m.label),
                server: false,
                wait: false,
                pretty: m.pretty,
                hmp: m.hmp,
            };
            // Banner, prompt and greeting wait for the backend to open.
            let protocol = if m.hmp {
                Protocol::Hmp(Box::new(crate::hmp::Session::on_chardev()))
            } else {
                Protocol::Qmp(Monitor::new(m.pretty))
            };
            ml.ports.push(Port {
                spec,
                listener: None,
                conn: Some(Connection {
                    stream: Stream::Chardev(m.chardev),
                    protocol,
                    out: Vec::new(),
                }),
                frontend: Some(m.frontend),
            });
        }
        Ok(ml)
    }

    fn register_listener(&self, i: usize, l: &mut Listener) -> Result<(), MonitorError> {
        let r = match l {
            Listener::Unix(l, _) => {
                self.poll
                    .registry()
                    .register(l, listener_token(i), Interest::READABLE)
            }
            Listener::Tcp(l) => {
                self.poll
                    .registry()
                    .register(l, listener_token(i), Interest::READABLE)
            }
        };
        r.map_err(|e| MonitorError(format!("poll: {e}")))
    }

    fn new_connection(&self, stream: Stream, spec: &MonitorSpec) -> Connection {
        let mut out = Vec::new();
        let protocol = if spec.hmp {
            Protocol::Hmp(Box::new(crate::hmp::Session::new(&mut out)))
        } else {
            let monitor = Monitor::new(spec.pretty);
            monitor.write_message(&greeting(&self.vmm.package), &mut out);
            Protocol::Qmp(monitor)
        };
        Connection {
            stream,
            protocol,
            out,
        }
    }

    fn open_connection(
        &self,
        i: usize,
        mut stream: Stream,
        spec: &MonitorSpec,
    ) -> Result<Connection, MonitorError> {
        let interest = Interest::READABLE | Interest::WRITABLE;
        let r = match &mut stream {
            Stream::Unix(s) => self.poll.registry().register(s, conn_token(i), interest),
            Stream::Tcp(s) => self.poll.registry().register(s, conn_token(i), interest),
            Stream::Stdio | Stream::Chardev(_) => Ok(()),
        };
        r.map_err(|e| MonitorError(format!("poll: {e}")))?;
        Ok(self.new_connection(stream, spec))
    }

    /// Serves until the VM asks to exit; returns the exit status.
    pub fn run(&mut self) -> i32 {
        let mut events = Events::with_capacity(64);
        loop {
            if let Some(status) = self.after_work() {
                return status;
            }
            if let Some(i) = self.unpollable_stdin {
                self.serve(i);
                continue;
            }
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("vmm: poll: {e}");
                return 1;
            }
            for event in events.iter() {
                let token = event.token();
                if token == SIGNAL_TOKEN {
                    self.handle_signals();
                } else if token == WAKER_TOKEN {
                    // Drained in after_work.
                } else if token.0 % 2 == 0 {
                    self.accept(token.0 / 2);
                } else {
                    self.serve(token.0 / 2);
                }
            }
        }
    }

    /// Carries out the VM's requests, hands events to the monitors and
    /// writes what is pending; `Some(status)` when the process should end.
    fn after_work(&mut self) -> Option<i32> {
        self.serve_chardev_monitors();
        for event in self.machine_events.drain() {
            if let MachineEvent::CommitAll = event {
                // As QEMU's mux: errors are not reported anywhere.
                let _ = self.vmm.block.commit_all();
                continue;
            }
            match self.vmm.vm.handle_machine_event(event) {
                Ok(LoopControl::Continue) => {}
                Ok(LoopControl::Exit(status)) => {
                    self.broadcast_events();
                    self.flush_before_exit();
                    return Some(status);
                }
                Err(e) => eprintln!("vmm: {e}"),
            }
        }
        let control = self.vmm.vm.process_requests();
        self.broadcast_events();
        self.flush_all();
        match control {
            Ok(LoopControl::Continue) => None,
            Ok(LoopControl::Exit(status)) => {
                self.flush_before_exit();
                Some(status)
            }
            Err(e) => {
                eprintln!("vmm: {e}");
                self.flush_before_exit();
                Some(1)
            }
        }
    }

    fn broadcast_events(&mut self) {
        self.broadcast_events_with(None);
    }

    /// Serves what the chardevs told their monitors, in order.
    fn serve_chardev_monitors(&mut self) {
        for i in 0..self.ports.len() {
            let Some(frontend) = self.ports[i].frontend.clone() else {
                continue;
            };
            for note in frontend.take() {
                match note {
                    Note::Input => self.serve(i),
                    Note::Output => {}
                    Note::Event(ev) => self.chardev_event(i, ev),
                }
            }
        }
    }

    /// The backend opened or closed, or the mux moved the focus.
    fn chardev_event(&mut self, i: usize, ev: Event) {
        let pretty = self.ports[i].spec.pretty;
        let Some(conn) = self.ports[i].conn.as_mut() else {
            return;
        };
        match (&mut conn.protocol, ev) {
            (Protocol::Hmp(s), Event::Opened) => s.opened(&mut conn.out),
            (Protocol::Hmp(s), Event::MuxIn) => s.focus_in(&mut conn.out),
            (Protocol::Hmp(s), Event::MuxOut) => {
                s.focus_out(&mut conn.out);
                let _ = flush(conn);
                if let Protocol::Hmp(s) = &mut conn.protocol {
                    s.hold();
                }
            }
            (Protocol::Qmp(m), Event::Opened) => {
                // A new peer: a fresh negotiation and the greeting.
                *m = Monitor::new(pretty);
                m.write_message(&greeting(&self.vmm.package), &mut conn.out);
            }
            _ => {}
        }
    }

    /// Writes pending events to every negotiated monitor, including
    /// `current`, the connection being served (taken out of its port).
    fn broadcast_events_with(&mut self, mut current: Option<&mut Connection>) {
        for (event, when) in self.vmm.vm.take_events() {
            let message = event_message(&event, when);
            let others = self.ports.iter_mut().filter_map(|p| p.conn.as_mut());
            for conn in others.chain(current.as_deref_mut()) {
                if let Protocol::Qmp(m) = &conn.protocol {
                    if m.negotiated() {
                        m.write_message(&message, &mut conn.out);
                    }
                }
            }
        }
    }

    fn handle_signals(&mut self) {
        let mut buf = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        while let Ok(n) = read_fd(self.signals.as_raw_fd(), &mut buf) {
            if n < buf.len() {
                break;
            }
            let signo = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
            eprintln!("vmm: terminating on signal {signo}");
            self.vmm.vm.no_shutdown = false;
            self.vmm.vm.request_shutdown(Cause::HostSignal);
        }
    }

    fn accept(&mut self, i: usize) {
        let Some(port) = self.ports.get_mut(i) else {
            return;
        };
        if port.conn.is_some() {
            return;
        }
        let accepted = match port.listener.as_mut() {
            Some(Listener::Unix(l, _)) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Some(Listener::Tcp(l)) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            None => return,
        };
        let Ok(stream) = accepted else { return };
        // One client at a time: stop listening until it leaves.
        if let Some(l) = port.listener.as_mut() {
            let _ = match l {
                Listener::Unix(l, _) => self.poll.registry().deregister(l),
                Listener::Tcp(l) => self.poll.registry().deregister(l),
            };
        }
        let spec = port.spec.clone();
        match self.open_connection(i, stream, &spec) {
            Ok(conn) => self.ports[i].conn = Some(conn),
            Err(e) => {
                eprintln!("vmm: monitor: {e}");
                self.relisten(i);
            }
        }
    }

    fn relisten(&mut self, i: usize) {
        let mut listener = self.ports[i].listener.take();
        if let Some(l) = listener.as_mut() {
            if let Err(e) = self.register_listener(i, l) {
                eprintln!("vmm: monitor: {e}");
            }
        }
        self.ports[i].listener = listener;
    }

    fn serve(&mut self, i: usize) {
        let mut buf = std::mem::take(&mut self.read_buf);
        let mut closed = false;
        let Some(mut conn) = self.ports.get_mut(i).and_then(|p| p.conn.take()) else {
            return;
        };
        loop {
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    if let Protocol::Hmp(session) = &mut conn.protocol {
                        session.receive(&buf[..n], &mut self.vmm, &mut conn.out);
                        // Events its commands caused go to the QMP monitors.
                        self.broadcast_events_with(Some(&mut conn));
                    } else {
                        self.serve_qmp(&mut conn, &buf[..n]);
                    }
                    if conn.out.len() > MAX_PENDING_OUTPUT {
                        closed = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if !closed && flush(&mut conn).is_err() {
            closed = true;
        }
        self.read_buf = buf;
        if closed {
            self.close(i, conn);
        } else {
            self.ports[i].conn = Some(conn);
        }
    }

    /// Runs the requests in `bytes` and queues their responses.
    fn serve_qmp(&mut self, conn: &mut Connection, bytes: &[u8]) {
        if let Protocol::Qmp(m) = &mut conn.protocol {
            m.receive(bytes);
        }
        loop {
            let Protocol::Qmp(monitor) = &mut conn.protocol else {
                return;
            };
            let vmm = &mut self.vmm;
            let mut exec = |name: &str, args: &serde_json::Map<String, serde_json::Value>| {
                qmp::qapi::dispatch(vmm, name, args)
            };
            let Some(response) = monitor.next_response(&mut exec) else {
                return;
            };
            // Events a command emits go out before its response, as in QEMU.
            self.broadcast_events_with(Some(&mut *conn));
            if let Protocol::Qmp(monitor) = &conn.protocol {
                monitor.write_message(&response, &mut conn.out);
            }
        }
    }

    fn close(&mut self, i: usize, mut conn: Connection) {
        let _ = flush(&mut conn);
        match &mut conn.stream {
            Stream::Chardev(_) => {
                // Output nobody takes is dropped; the frontend stays.
                conn.out.clear();
                self.ports[i].conn = Some(conn);
                return;
            }
            Stream::Unix(s) => {
                let _ = self.poll.registry().deregister(s);
            }
            Stream::Tcp(s) => {
                let _ = self.poll.registry().deregister(s);
            }
            Stream::Stdio => {
                // stdin at end of file: nothing more to read, but the
                // monitor stays and still gets its responses and events.
                self.unpollable_stdin = None;
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&libc::STDIN_FILENO));
                self.ports[i].conn = Some(conn);
                return;
            }
        }
        drop(conn);
        if self.ports[i].spec.server {
            self.relisten(i);
        }
    }

    fn flush_all(&mut self) {
        for i in 0..self.ports.len() {
            let Some(mut conn) = self.ports[i].conn.take() else {
                continue;
            };
            if conn.out.len() > MAX_PENDING_OUTPUT || flush(&mut conn).is_err() {
                self.close(i, conn);
            } else {
                self.ports[i].conn = Some(conn);
            }
        }
    }

    /// Last writes before the process ends: give each client a moment to
    /// take its final responses and events.
    fn flush_before_exit(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        for port in &mut self.ports {
            if let Some(conn) = port.conn.as_mut() {
                while !conn.out.is_empty() && !held(conn) && std::time::Instant::now() < deadline {
                    match flush(conn) {
                        Ok(()) if conn.out.is_empty() => break,
                        Ok(()) => std::thread::sleep(std::time::Duration::from_millis(1)),
                        Err(_) => break,
                    }
                }
            }
        }
        for port in &self.ports {
            if let Some(Listener::Unix(_, path)) = &port.listener {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// A human monitor on a mux that does not have the focus keeps its
/// output.
fn held(conn: &Connection) -> bool {
    matches!(&conn.protocol, Protocol::Hmp(s) if s.held())
}

/// Writes as much pending output as the peer takes now.
fn flush(conn: &mut Connection) -> io::Result<()> {
    if held(conn) {
        return Ok(());
    }
    let mut written = 0;
    let result = loop {
        if written == conn.out.len() {
            break Ok(());
        }
        match conn.stream.write(&conn.out[written..]) {
            Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        }
    };
    conn.out.drain(..written);
    result
}

fn accept_blocking(l: &mut Listener) -> Result<Stream, MonitorError> {
    loop {
        let r = match l {
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
        };
        match r {
            Ok(s) => return Ok(s),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                let fd = match l {
                    Listener::Unix(l, _) => l.as_raw_fd(),
                    Listener::Tcp(l) => l.as_raw_fd(),
                };
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call.
                unsafe { libc::poll(&mut pfd, 1, -1) };
            }
            Err(e) => return Err(MonitorError(format!("accept: {e}"))),
        }
    }
}
