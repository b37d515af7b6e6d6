//! `iothread`: a thread with its own event loop that block devices can
//! be placed on (`-device virtio-blk-pci,iothread=ID`): their I/O loops
//! then run on this thread, all of them busy-polled together as long as
//! its poll-max-ns says, then waited for on their descriptors. Its adaptive-polling parameters may change while it runs
//! (qom-set), and query-iothreads reports them with its thread id.

use crate::qom::props::{Access, ObjectState, PropInfo, PropInput};
use crate::qom::tree::Tree;
use devices::platform::HostedLoop;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use qmp::Error;
use serde_json::Value;
use std::any::Any;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// QEMU's default upper bound on adaptive polling (32 us).
const POLL_MAX_NS_DEFAULT: i64 = 32768;

const PARAMS: &[&str] = &["poll-max-ns", "poll-grow", "poll-shrink"];

/// A device's loop to take on, and whom to tell when it ended.
type Job = (Box<dyn HostedLoop>, mpsc::Sender<()>);

/// What the thread and the control plane share.
#[derive(Default)]
struct Shared {
    poll: [AtomicI64; 3],
    stop: AtomicBool,
    tid: AtomicI32,
    /// Device loops to take on.
    jobs: Mutex<VecDeque<Job>>,
    /// How many devices are placed on the thread.
    claimed: AtomicUsize,
}

/// What a device gets to run its loop on the thread.
struct Host {
    shared: Arc<Shared>,
    waker: Arc<Waker>,
}

impl Drop for Host {
    /// A device that had the thread is gone (or was never built).
    fn drop(&mut self) {
        self.shared.claimed.fetch_sub(1, Ordering::SeqCst);
    }
}

impl devices::platform::IoThreadHost for Host {
    fn attach(&self, hosted: Box<dyn HostedLoop>) -> std::io::Result<mpsc::Receiver<()>> {
        let (tx, rx) = mpsc::channel();
        self.shared
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((hosted, tx));
        self.waker.wake()?;
        Ok(rx)
    }

    fn poll_params(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.shared.poll[i].load(Ordering::Relaxed).max(0) as u64)
    }
}

pub struct IoThread {
    shared: Arc<Shared>,
    thread: Option<(JoinHandle<()>, Arc<Waker>)>,
}

impl IoThread {
    pub fn new() -> IoThread {
        let shared = Shared::default();
        shared.poll[0].store(POLL_MAX_NS_DEFAULT, Ordering::Relaxed);
        IoThread {
            shared: Arc::new(shared),
            thread: None,
        }
    }

    /// The host thread id (0 until the thread runs).
    pub fn thread_id(&self) -> i64 {
        i64::from(self.shared.tid.load(Ordering::SeqCst))
    }

    /// The thread for a device's I/O loop (None before it runs); the
    /// iothread counts as in use while the handle lives.
    pub fn claim(&self) -> Option<devices::platform::IoThreadHandle> {
        let (_, waker) = self.thread.as_ref()?;
        self.shared.claimed.fetch_add(1, Ordering::SeqCst);
        Some(devices::platform::IoThreadHandle(Arc::new(Host {
            shared: self.shared.clone(),
            waker: waker.clone(),
        })))
    }

    /// poll-max-ns, poll-grow, poll-shrink.
    pub fn poll_params(&self) -> [i64; 3] {
        [0, 1, 2].map(|i| self.shared.poll[i].load(Ordering::Relaxed))
    }

    fn start(&mut self, name: String) -> Result<(), Error> {
        let fail = |e: std::io::Error| Error::generic(format!("can't create iothread: {e}"));
        let poll = Poll::new().map_err(fail)?;
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).map_err(fail)?);
        let shared = self.shared.clone();
        // The creator waits for the thread id so query-iothreads never
        // reports a thread that is not there yet.
        let started = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = started.clone();
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::gettid() };
                shared.tid.store(tid, Ordering::SeqCst);
                {
                    let (lock, cv) = &*signal;
                    *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
                    cv.notify_all();
                }
                event_loop(poll, &shared);
            })
            .map_err(fail)?;
        let (lock, cv) = &*started;
        let mut ready = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !*ready {
            ready = cv.wait(ready).unwrap_or_else(|e| e.into_inner());
        }
        self.thread = Some((handle, waker));
        Ok(())
    }
}

impl Default for IoThread {
    fn default() -> Self {
        IoThread::new()
    }
}

/// The thread's loop until told to stop: the devices placed on it are
/// busy-polled together (as long as the longest poll time among them),
/// then waited for on their descriptors, then each handles what is
/// ready, as QEMU's AioContext serves its handlers.
fn event_loop(mut poll: Poll, shared: &Shared) {
    let mut events = Events::with_capacity(64);
    let mut hosted: Vec<Job> = Vec::new();
    let mut next_token = 1;
    while !shared.stop.load(Ordering::SeqCst) {
        let jobs: Vec<Job> = shared
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for (h, done) in jobs {
            let fd = h.fd();
            // A loop that cannot be watched is ended at once.
            if poll
                .registry()
                .register(&mut SourceFd(&fd), Token(next_token), Interest::READABLE)
                .is_err()
            {
                let _ = done.send(());
                continue;
            }
            next_token += 1;
            hosted.push((h, done));
        }
        let found = poll_all(&mut hosted);
        let slept = std::time::Instant::now();
        let timeout = found.then_some(std::time::Duration::ZERO);
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                break;
            }
        }
        if !found {
            let ns = slept.elapsed().as_nanos() as u64;
            for (h, _) in &mut hosted {
                h.slept(ns);
            }
        }
        hosted.retain_mut(|(h, done)| {
            if h.run_once(found) {
                return true;
            }
            let fd = h.fd();
            let _ = poll.registry().deregister(&mut SourceFd(&fd));
            let _ = done.send(());
            false
        });
    }
}

/// Busy-polls every device that wants it, up to the longest poll time
/// among them; true when one found work.
fn poll_all(hosted: &mut [Job]) -> bool {
    let poll_ns = hosted.iter().map(|(h, _)| h.poll_ns()).max().unwrap_or(0);
    if poll_ns == 0 {
        return false;
    }
    let polling: Vec<bool> = hosted.iter_mut().map(|(h, _)| h.poll_begin()).collect();
    let start = std::time::Instant::now();
    loop {
        for ((h, _), on) in hosted.iter_mut().zip(&polling) {
            if *on && h.poll_check() {
                return true;
            }
        }
        if start.elapsed().as_nanos() as u64 >= poll_ns {
            break;
        }
        std::hint::spin_loop();
    }
    let mut found = false;
    for ((h, _), on) in hosted.iter_mut().zip(&polling) {
        if *on {
            found |= h.poll_end();
        }
    }
    found
}

impl Drop for IoThread {
    fn drop(&mut self) {
        if let Some((handle, waker)) = self.thread.take() {
            self.shared.stop.store(true, Ordering::SeqCst);
            let _ = waker.wake();
            let _ = handle.join();
        }
    }
}

impl ObjectState for IoThread {
    fn properties(&self) -> Vec<PropInfo> {
        PARAMS
            .iter()
            .map(|p| PropInfo::new(p, "int", Access::ReadWrite))
            .collect()
    }

    fn get(&self, name: &str) -> Result<Value, Error> {
        let i = PARAMS.iter().position(|p| *p == name).unwrap_or(0);
        Ok(Value::from(self.shared.poll[i].load(Ordering::Relaxed)))
    }

    fn set(&mut self, input: &PropInput, _tree: &Tree) -> Result<(), Error> {
        let i = PARAMS.iter().position(|p| *p == input.name).unwrap_or(0);
        let v = input.int()?;
        if v < 0 {
            return Err(Error::generic(format!(
                "{} value must be in range [0, {}]",
                input.name,
                i64::MAX
            )));
        }
        self.shared.poll[i].store(v, Ordering::Relaxed);
        Ok(())
    }

    fn complete(&mut self, id: &str, _tree: &Tree) -> Result<(), Error> {
        // QEMU names the thread after the object; Linux thread names
        // hold 15 bytes.
        let name: String = format!("IO {id}").chars().take(15).collect();
        self.start(name)
    }

    /// A device runs its loop on the thread: deleting it would leave
    /// the device without one.
    fn can_be_deleted(&self) -> bool {
        self.shared.claimed.load(Ordering::SeqCst) == 0
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::AtomicU32;
    use std::time::{Duration, Instant};
    use vmm_sys_util::eventfd::EventFd;

    /// A loop that counts the signals on its eventfd and ends after
    /// `last` of them.
    struct Counting {
        efd: Arc<EventFd>,
        seen: Arc<AtomicU32>,
        last: u32,
    }

    impl HostedLoop for Counting {
        fn fd(&self) -> std::os::fd::RawFd {
            self.efd.as_raw_fd()
        }
        fn poll_ns(&self) -> u64 {
            0
        }
        fn poll_begin(&mut self) -> bool {
            false
        }
        fn poll_check(&mut self) -> bool {
            false
        }
        fn poll_end(&mut self) -> bool {
            false
        }
        fn slept(&mut self, _ns: u64) {}
        fn run_once(&mut self, _polled: bool) -> bool {
            if self.efd.read().is_ok() {
                self.seen.fetch_add(1, Ordering::SeqCst);
            }
            self.seen.load(Ordering::SeqCst) < self.last
        }
    }

    fn wait_for(what: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !what() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn one_thread_serves_several_device_loops() {
        let mut t = IoThread::new();
        t.start("test-io".into()).expect("thread");
        let (a, b) = (t.claim().expect("claim"), t.claim().expect("claim"));
        assert!(!t.can_be_deleted());
        let new_loop = |last| {
            let efd = Arc::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"));
            let seen = Arc::new(AtomicU32::new(0));
            let l = Counting {
                efd: efd.clone(),
                seen: seen.clone(),
                last,
            };
            (l, efd, seen)
        };
        let (la, ea, sa) = new_loop(2);
        let (lb, eb, sb) = new_loop(100);
        let done_a = a.0.attach(Box::new(la)).expect("attach");
        let _done_b = b.0.attach(Box::new(lb)).expect("attach");
        ea.write(1).expect("signal");
        eb.write(1).expect("signal");
        wait_for(|| sa.load(Ordering::SeqCst) == 1 && sb.load(Ordering::SeqCst) == 1);
        // The second signal ends loop a; b goes on being served.
        ea.write(1).expect("signal");
        done_a
            .recv_timeout(Duration::from_secs(10))
            .expect("loop a ended");
        eb.write(1).expect("signal");
        wait_for(|| sb.load(Ordering::SeqCst) == 2);
        drop((a, b));
        assert!(t.can_be_deleted());
    }
}
