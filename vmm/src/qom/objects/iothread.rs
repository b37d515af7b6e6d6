//! `iothread`: a thread with its own event loop that block devices can
//! later be placed on. Its adaptive-polling parameters may change while it
//! runs (qom-set), and query-iothreads reports them with its thread id.

use crate::qom::props::{Access, ObjectState, PropInfo, PropInput};
use crate::qom::tree::Tree;
use mio::{Events, Poll, Token, Waker};
use qmp::Error;
use serde_json::Value;
use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// QEMU's default upper bound on adaptive polling (32 us).
const POLL_MAX_NS_DEFAULT: i64 = 32768;

const PARAMS: &[&str] = &["poll-max-ns", "poll-grow", "poll-shrink"];

/// What the thread and the control plane share.
#[derive(Default)]
struct Shared {
    poll: [AtomicI64; 3],
    stop: AtomicBool,
    tid: AtomicI32,
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

/// Waits for work until told to stop. Work sources (block I/O
/// completions) register with this poll when they land.
fn event_loop(mut poll: Poll, shared: &Shared) {
    let mut events = Events::with_capacity(64);
    while !shared.stop.load(Ordering::SeqCst) {
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

    fn as_any(&self) -> &dyn Any {
        self
    }
}
