//! virtio-blk's I/O thread: takes requests off the queues when the
//! driver kicks them (an eventfd KVM signals itself), sends reads and
//! writes to the host file straight from guest memory, many in flight at
//! once, and completes them as the host does: through io_uring with
//! `aio=native`, through a pool of worker threads with `aio=threads` (as
//! QEMU's thread pool) or where io_uring is unavailable. Requests
//! the direct path cannot take (a graph the drivers must see, unaligned
//! buffers under O_DIRECT, flush, discard, write-zeroes, get-id, and any
//! that failed there) run synchronously through the block backend.

use super::block::{BlockBackend, HostFile};
use super::VirtioInterrupt;
use crate::thread_pool::{IoThreadPool, Job};
use io_uring::{opcode, types, IoUring};
use qmp::qapi::BlockErrorAction;
use std::collections::VecDeque;
use std::io;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

const SECTOR: u64 = 512;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const T_DISCARD: u32 = 11;
const T_WRITE_ZEROES: u32 = 13;

const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

/// The largest transfer one request may ask for; a bigger one fails with
/// an I/O error instead of making the VMM allocate what the guest asks.
const MAX_REQUEST_BYTES: u64 = 32 << 20;
/// The longest the I/O thread busy-polls before it sleeps, and where a
/// growing poll time starts (QEMU's iothread defaults, poll-max-ns and
/// its initial step).
const POLL_MAX_NS: u64 = 32_000;
const POLL_START_NS: u64 = 4_000;

/// Buffers per request the direct path takes (the kernel's IOV_MAX).
const MAX_IOVECS: usize = 1024;
/// epoll tokens past the queue indices.
const TOKEN_CONTROL: u64 = u64::MAX;
const TOKEN_RING: u64 = u64::MAX - 1;
const TOKEN_POOL: u64 = u64::MAX - 2;

/// One guest buffer of a request.
#[derive(Clone, Copy)]
struct Segment {
    addr: GuestAddress,
    len: u32,
}

/// A request taken off a queue: where its data and status byte are.
struct Request {
    queue: u16,
    head: u16,
    kind: u32,
    sector: u64,
    /// The data buffers: device-readable for OUT, DISCARD and
    /// WRITE_ZEROES, device-writable for IN and GET_ID (pooled vectors,
    /// so that the hot path does not allocate).
    data: Vec<Segment>,
    data_len: u64,
    status: GuestAddress,
}

/// How a request ended: a status and the bytes written into the
/// driver's buffers, or stopped by an error policy (kept, and run again
/// when the VM continues).
enum Outcome {
    Done(u8, u32),
    Stop,
}

/// One transfer the host file is working on: a request, or adjacent
/// ones merged (QEMU's multi-request merging).
struct InFlight {
    file: HostFile,
    write: bool,
    /// Disk offset of the first byte.
    offset: u64,
    bytes: u64,
    started: Instant,
    /// A worker thread runs it (not io_uring).
    pooled: bool,
}

/// One transfer slot (an io_uring or thread pool job): the transfer in it, its requests and its iovecs,
/// which must stay where they are until the kernel is done with them.
#[derive(Default)]
struct Slot {
    busy: Option<InFlight>,
    requests: Vec<Request>,
    iovecs: Vec<libc::iovec>,
}

// SAFETY: the iovecs point into guest memory, which the thread owning
// the slots keeps mapped; they are plain addresses otherwise.
unsafe impl Send for Slot {}

/// What the VMM asks of the I/O thread.
enum Message {
    /// The VM stopped: finish what is in flight, start nothing new.
    Pause(mpsc::Sender<()>),
    /// The VM runs: retry what an error policy kept, serve the queues.
    Resume,
    /// The device is reset: finish what is in flight and end.
    Stop(mpsc::Sender<()>),
    /// The driver turned bus mastering off (finish what is in flight and
    /// touch guest memory no more) or back on.
    BusMaster(bool, mpsc::Sender<()>),
}

struct Control {
    wake: EventFd,
    messages: Mutex<VecDeque<Message>>,
}

/// Where the I/O loop runs: its own thread, or an iothread's.
enum Runner {
    Thread(JoinHandle<()>),
    /// Hears when the loop returned on the iothread.
    Hosted(mpsc::Receiver<()>),
}

/// The handle the device keeps on its I/O thread.
pub(super) struct Worker {
    control: Arc<Control>,
    runner: Option<Runner>,
}

/// Everything the I/O thread needs, handed over at activation.
pub(super) struct WorkerSetup {
    pub backend: Arc<dyn BlockBackend>,
    pub serial: String,
    pub merging: bool,
    /// The driver took VIRTIO_F_NOTIFY_ON_EMPTY.
    pub notify_on_empty: bool,
    pub mem: GuestMemoryMmap,
    pub queues: Vec<Queue>,
    pub interrupt: Arc<dyn VirtioInterrupt>,
    pub kicks: Vec<Arc<EventFd>>,
    /// `iothread=`: run the loop there, polling as long as it says.
    pub host: Option<crate::platform::IoThreadHandle>,
}

impl Worker {
    pub(super) fn spawn(setup: WorkerSetup) -> io::Result<Worker> {
        let control = Arc::new(Control {
            wake: EventFd::new(libc::EFD_NONBLOCK)?,
            messages: Mutex::new(VecDeque::new()),
        });
        let host = setup.host.clone();
        let server = Server::new(setup)?;
        let c = control.clone();
        let runner = match host {
            Some(h) => Runner::Hosted(h.0.attach(Box::new(Hosted::new(server, c)?))?),
            None => Runner::Thread(
                std::thread::Builder::new()
                    .name("virtio-blk-io".into())
                    .spawn(move || server.run(&c))?,
            ),
        };
        Ok(Worker {
            control,
            runner: Some(runner),
        })
    }

    fn send(&self, m: Message) {
        self.control
            .messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(m);
        let _ = self.control.wake.write(1);
    }

    /// Waits until nothing is in flight and the thread starts nothing.
    pub(super) fn pause(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(Message::Pause(tx));
        let _ = rx.recv();
    }

    pub(super) fn resume(&self) {
        self.send(Message::Resume);
    }

    /// Returns once the thread has acted on it (when turning off: once
    /// nothing is in flight).
    pub(super) fn bus_master(&self, on: bool) {
        let (tx, rx) = mpsc::channel();
        self.send(Message::BusMaster(on, tx));
        let _ = rx.recv();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let (tx, rx) = mpsc::channel();
        self.send(Message::Stop(tx));
        let _ = rx.recv();
        match self.runner.take() {
            Some(Runner::Thread(t)) => {
                let _ = t.join();
            }
            Some(Runner::Hosted(done)) => {
                let _ = done.recv();
            }
            None => {}
        }
    }
}

/// A device's loop on an iothread: the same server, driven a step at a
/// time by the iothread's loop (which busy-polls all its devices at once
/// and sleeps on their epoll descriptors).
struct Hosted {
    server: Server,
    control: Arc<Control>,
    epoll: Epoll,
    /// Without an event loop the device still answers the VMM.
    broken_loop: bool,
}

impl Hosted {
    fn new(server: Server, control: Arc<Control>) -> io::Result<Hosted> {
        let epoll = server.register(&control)?;
        Ok(Hosted {
            server,
            control,
            epoll,
            broken_loop: false,
        })
    }
}

impl crate::platform::HostedLoop for Hosted {
    fn fd(&self) -> std::os::fd::RawFd {
        self.epoll.as_raw_fd()
    }

    fn poll_ns(&self) -> u64 {
        self.server.poll_ns
    }

    fn poll_begin(&mut self) -> bool {
        self.server.poll_begin()
    }

    fn poll_check(&mut self) -> bool {
        self.server.poll_check()
    }

    fn poll_end(&mut self) -> bool {
        self.server.poll_end()
    }

    fn slept(&mut self, ns: u64) {
        self.server.adapt_poll_time(ns);
    }

    fn run_once(&mut self, polled: bool) -> bool {
        if self.broken_loop {
            return self.server.handle_messages(&self.control);
        }
        // Everything ready now: the iothread waits on this descriptor
        // edge-triggered, so nothing may stay behind.
        let mut events = [EpollEvent::default(); 16];
        loop {
            let n = match self.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.broken_loop = true;
                    return true;
                }
            };
            if !self.server.handle_events(&self.control, &events[..n]) {
                return false;
            }
            if n < events.len() {
                break;
            }
        }
        self.server.after_events(polled);
        true
    }
}

/// The next poll time after sleeping `slept_ns` with poll time `now`,
/// with QEMU's iothread knobs: shrunk (divided by poll-shrink, or to
/// nothing) when even poll-max-ns would not have caught the event, grown
/// (times poll-grow, 2 by default, from 4 us, up to poll-max-ns)
/// otherwise. QEMU leaves the time alone when the event came within it;
/// vmm grows it then too, which measured faster at queue depth 1 here
/// (random writes: 19.2-23.2 k against 16.8-19.5 k IOPS, three runs each).
fn next_poll_ns(now: u64, slept_ns: u64, [max, grow, shrink]: [u64; 3]) -> u64 {
    if max == 0 {
        0
    } else if slept_ns > max {
        now.checked_div(shrink).unwrap_or(0)
    } else {
        match now {
            0 => POLL_START_NS,
            p => p.saturating_mul(if grow == 0 { 2 } else { grow }),
        }
        .clamp(POLL_START_NS.min(max), max)
    }
}

/// The I/O thread's state: guest memory and queues, and the engine
/// that runs requests.
struct Server {
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    kicks: Vec<Arc<EventFd>>,
    exec: Exec,
    /// How long to poll now: grows while events come soon after the
    /// thread slept, drops to 0 when it slept longer than POLL_MAX_NS
    /// (QEMU's adaptive polling), so an idle device costs no CPU.
    poll_ns: u64,
    /// The iothread whose poll-max-ns bounds the polling (None: QEMU's
    /// default, POLL_MAX_NS).
    host: Option<crate::platform::IoThreadHandle>,
}

struct Exec {
    backend: Arc<dyn BlockBackend>,
    serial: String,
    merging: bool,
    notify_on_empty: bool,
    interrupt: Arc<dyn VirtioInterrupt>,
    ring: Option<(IoUring, EventFd)>,
    /// Workers for `aio=threads`, and for everything without io_uring.
    pool: IoThreadPool,
    /// Transfers the pool has (the rest of `in_flight` is io_uring's).
    pooled: usize,
    /// Completions taken from the pool (reused).
    pool_done: Vec<(u64, i32)>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    in_flight: usize,
    /// The slot being filled with adjacent requests; it goes to the ring
    /// when one that does not follow it comes, or the pass ends.
    staged: Option<usize>,
    /// Slots ready for the submission queue, in order.
    unsent: VecDeque<usize>,
    /// The host file for the direct path, looked up once per pass.
    host: Option<HostFile>,
    paused: bool,
    /// Bus mastering is off: the device must not reach guest memory.
    dma_off: bool,
    /// An error policy stopped the VM: requests wait for `Resume`.
    error_stopped: bool,
    /// Requests an error policy stopped, in order, to run again.
    retry: VecDeque<Request>,
    /// The driver broke the rules: nothing more is taken off the queues.
    broken: bool,
    /// Bounce buffer of the synchronous path.
    buffer: Vec<u8>,
    /// Descriptors of the chain being parsed (reused).
    descs: Vec<(Segment, bool)>,
    segment_pool: Vec<Vec<Segment>>,
    /// Queues with new used entries since their last interrupt check.
    used: Vec<bool>,
}

impl Server {
    fn new(s: WorkerSetup) -> io::Result<Server> {
        let depth: u32 = s.queues.iter().map(|q| u32::from(q.max_size())).sum();
        let entries = depth.clamp(1, 4096).next_power_of_two();
        // Without io_uring (an old kernel, a sandbox) the worker threads
        // take every transfer.
        // Cooperative task running: the kernel does not interrupt this
        // thread (an IPI, dear on a nested host) to post each completion;
        // it flags them, and the thread's next system call posts them
        // (the poll loop below makes one when the flag is up). Kernels
        // before 5.19 get a plain ring.
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(entries)
            .or_else(|_| IoUring::new(entries));
        let ring = match ring {
            Ok(ring) => {
                let fd = EventFd::new(libc::EFD_NONBLOCK)?;
                ring.submitter().register_eventfd(fd.as_raw_fd())?;
                Some((ring, fd))
            }
            Err(_) => None,
        };
        let slots = entries as usize;
        let pool = IoThreadPool::new("worker")?;
        let queues = s.queues.len();
        Ok(Server {
            mem: s.mem,
            queues: s.queues,
            kicks: s.kicks,
            poll_ns: 0,
            host: s.host,
            exec: Exec {
                backend: s.backend,
                serial: s.serial,
                merging: s.merging,
                notify_on_empty: s.notify_on_empty,
                interrupt: s.interrupt,
                ring,
                pool,
                pooled: 0,
                pool_done: Vec::new(),
                slots: (0..slots).map(|_| Slot::default()).collect(),
                free: (0..slots).rev().collect(),
                in_flight: 0,
                staged: None,
                unsent: VecDeque::new(),
                host: None,
                paused: false,
                dma_off: false,
                error_stopped: false,
                retry: VecDeque::new(),
                broken: false,
                buffer: Vec::new(),
                descs: Vec::new(),
                segment_pool: Vec::new(),
                used: vec![false; queues],
            },
        })
    }

    fn run(mut self, control: &Control) {
        let epoll = match self.register(control) {
            Ok(e) => e,
            Err(e) => {
                self.exec
                    .interrupt
                    .device_broken(&format!("virtio-blk I/O thread: {e}"));
                return self.serve_messages_only(control);
            }
        };
        let mut events = [EpollEvent::default(); 16];
        loop {
            // Busy-poll a while before sleeping (QEMU's iothread polling):
            // new requests are seen without the guest's notify exit, and
            // completions without a wake-up from epoll.
            let polled = self.poll_for_work();
            let timeout = if polled { 0 } else { -1 };
            let slept = Instant::now();
            let n = match epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.serve_messages_only(control),
            };
            if !polled {
                self.adapt_poll_time(slept.elapsed().as_nanos() as u64);
            }
            if !self.handle_events(control, &events[..n]) {
                return;
            }
            self.after_events(polled);
        }
    }

    /// Acts on what epoll reported; false once the VMM ended the loop.
    fn handle_events(&mut self, control: &Control, events: &[EpollEvent]) -> bool {
        for ev in events {
            match ev.data() {
                TOKEN_CONTROL => {
                    if !self.handle_messages(control) {
                        return false;
                    }
                }
                TOKEN_RING => {
                    if let Some((_, fd)) = &self.exec.ring {
                        let _ = fd.read();
                    }
                }
                // reap() takes the pool's completions.
                TOKEN_POOL => {}
                q => {
                    let q = q as usize;
                    if let Some(k) = self.kicks.get(q) {
                        let _ = k.read();
                    }
                    self.serve_queue(q);
                }
            }
        }
        true
    }

    /// The end of a pass: the queues again if polling found work, then
    /// completions and interrupts.
    fn after_events(&mut self, polled: bool) {
        if polled {
            for q in 0..self.queues.len() {
                self.serve_queue(q);
            }
        }
        self.reap();
        self.notify_used();
    }

    /// Spins up to POLL_NS for new requests or completions, with the
    /// queues' notifications off meanwhile (the driver need not exit to
    /// notify a device that is looking anyway); true when it found some.
    fn poll_for_work(&mut self) -> bool {
        if !self.poll_begin() {
            return false;
        }
        let start = Instant::now();
        loop {
            if self.poll_check() {
                return true;
            }
            if start.elapsed().as_nanos() as u64 >= self.poll_ns {
                break;
            }
            std::hint::spin_loop();
        }
        self.poll_end()
    }

    /// Polling starts: the queues' notifications go off. False when the
    /// device does not poll now (no poll time, paused, or the driver's
    /// rings unreadable).
    fn poll_begin(&mut self) -> bool {
        if self.poll_ns == 0 || self.exec.idle() {
            return false;
        }
        let Server { mem, queues, .. } = self;
        queues
            .iter_mut()
            .filter(|q| q.ready())
            .all(|q| q.disable_notification(mem).is_ok())
    }

    /// One look for new requests or completions while polling.
    fn poll_check(&mut self) -> bool {
        let Server {
            mem, queues, exec, ..
        } = self;
        if let Some((ring, _)) = exec.ring.as_mut() {
            if ring.submission().taskrun() {
                let _ = ring.submit();
            }
            if !ring.completion().is_empty() {
                return true;
            }
        }
        if exec.pooled > 0 && exec.pool.has_completions() {
            return true;
        }
        queues.iter().filter(|q| q.ready()).any(|q| {
            q.avail_idx(mem, std::sync::atomic::Ordering::Acquire)
                .is_ok_and(|a| a.0 != q.next_avail())
        })
    }

    /// Polling ends without work: notifications back on; a request that
    /// came in between is served now rather than waiting for a notify
    /// that will not come (true).
    fn poll_end(&mut self) -> bool {
        let Server { mem, queues, .. } = self;
        let mut found = false;
        for q in queues.iter_mut().filter(|q| q.ready()) {
            found |= q.enable_notification(mem).unwrap_or(true);
        }
        found
    }

    /// The thread slept `slept_ns` after polling found nothing: QEMU's
    /// adaptive polling with the iothread's poll-max-ns, poll-grow (0:
    /// double) and poll-shrink (0: stop polling), or its defaults.
    fn adapt_poll_time(&mut self, slept_ns: u64) {
        let params = self
            .host
            .as_ref()
            .map_or([POLL_MAX_NS, 0, 0], |h| h.0.poll_params());
        self.poll_ns = next_poll_ns(self.poll_ns, slept_ns, params);
    }

    fn register(&self, control: &Control) -> io::Result<Epoll> {
        let epoll = Epoll::new()?;
        let add = |fd: i32, token: u64| {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
        };
        add(control.wake.as_raw_fd(), TOKEN_CONTROL)?;
        if let Some((_, fd)) = &self.exec.ring {
            add(fd.as_raw_fd(), TOKEN_RING)?;
        }
        add(self.exec.pool.completion_fd(), TOKEN_POOL)?;
        for (i, k) in self.kicks.iter().enumerate() {
            add(k.as_raw_fd(), i as u64)?;
        }
        Ok(epoll)
    }

    /// Without an event loop the thread still answers the VMM, so that
    /// a pause or a reset never waits forever.
    fn serve_messages_only(mut self, control: &Control) {
        loop {
            // SAFETY: poll on one descriptor we own, with a valid array.
            let mut p = libc::pollfd {
                fd: control.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            unsafe { libc::poll(&mut p, 1, -1) };
            if !self.handle_messages(control) {
                return;
            }
        }
    }

    /// Runs the VMM's messages; false once the thread must end.
    fn handle_messages(&mut self, control: &Control) -> bool {
        let _ = control.wake.read();
        loop {
            let m = control
                .messages
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            match m {
                None => return true,
                Some(Message::Pause(done)) => {
                    self.exec.paused = true;
                    self.drain();
                    let _ = done.send(());
                }
                Some(Message::Resume) => {
                    self.exec.paused = false;
                    self.resume();
                }
                Some(Message::BusMaster(on, done)) => {
                    self.exec.dma_off = !on;
                    if on {
                        self.resume();
                    } else {
                        self.drain();
                    }
                    let _ = done.send(());
                }
                Some(Message::Stop(done)) => {
                    self.drain();
                    let _ = done.send(());
                    return false;
                }
            }
        }
    }

    /// Waits for every request in flight.
    fn drain(&mut self) {
        while self.exec.in_flight > 0 {
            self.exec.submit();
            if self.exec.in_flight > self.exec.pooled {
                let Some((ring, _)) = &self.exec.ring else {
                    break;
                };
                if let Err(e) = ring.submit_and_wait(1) {
                    if e.kind() != io::ErrorKind::Interrupted {
                        break;
                    }
                }
            } else {
                self.exec.pool.wait();
            }
            self.reap();
        }
        self.notify_used();
    }

    /// The VM runs again: requests an error policy kept go first, in
    /// order (QEMU's virtio_blk_dma_restart), then the queues.
    fn resume(&mut self) {
        if self.exec.paused || self.exec.dma_off {
            return;
        }
        self.exec.error_stopped = false;
        self.exec.refresh_host();
        while let Some(req) = self.exec.retry.pop_front() {
            let Some(queue) = self.queues.get_mut(usize::from(req.queue)) else {
                continue;
            };
            self.exec.dispatch(&self.mem, queue, req);
            if self.exec.error_stopped {
                break;
            }
        }
        self.exec.submit();
        for q in 0..self.queues.len() {
            self.serve_queue(q);
        }
        self.notify_used();
    }

    /// Takes every available request off queue `index` and starts it
    /// (QEMU's virtio_blk_handle_vq: notifications off while taking).
    fn serve_queue(&mut self, index: usize) {
        let Server {
            mem, queues, exec, ..
        } = self;
        if exec.idle() {
            return;
        }
        let Some(queue) = queues.get_mut(index) else {
            return;
        };
        if !queue.ready() {
            return;
        }
        exec.refresh_host();
        if let Err(why) = exec.take_requests(mem, queue, index as u16) {
            exec.broken = true;
            exec.interrupt.device_broken(&why);
        }
        exec.submit();
    }

    /// Completes what the host finished.
    fn reap(&mut self) {
        let Server {
            mem, queues, exec, ..
        } = self;
        if exec.pooled > 0 {
            let mut done = std::mem::take(&mut exec.pool_done);
            exec.pool.take_completions(&mut done);
            for (slot, result) in done.drain(..) {
                exec.complete(mem, queues, slot as usize, result);
            }
            exec.pool_done = done;
        }
        let mut done = [(0u64, 0i32); 64];
        loop {
            let Some((ring, _)) = exec.ring.as_mut() else {
                return;
            };
            let mut n = 0;
            for cqe in ring.completion().take(done.len()) {
                done[n] = (cqe.user_data(), cqe.result());
                n += 1;
            }
            if n == 0 {
                return;
            }
            for &(slot, result) in &done[..n] {
                exec.complete(mem, queues, slot as usize, result);
            }
        }
    }

    /// Interrupts for the queues that used buffers, where the driver
    /// wants one.
    fn notify_used(&mut self) {
        for (i, queue) in self.queues.iter_mut().enumerate() {
            if !std::mem::take(&mut self.exec.used[i]) {
                continue;
            }
            let wanted = interrupt_wanted(queue, &self.mem);
            // NOTIFY_ON_EMPTY (legacy drivers): the queue ran dry with
            // nothing in flight, whatever the driver suppressed.
            let ran_dry = self.exec.notify_on_empty
                && self.exec.in_flight == 0
                && self.exec.retry.is_empty()
                && queue
                    .avail_idx(&self.mem, std::sync::atomic::Ordering::Acquire)
                    .is_ok_and(|a| a.0 == queue.next_avail());
            if wanted || ran_dry {
                self.exec.interrupt.notify_queue(i as u16);
            }
        }
    }
}

impl Exec {
    /// Whether the thread takes no new requests now.
    fn idle(&self) -> bool {
        self.paused || self.dma_off || self.error_stopped || self.broken
    }

    fn refresh_host(&mut self) {
        self.host = self.backend.host_file();
    }

    fn take_requests(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
        index: u16,
    ) -> Result<(), String> {
        let qerr = |e: virtio_queue::Error| format!("queue {index}: {e}");
        loop {
            queue.disable_notification(mem).map_err(qerr)?;
            loop {
                if self.error_stopped {
                    return Ok(());
                }
                let chain = queue.iter(mem).map_err(qerr)?.next();
                let Some(chain) = chain else {
                    break;
                };
                let req = self.parse(mem, index, chain)?;
                self.dispatch(mem, queue, req);
                // A transfer that can take no more requests goes to the
                // host now, not at the end of the batch: the host disk
                // answers a steady stream faster than bursts (QD 32
                // random reads: 72 k IOPS batched, 86-90 k sent at once).
                if !self.unsent.is_empty() {
                    self.send_unsent();
                }
            }
            // A request that raced with re-enabling is not left waiting.
            if !queue.enable_notification(mem).map_err(qerr)? {
                return Ok(());
            }
        }
    }

    /// Reads a chain's header and finds its data and status buffers; a
    /// chain that breaks the rules breaks the device (QEMU's
    /// virtio_error).
    fn parse(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: u16,
        chain: DescriptorChain<&GuestMemoryMmap>,
    ) -> Result<Request, String> {
        let head = chain.head_index();
        self.descs.clear();
        let mut last_has_next = true;
        let mut seen_writable = false;
        for d in chain {
            last_has_next = d.has_next();
            let seg = Segment {
                addr: d.addr(),
                len: d.len(),
            };
            // A buffer may span two regions (NUMA nodes laid end to
            // end); the direct path then leaves it to the copying one.
            if seg.len > 0 && !mem.check_range(seg.addr, seg.len as usize) {
                return Err(format!(
                    "queue {queue}: descriptor outside guest memory in chain {head}"
                ));
            }
            if !d.is_write_only() && seen_writable {
                return Err(format!(
                    "queue {queue}: incorrect order for descriptors in chain {head}"
                ));
            }
            seen_writable |= d.is_write_only();
            self.descs.push((seg, d.is_write_only()));
        }
        // The iterator stops at the queue size or an index out of range;
        // a last descriptor that still says "next" means the chain loops,
        // is too long, or points nowhere.
        if last_has_next {
            return Err(format!(
                "queue {queue}: descriptor chain {head} loops or leaves the table"
            ));
        }
        let split = self.descs.iter().position(|(_, w)| *w);
        let (readable, writable) = self.descs.split_at(split.unwrap_or(self.descs.len()));
        let mut header = [0u8; 16];
        let writable_len: u64 = writable.iter().map(|(s, _)| u64::from(s.len)).sum();
        if !gather(mem, readable.iter().map(|(s, _)| *s), 0, &mut header) || writable_len == 0 {
            return Err(format!("queue {queue}: virtio-blk missing headers"));
        }
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut sector = [0u8; 8];
        sector.copy_from_slice(&header[8..16]);
        let mut data = self.segment_pool.pop().unwrap_or_default();
        data.clear();
        // The status is the last writable byte.
        let mut status = GuestAddress(0);
        let mut left = writable_len - 1;
        for (s, _) in writable {
            let take = u64::from(s.len).min(left);
            if take < u64::from(s.len) {
                status = GuestAddress(s.addr.0 + take);
            }
            if take > 0 && matches!(kind, T_IN | T_GET_ID) {
                data.push(Segment {
                    addr: s.addr,
                    len: take as u32,
                });
            }
            left -= take;
        }
        if !matches!(kind, T_IN | T_GET_ID) {
            let mut skip = 16u64;
            for (s, _) in readable {
                let cut = skip.min(u64::from(s.len));
                skip -= cut;
                if cut < u64::from(s.len) {
                    data.push(Segment {
                        addr: GuestAddress(s.addr.0 + cut),
                        len: s.len - cut as u32,
                    });
                }
            }
        }
        let data_len = data.iter().map(|s| u64::from(s.len)).sum();
        Ok(Request {
            queue,
            head,
            kind,
            sector: u64::from_le_bytes(sector),
            data,
            data_len,
            status,
        })
    }

    /// Starts a request on the direct path where it can go, else runs it
    /// here and now.
    fn dispatch(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue, req: Request) {
        let req = match self.start_direct(mem, req) {
            Ok(()) => return,
            Err(req) => req,
        };
        self.run_sync(mem, queue, req);
    }

    fn run_sync(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue, req: Request) {
        match self.execute(mem, &req) {
            Outcome::Done(status, written) => self.finish(mem, queue, req, status, written),
            Outcome::Stop => {
                // Kept to run again when the VM continues; nothing more
                // starts until then.
                self.error_stopped = true;
                self.retry.push_back(req);
            }
        }
    }

    fn in_range(&self, sector: u64, len: u64) -> bool {
        sector
            .checked_mul(SECTOR)
            .and_then(|o| o.checked_add(len))
            .is_some_and(|end| end <= self.backend.size())
    }

    /// Hands a read or write to io_uring, with iovecs into guest memory,
    /// merged with the staged transfer when it continues it. Gives the
    /// request back when the direct path cannot take it.
    fn start_direct(&mut self, mem: &GuestMemoryMmap, req: Request) -> Result<(), Request> {
        let write = match req.kind {
            T_IN => false,
            T_OUT if !self.backend.read_only() => true,
            _ => return Err(req),
        };
        let Some(align) = self.host.as_ref().map(|h| h.align.max(1)) else {
            return Err(req);
        };
        let offset = req.sector.wrapping_mul(SECTOR);
        if req.data_len == 0
            || req.data_len > MAX_REQUEST_BYTES
            || req.data.len() > MAX_IOVECS
            || !self.in_range(req.sector, req.data_len)
            || !offset.is_multiple_of(align)
        {
            return Err(req);
        }
        // Host addresses first: a buffer the direct path cannot take
        // sends the request down the synchronous path untouched.
        let mut iovecs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 8];
        let few = req.data.len() <= iovecs.len();
        for (i, s) in req.data.iter().enumerate() {
            let Ok(slice) = mem.get_slice(s.addr, s.len as usize) else {
                return Err(req);
            };
            let base = slice.ptr_guard_mut().as_ptr();
            if !(base as u64).is_multiple_of(align) || !u64::from(s.len).is_multiple_of(align) {
                return Err(req);
            }
            if few {
                iovecs[i] = libc::iovec {
                    iov_base: base.cast(),
                    iov_len: s.len as usize,
                };
            }
        }
        let index = match self.staged_continued_by(write, offset, &req) {
            Some(index) => index,
            None => {
                self.stage_out();
                let (Some(index), Some(file)) = (self.free.pop(), self.host.clone()) else {
                    return Err(req);
                };
                let pooled = !file.native_aio || self.ring.is_none();
                self.slots[index].busy = Some(InFlight {
                    file,
                    write,
                    offset,
                    bytes: 0,
                    started: Instant::now(),
                    pooled,
                });
                self.in_flight += 1;
                self.staged = Some(index);
                index
            }
        };
        let slot = &mut self.slots[index];
        if few {
            slot.iovecs.extend_from_slice(&iovecs[..req.data.len()]);
        } else {
            for s in &req.data {
                if let Ok(slice) = mem.get_slice(s.addr, s.len as usize) {
                    slot.iovecs.push(libc::iovec {
                        iov_base: slice.ptr_guard_mut().as_ptr().cast(),
                        iov_len: s.len as usize,
                    });
                }
            }
        }
        if let Some(f) = slot.busy.as_mut() {
            f.bytes += req.data_len;
        }
        slot.requests.push(req);
        Ok(())
    }

    /// The staged slot, if `req` (a read or write at `offset`) continues
    /// it and the merged transfer stays within bounds.
    fn staged_continued_by(&self, write: bool, offset: u64, req: &Request) -> Option<usize> {
        if !self.merging {
            return None;
        }
        let index = self.staged?;
        let slot = &self.slots[index];
        let f = slot.busy.as_ref()?;
        (f.write == write
            && f.offset + f.bytes == offset
            && f.bytes + req.data_len <= MAX_REQUEST_BYTES
            && slot.iovecs.len() + req.data.len() <= MAX_IOVECS)
            .then_some(index)
    }

    /// The staged transfer is complete: it waits for the next submit.
    fn stage_out(&mut self) {
        if let Some(index) = self.staged.take() {
            self.unsent.push_back(index);
        }
    }

    /// Puts the transfers made in this pass in io_uring's submission
    /// queue or the pool's, and tells the kernel.
    fn submit(&mut self) {
        self.stage_out();
        self.send_unsent();
    }

    /// Sends the complete transfers (not the one still open for merging)
    /// to io_uring or the pool.
    fn send_unsent(&mut self) {
        while let Some(&index) = self.unsent.front() {
            let slot = &self.slots[index];
            let Some(f) = slot.busy.as_ref() else {
                self.unsent.pop_front();
                continue;
            };
            let (iov, n) = (slot.iovecs.as_ptr(), slot.iovecs.len() as u32);
            let at = f.file.base + f.offset;
            if f.pooled {
                let job = Job {
                    fd: f.file.fd,
                    iov,
                    iovcnt: n as i32,
                    offset: at as i64,
                    write: f.write,
                    tag: index as u64,
                };
                // SAFETY: as for io_uring below: the slot keeps the iovecs
                // and the file, and the memory stays mapped until the
                // completion is reaped (drain waits for it).
                unsafe { self.pool.submit(job) };
                self.pooled += 1;
                self.unsent.pop_front();
                continue;
            }
            let Some((ring, _)) = self.ring.as_mut() else {
                self.unsent.pop_front();
                continue;
            };
            let fd = types::Fd(f.file.fd);
            let entry = if f.write {
                opcode::Writev::new(fd, iov, n).offset(at).build()
            } else {
                opcode::Readv::new(fd, iov, n).offset(at).build()
            }
            .user_data(index as u64);
            // SAFETY: the iovecs and the guest memory they point to stay
            // valid until the completion: the slot keeps them, and this
            // thread holds the memory mapping and drains before it ends.
            if unsafe { ring.submission().push(&entry).is_err() } {
                // Full until the kernel takes entries: the rest waits
                // for the next submit.
                break;
            }
            self.unsent.pop_front();
        }
        // Errors (EBUSY with a full completion queue) leave the entries
        // queued for the next submit.
        if let Some((ring, _)) = self.ring.as_mut() {
            let _ = ring.submit();
        }
    }

    /// The host finished slot `index` with `result` (bytes or -errno).
    fn complete(&mut self, mem: &GuestMemoryMmap, queues: &mut [Queue], index: usize, result: i32) {
        let Some(slot) = self.slots.get_mut(index) else {
            return;
        };
        let Some(f) = slot.busy.take() else {
            return;
        };
        let mut requests = std::mem::take(&mut slot.requests);
        slot.iovecs.clear();
        self.free.push(index);
        self.in_flight -= 1;
        if f.pooled {
            self.pooled -= 1;
        }
        let ok = u64::try_from(result).ok() == Some(f.bytes);
        if ok {
            let n = requests.len() as u32;
            f.file.done.done(f.write, f.offset, f.bytes, n, f.started);
        }
        for req in requests.drain(..) {
            let Some(queue) = queues.get_mut(usize::from(req.queue)) else {
                continue;
            };
            if ok {
                let written = if f.write { 0 } else { req.data_len as u32 };
                self.finish(mem, queue, req, S_OK, written);
            } else {
                // A short transfer or an error: the synchronous path runs
                // it again and applies the error policy to what fails there.
                self.run_sync(mem, queue, req);
            }
        }
        self.slots[index].requests = requests;
    }

    /// Writes the status, puts the chain in the used ring.
    fn finish(
        &mut self,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
        req: Request,
        status: u8,
        written: u32,
    ) {
        // Checked when parsed; the driver sees no status if it moved
        // its memory away since.
        let _ = mem.write_obj(status, req.status);
        if queue.add_used(mem, req.head, written + 1).is_ok() {
            if let Some(u) = self.used.get_mut(usize::from(req.queue)) {
                *u = true;
            }
        }
        self.segment_pool.push(req.data);
    }

    /// A request failed in the host: the backend's policy decides
    /// (QEMU's virtio_blk_handle_rw_error). An ignored error completes
    /// as a success of `len` bytes.
    fn failed(&self, is_read: bool, e: &io::Error, len: u32) -> Outcome {
        let errno = e.raw_os_error().unwrap_or(libc::EIO);
        let action = self.backend.error_action(is_read, errno);
        self.backend.report_error(action, is_read, errno);
        match action {
            BlockErrorAction::Stop => Outcome::Stop,
            BlockErrorAction::Report => Outcome::Done(S_IOERR, 0),
            BlockErrorAction::Ignore => Outcome::Done(S_OK, len),
        }
    }

    /// Runs a request synchronously through the block backend.
    fn execute(&mut self, mem: &GuestMemoryMmap, req: &Request) -> Outcome {
        const IOERR: Outcome = Outcome::Done(S_IOERR, 0);
        let len = req.data_len;
        match req.kind {
            T_IN => {
                if len > MAX_REQUEST_BYTES || !self.in_range(req.sector, len) {
                    return IOERR;
                }
                let len = len as usize;
                self.buffer.resize(len, 0);
                if let Err(e) = self
                    .backend
                    .read_at(req.sector * SECTOR, &mut self.buffer[..len])
                {
                    return self.failed(true, &e, len as u32);
                }
                if scatter(mem, &req.data, &self.buffer[..len]) {
                    Outcome::Done(S_OK, len as u32)
                } else {
                    IOERR
                }
            }
            T_OUT => {
                if self.backend.read_only()
                    || len > MAX_REQUEST_BYTES
                    || !self.in_range(req.sector, len)
                {
                    return IOERR;
                }
                let len = len as usize;
                self.buffer.resize(len, 0);
                if !gather(mem, req.data.iter().copied(), 0, &mut self.buffer[..len]) {
                    return IOERR;
                }
                match self
                    .backend
                    .write_at(req.sector * SECTOR, &self.buffer[..len])
                {
                    Ok(()) => Outcome::Done(S_OK, 0),
                    Err(e) => self.failed(false, &e, 0),
                }
            }
            T_FLUSH => match self.backend.flush() {
                Ok(()) => Outcome::Done(S_OK, 0),
                Err(e) => self.failed(false, &e, 0),
            },
            T_GET_ID => {
                let mut id = [0u8; 20];
                let serial = self.serial.as_bytes();
                let n = serial.len().min(20);
                id[..n].copy_from_slice(&serial[..n]);
                let n = (len as usize).min(20);
                if scatter(mem, &req.data, &id[..n]) {
                    Outcome::Done(S_OK, n as u32)
                } else {
                    IOERR
                }
            }
            T_DISCARD | T_WRITE_ZEROES => {
                if self.backend.read_only() {
                    return IOERR;
                }
                // One range (max_discard_seg is 1): sector, sectors, flags.
                let mut range = [0u8; 16];
                if !gather(mem, req.data.iter().copied(), 0, &mut range) {
                    return IOERR;
                }
                let mut sector = [0u8; 8];
                sector.copy_from_slice(&range[..8]);
                let sector = u64::from_le_bytes(sector);
                let sectors = u32::from_le_bytes([range[8], range[9], range[10], range[11]]);
                let bytes = u64::from(sectors) * SECTOR;
                if !self.in_range(sector, bytes) {
                    return IOERR;
                }
                let r = if req.kind == T_DISCARD {
                    self.backend.discard(sector * SECTOR, bytes)
                } else {
                    self.backend.write_zeroes(sector * SECTOR, bytes)
                };
                match r {
                    Ok(()) => Outcome::Done(S_OK, 0),
                    // Both count as writes, as in later QEMU.
                    Err(e) => self.failed(false, &e, 0),
                }
            }
            _ => Outcome::Done(S_UNSUPP, 0),
        }
    }
}

/// Whether the driver wants an interrupt for what was just used: the
/// used event index with EVENT_IDX, else the avail ring's
/// VRING_AVAIL_F_NO_INTERRUPT flag (virtio-queue leaves that one to the
/// device). What cannot be read asks for an interrupt.
fn interrupt_wanted(queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
    let by_event_idx = queue.needs_notification(mem).unwrap_or(true);
    if queue.event_idx_enabled() {
        return by_event_idx;
    }
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    mem.read_obj::<u16>(GuestAddress(queue.avail_ring()))
        .map_or(true, |flags| flags & 1 == 0)
}

/// Fills `out` from the guest buffers, `skip` bytes in; false when they
/// hold too little or cannot be read.
fn gather(
    mem: &GuestMemoryMmap,
    segs: impl Iterator<Item = Segment>,
    mut skip: u64,
    out: &mut [u8],
) -> bool {
    let mut done = 0;
    for s in segs {
        if done == out.len() {
            break;
        }
        let len = u64::from(s.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = ((len - skip) as usize).min(out.len() - done);
        if mem
            .read_slice(&mut out[done..done + n], GuestAddress(s.addr.0 + skip))
            .is_err()
        {
            return false;
        }
        done += n;
        skip = 0;
    }
    done == out.len()
}

/// Copies `data` into the guest buffers in order; false when they do
/// not take all of it.
fn scatter(mem: &GuestMemoryMmap, segs: &[Segment], data: &[u8]) -> bool {
    let mut done = 0;
    for s in segs {
        if done == data.len() {
            break;
        }
        let n = (s.len as usize).min(data.len() - done);
        if mem.write_slice(&data[done..done + n], s.addr).is_err() {
            return false;
        }
        done += n;
    }
    done == data.len()
}

use std::os::fd::AsRawFd;

#[cfg(test)]
mod poll_tests {
    use super::next_poll_ns;

    #[test]
    fn polling_adapts_with_qemus_knobs() {
        let defaults = [32_768, 0, 0];
        assert_eq!(next_poll_ns(0, 1_000, defaults), 4_000);
        assert_eq!(next_poll_ns(4_000, 10_000, defaults), 8_000);
        assert_eq!(next_poll_ns(16_000, 20_000, defaults), 32_000);
        assert_eq!(next_poll_ns(32_000, 32_500, defaults), 32_768);
        // Caught within the poll time: vmm still grows it.
        assert_eq!(next_poll_ns(8_000, 5_000, defaults), 16_000);
        // Too long even for poll-max-ns: no polling, or divided.
        assert_eq!(next_poll_ns(8_000, 1_000_000, defaults), 0);
        assert_eq!(next_poll_ns(8_000, 1_000_000, [32_768, 0, 4]), 2_000);
        assert_eq!(next_poll_ns(4_000, 10_000, [32_768, 3, 0]), 12_000);
        assert_eq!(next_poll_ns(8_000, 1_000, [0, 0, 0]), 0);
    }
}
