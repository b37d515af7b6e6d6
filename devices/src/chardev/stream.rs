//! Backends on file descriptors (pty, socket, stdio, pipe, host serial
//! device, file input, udp): one I/O thread each, which polls the
//! descriptors, accepts and reconnects sockets, and moves bytes between
//! them and two bounded queues.
//!
//! Output: a frontend's write goes straight to the descriptor when
//! nothing is queued and the descriptor takes it now; the rest is queued
//! (up to [`OUT_CAP`] bytes) for the thread. When the queue is full the
//! write takes less than offered and the frontend holds the rest (a UART
//! keeps its transmitter busy, which the guest sees), until the thread
//! calls `output_ready`. Nothing is lost while a peer is connected; with
//! no peer (a socket without a client, a pty whose other side was
//! closed) output is discarded, as QEMU does.
//!
//! Input: the thread reads while fewer than [`IN_CAP`] bytes wait, then
//! calls `input_ready`; the frontend takes what fits with
//! `read_input`, which wakes the thread to read more.

use super::socket::{self, IacFilter, Target, TelnetMode};
use super::{Event, FrontendSlot};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Output queued for a slow peer before writes start taking less.
pub const OUT_CAP: usize = 64 * 1024;
/// Input read ahead of the frontend.
pub const IN_CAP: usize = 4096;
/// How often a hung-up pty is checked for a new reader.
const PTY_RECHECK: Duration = Duration::from_millis(100);

/// How the descriptors come and go.
pub(crate) enum Mode {
    /// One pair for the backend's life (stdio, pipe, host device, file
    /// input, udp).
    Fixed,
    /// A pty master: hung up while no one has the other side open.
    Pty,
    /// A listening socket serving one client at a time.
    Server {
        listener: OwnedFd,
        telnet: TelnetMode,
        unix_path: Option<std::path::PathBuf>,
    },
    /// A client socket; with `reconnect`, connects again that many
    /// seconds after losing (or failing to make) its connection.
    Client { target: Target, reconnect: u64 },
}

/// The descriptors of the current connection.
pub(crate) struct Conn {
    pub rd: Option<RawFd>,
    pub wr: Option<RawFd>,
    /// Writes to `wr` never block (our own sockets and ptys); other
    /// descriptors are polled before a direct write.
    pub nonblocking: bool,
    /// Closed with the connection (stdio is borrowed, not owned).
    pub _owned: Vec<OwnedFd>,
}

struct State {
    conn: Option<Conn>,
    /// No more input from `rd` (end of file).
    input_eof: bool,
    out: VecDeque<u8>,
    input: VecDeque<u8>,
    /// A write took less than offered: call `output_ready` once room is
    /// back.
    want_output: bool,
    /// A pty whose other side is closed.
    hung_up: bool,
    /// When a client tries to connect next.
    next_connect: Option<Instant>,
    filename: String,
    stop: bool,
    /// Tell the frontend about waiting input again.
    renotify: bool,
    /// Opened/closed, for the frontend (told outside the lock).
    events: Vec<Event>,
    /// Telnet commands are taken out of the client's input.
    iac: IacFilter,
    /// Telnet breaks for the frontend.
    breaks: usize,
}

pub(crate) struct Shared {
    st: Mutex<State>,
    wake: OwnedFd,
    slot: Arc<FrontendSlot>,
    mode: Mode,
    /// The filename when no peer is connected (`disconnected:...`).
    disconnected_name: String,
}

pub(crate) struct Stream {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every stream, for the flush at process exit.
static ALL: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

extern "C" fn flush_at_exit() {
    let all: Vec<Arc<Shared>> = ALL
        .try_lock()
        .map(|v| v.iter().filter_map(Weak::upgrade).collect())
        .unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(1);
    for s in all {
        s.flush_until(deadline);
    }
}

fn register_exit_flush(s: &Arc<Shared>) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a plain extern "C" function with no
        // arguments, as atexit expects.
        unsafe { libc::atexit(flush_at_exit) };
    });
    let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|w| w.strong_count() > 0);
    all.push(Arc::downgrade(s));
}

pub(crate) fn poll_one(fd: RawFd, events: i16, timeout_ms: i32) -> i16 {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if n > 0 {
        p.revents
    } else {
        0
    }
}

pub(crate) fn write_fd(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes for the whole call.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

pub(crate) fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes for the whole call.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn pty_hung_up(fd: RawFd) -> bool {
    poll_one(fd, libc::POLLIN, 0) & libc::POLLHUP != 0
}

impl Stream {
    /// Starts the I/O thread. `conn` is the first connection (None for
    /// a server still listening or a client still to connect).
    pub fn start(
        label: &str,
        mode: Mode,
        conn: Option<Conn>,
        filename: String,
        disconnected_name: String,
        slot: Arc<FrontendSlot>,
    ) -> io::Result<Stream> {
        // SAFETY: eventfd has no memory-safety preconditions.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: eventfd returned a fresh descriptor we now own.
        let wake = unsafe { OwnedFd::from_raw_fd(efd) };
        let next_connect = match &mode {
            Mode::Client { reconnect, .. } if conn.is_none() && *reconnect > 0 => {
                Some(Instant::now() + Duration::from_secs(*reconnect))
            }
            _ => None,
        };
        let shared = Arc::new(Shared {
            st: Mutex::new(State {
                conn,
                input_eof: false,
                out: VecDeque::new(),
                input: VecDeque::new(),
                want_output: false,
                hung_up: false,
                next_connect,
                filename,
                stop: false,
                renotify: false,
                events: Vec::new(),
                iac: IacFilter::new(match &mode {
                    Mode::Server { telnet, .. } => *telnet,
                    _ => TelnetMode::Off,
                }),
                breaks: 0,
            }),
            wake,
            slot,
            mode,
            disconnected_name,
        });
        register_exit_flush(&shared);
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("chardev {label}"))
            .spawn(move || s.run())?;
        Ok(Stream {
            shared,
            thread: Some(thread),
        })
    }

    pub fn filename(&self) -> String {
        lock(&self.shared.st).filename.clone()
    }

    pub fn write(&self, data: &[u8]) -> usize {
        self.shared.write(data)
    }

    pub fn read_input(&self, max: usize) -> Vec<u8> {
        let mut st = lock(&self.shared.st);
        let was_full = st.input.len() >= IN_CAP;
        let n = max.min(st.input.len());
        let v: Vec<u8> = st.input.drain(..n).collect();
        drop(st);
        if was_full && n > 0 {
            self.shared.wake();
        }
        v
    }

    pub fn has_input(&self) -> bool {
        !lock(&self.shared.st).input.is_empty()
    }

    /// Whether a peer is connected (always, for fixed descriptors).
    pub fn connected(&self) -> bool {
        lock(&self.shared.st).conn.is_some()
    }

    /// The I/O thread calls `input_ready` again if input waits.
    pub fn renotify_input(&self) {
        lock(&self.shared.st).renotify = true;
        self.shared.wake();
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        lock(&self.shared.st).stop = true;
        self.shared.wake();
        // The thread may wait for a frontend lock held by whoever drops
        // the last reference: wait a bounded time, then let it finish on
        // its own (it holds the descriptors until then).
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(1);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        let mut st = lock(&self.shared.st);
        st.conn = None;
        if let Mode::Server {
            unix_path: Some(p), ..
        } = &self.shared.mode
        {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Shared {
    fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // A full counter already wakes the thread.
        let _ = write_fd(self.wake.as_raw_fd(), &one);
    }

    fn write(&self, data: &[u8]) -> usize {
        let mut st = lock(&self.st);
        let Some((wr, nonblocking)) = st.conn.as_ref().and_then(|c| Some((c.wr?, c.nonblocking)))
        else {
            return data.len();
        };
        if matches!(self.mode, Mode::Pty) && st.hung_up {
            if pty_hung_up(wr) {
                return data.len();
            }
            st.hung_up = false;
        }
        let mut done = 0;
        if st.out.is_empty() {
            let ready = nonblocking || poll_one(wr, libc::POLLOUT, 0) & libc::POLLOUT != 0;
            if ready {
                match write_fd(wr, data) {
                    Ok(n) => done = n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // The thread notices the broken peer; drop this.
                    Err(_) => return data.len(),
                }
            }
        }
        let rest = &data[done..];
        if rest.is_empty() {
            return done;
        }
        let take = rest.len().min(OUT_CAP.saturating_sub(st.out.len()));
        let was_empty = st.out.is_empty();
        st.out.extend(&rest[..take]);
        if take < rest.len() {
            st.want_output = true;
        }
        drop(st);
        if was_empty && take > 0 {
            self.wake();
        }
        done + take
    }

    /// Drops the connection; a server listens again, a client with
    /// `reconnect` schedules its next attempt.
    fn disconnect(&self, st: &mut State) {
        st.conn = None;
        st.events.push(Event::Closed);
        st.out.clear();
        st.filename = self.disconnected_name.clone();
        if let Mode::Client { reconnect, .. } = &self.mode {
            if *reconnect > 0 {
                st.next_connect = Some(Instant::now() + Duration::from_secs(*reconnect));
            }
        }
    }

    /// Writes what is queued, blocking up to `deadline` (process exit).
    fn flush_until(&self, deadline: Instant) {
        let mut st = loop {
            match self.st.try_lock() {
                Ok(g) => break g,
                Err(std::sync::TryLockError::Poisoned(e)) => break e.into_inner(),
                Err(_) if Instant::now() >= deadline => return,
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        };
        let Some(wr) = st.conn.as_ref().and_then(|c| c.wr) else {
            return;
        };
        while !st.out.is_empty() && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if poll_one(wr, libc::POLLOUT, left.as_millis().max(1) as i32) & libc::POLLOUT == 0 {
                return;
            }
            let n = {
                let (a, _) = st.out.as_slices();
                match write_fd(wr, a) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(_) => return,
                }
            };
            st.out.drain(..n);
        }
    }

    fn run(self: Arc<Self>) {
        let mut buf = vec![0u8; IN_CAP];
        loop {
            let mut fds: Vec<libc::pollfd> = vec![libc::pollfd {
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let mut timeout: i32 = -1;
            {
                let st = lock(&self.st);
                if st.stop {
                    return;
                }
                match &st.conn {
                    Some(c) if !st.hung_up => {
                        let mut add = |fd: RawFd, ev: i16| {
                            if let Some(p) = fds.iter_mut().skip(1).find(|p| p.fd == fd) {
                                p.events |= ev;
                            } else {
                                fds.push(libc::pollfd {
                                    fd,
                                    events: ev,
                                    revents: 0,
                                });
                            }
                        };
                        if let Some(rd) = c.rd {
                            if !st.input_eof && st.input.len() < IN_CAP {
                                add(rd, libc::POLLIN);
                            }
                        }
                        if let Some(wr) = c.wr {
                            if !st.out.is_empty() {
                                add(wr, libc::POLLOUT);
                            } else if matches!(self.mode, Mode::Pty) {
                                // Notice the reader going away.
                                add(wr, 0);
                            }
                        }
                    }
                    Some(_) => timeout = PTY_RECHECK.as_millis() as i32,
                    None => match &self.mode {
                        Mode::Server { listener, .. } => fds.push(libc::pollfd {
                            fd: listener.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        }),
                        Mode::Client { .. } => {
                            if let Some(at) = st.next_connect {
                                timeout = at
                                    .saturating_duration_since(Instant::now())
                                    .as_millis()
                                    .min(i32::MAX as u128)
                                    as i32;
                            }
                        }
                        _ => {}
                    },
                }
            }
            // SAFETY: `fds` is a valid array of `fds.len()` pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            if fds[0].revents != 0 {
                let mut b = [0u8; 8];
                let _ = read_fd(self.wake.as_raw_fd(), &mut b);
            }
            let (mut input, output) = self.service(&fds[1..], &mut buf);
            let (events, breaks) = {
                let mut st = lock(&self.st);
                if std::mem::take(&mut st.renotify) && !st.input.is_empty() {
                    input = true;
                }
                (
                    std::mem::take(&mut st.events),
                    std::mem::take(&mut st.breaks),
                )
            };
            for ev in events {
                self.slot.event(ev);
            }
            for _ in 0..breaks {
                self.slot.send_break();
            }
            if input {
                self.slot.input_ready();
            }
            if output {
                self.slot.output_ready();
            }
        }
    }

    /// Handles what poll reported; returns whether to tell the frontend
    /// about new input and about room for output.
    fn service(&self, fds: &[libc::pollfd], buf: &mut [u8]) -> (bool, bool) {
        let mut st = lock(&self.st);
        let mut new_input = false;
        if st.conn.is_none() {
            match &self.mode {
                Mode::Server {
                    listener, telnet, ..
                } if fds.iter().any(|p| p.revents != 0) => {
                    if let Some((fd, name)) = socket::accept(listener.as_raw_fd(), *telnet) {
                        st.iac = IacFilter::new(*telnet);
                        st.filename = name;
                        st.conn = Some(socket::conn(fd));
                        st.events.push(Event::Opened);
                    }
                }
                Mode::Client { target, reconnect }
                    if st.next_connect.is_some_and(|at| Instant::now() >= at) =>
                {
                    st.next_connect = None;
                    match socket::connect(target) {
                        Ok((fd, name)) => {
                            st.filename = name;
                            st.conn = Some(socket::conn(fd));
                            st.events.push(Event::Opened);
                        }
                        Err(_) => {
                            st.next_connect = Some(Instant::now() + Duration::from_secs(*reconnect))
                        }
                    }
                }
                _ => {}
            }
            return (false, false);
        }
        if st.hung_up {
            let fd = st.conn.as_ref().and_then(|c| c.wr);
            if fd.is_some_and(|fd| !pty_hung_up(fd)) {
                st.hung_up = false;
            }
            return (false, false);
        }
        let (rd, wr) = match st.conn.as_ref() {
            Some(c) => (c.rd, c.wr),
            None => (None, None),
        };
        for p in fds {
            if p.revents == 0 {
                continue;
            }
            if Some(p.fd) == rd
                && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
                && st.input.len() < IN_CAP
            {
                let room = IN_CAP - st.input.len();
                match read_fd(p.fd, &mut buf[..room]) {
                    Ok(0) => {
                        if matches!(self.mode, Mode::Server { .. } | Mode::Client { .. }) {
                            self.disconnect(&mut st);
                            return (false, true);
                        }
                        st.input_eof = true;
                    }
                    Ok(n) => {
                        let mut data = buf[..n].to_vec();
                        let breaks = st.iac.filter(&mut data);
                        st.breaks += breaks;
                        if !data.is_empty() {
                            st.input.extend(&data);
                            new_input = true;
                        }
                    }
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => match self.mode {
                        Mode::Pty => st.hung_up = true,
                        Mode::Server { .. } | Mode::Client { .. } => {
                            self.disconnect(&mut st);
                            return (false, true);
                        }
                        _ => st.input_eof = true,
                    },
                }
            }
            if Some(p.fd) == wr {
                if matches!(self.mode, Mode::Pty) && p.revents & libc::POLLHUP != 0 {
                    // Nobody reads: drop what waits, as QEMU does.
                    st.hung_up = true;
                    st.out.clear();
                } else if p.revents & libc::POLLOUT != 0 && !st.out.is_empty() {
                    let r = {
                        let (a, _) = st.out.as_slices();
                        write_fd(p.fd, a)
                    };
                    match r {
                        Ok(n) => {
                            st.out.drain(..n);
                        }
                        Err(e)
                            if e.kind() == io::ErrorKind::WouldBlock
                                || e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            if matches!(self.mode, Mode::Server { .. } | Mode::Client { .. }) {
                                self.disconnect(&mut st);
                                return (new_input, true);
                            }
                            st.out.clear();
                        }
                    }
                } else if p.revents & (libc::POLLERR | libc::POLLHUP) != 0
                    && rd != wr
                    && !st.out.is_empty()
                {
                    st.out.clear();
                }
            }
        }
        let mut output = false;
        if st.want_output && st.out.len() <= OUT_CAP / 2 {
            st.want_output = false;
            output = true;
        }
        (new_input, output)
    }
}
