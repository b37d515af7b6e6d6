//! `iothread`: a thread with its own event loop that a block device can
//! be placed on (`-device virtio-blk-pci,iothread=ID`): the device's I/O
//! loop then runs on this thread, polling as long as its poll-max-ns
//! says. Its adaptive-polling parameters may change while it runs
//! (qom-set), and query-iothreads reports them with its thread id.

use crate::qom::props::{Access, ObjectState, PropInfo, PropInput};
use crate::qom::tree::Tree;
use mio::{Events, Poll, Token, Waker};
use qmp::Error;
use serde_json::Value;
use std::any::Any;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// QEMU's default upper bound on adaptive polling (32 us).
const POLL_MAX_NS_DEFAULT: i64 = 32768;

const PARAMS: &[&str] = &["poll-max-ns", "poll-grow", "poll-shrink"];

type Job = (Box<dyn FnOnce() + Send>, mpsc::Sender<()>);

/// What the thread and the control plane share.
#[derive(Default)]
struct Shared {
    poll: [AtomicI64; 3],
    stop: AtomicBool,
    tid: AtomicI32,
    /// Device loops to run, in order.
    jobs: Mutex<VecDeque<Job>>,
    /// A device is placed on the thread (vmm runs one per iothread).
    claimed: AtomicBool,
}

/// What a device gets to run its loop on the thread.
struct Host {
    shared: Arc<Shared>,
    waker: Arc<Waker>,
}

impl Drop for Host {
    /// The device that had the thread is gone (or was never built).
    fn drop(&mut self) {
        self.shared.claimed.store(false, Ordering::SeqCst);
    }
}

impl devices::platform::IoThreadHost for Host {
    fn run(&self, job: Box<dyn FnOnce() + Send>) -> std::io::Result<mpsc::Receiver<()>> {
        let (tx, rx) = mpsc::channel();
        self.shared
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((job, tx));
        self.waker.wake()?;
        Ok(rx)
    }

    fn poll_max_ns(&self) -> u64 {
        self.shared.poll[0].load(Ordering::Relaxed).max(0) as u64
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

    /// The thread for a device's I/O loop; None when a device already
    /// has it (vmm runs one device's loop per iothread) or it has no
    /// thread.
    pub fn claim(&self) -> Option<devices::platform::IoThreadHandle> {
        let (_, waker) = self.thread.as_ref()?;
        if self.shared.claimed.swap(true, Ordering::SeqCst) {
            return None;
        }
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

/// Waits for work until told to stop: a device's I/O loop runs here
/// until the device ends it (reset, or the VMM going).
fn event_loop(mut poll: Poll, shared: &Shared) {
    let mut events = Events::with_capacity(64);
    while !shared.stop.load(Ordering::SeqCst) {
        let job = shared
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        if let Some((job, done)) = job {
            job();
            let _ = done.send(());
            continue;
        }
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                break;
            }
        }
    }
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
        !self.shared.claimed.load(Ordering::SeqCst)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
