//! Positional vector I/O on worker threads: `aio=threads`, as QEMU's
//! thread pool runs it, and the fallback where io_uring is unavailable.
//! Workers start as jobs arrive (up to [`MAX_WORKERS`]) and end after
//! [`IDLE_EXIT`] without work, as QEMU's do; each finished job is queued
//! for the submitter and announced on an eventfd it can poll.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use vmm_sys_util::eventfd::EventFd;

/// QEMU's thread pool limit.
pub const MAX_WORKERS: usize = 64;
/// How long an idle worker waits for work before it ends.
pub const IDLE_EXIT: Duration = Duration::from_secs(10);

/// One preadv or pwritev.
pub struct Job {
    pub fd: RawFd,
    pub iov: *const libc::iovec,
    pub iovcnt: i32,
    pub offset: i64,
    pub write: bool,
    /// Handed back with the result.
    pub tag: u64,
}

// SAFETY: a job is plain addresses; whoever submits it keeps the
// descriptor open and the iovecs and the memory they describe valid
// until its completion is taken (see `IoThreadPool::submit`).
unsafe impl Send for Job {}

impl Job {
    /// Bytes transferred, or -errno.
    fn run(&self) -> i32 {
        loop {
            // SAFETY: the submitter guarantees fd, iov and the buffers
            // stay valid until the job completes.
            let n = unsafe {
                if self.write {
                    libc::pwritev(self.fd, self.iov, self.iovcnt, self.offset)
                } else {
                    libc::preadv(self.fd, self.iov, self.iovcnt, self.offset)
                }
            };
            if n >= 0 {
                return i32::try_from(n).unwrap_or(i32::MAX);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return -e.raw_os_error().unwrap_or(libc::EIO);
            }
        }
    }
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    done: Vec<(u64, i32)>,
    workers: usize,
    idle: usize,
    stopping: bool,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    /// Signalled once per batch of completions.
    completed: EventFd,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct IoThreadPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    name: String,
}

impl IoThreadPool {
    /// A pool with no workers yet; `name` names its threads.
    pub fn new(name: &str) -> io::Result<IoThreadPool> {
        Ok(IoThreadPool {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                completed: EventFd::new(libc::EFD_NONBLOCK)?,
            }),
            threads: Vec::new(),
            name: name.to_string(),
        })
    }

    /// Readable when completions wait to be taken.
    pub fn completion_fd(&self) -> RawFd {
        self.shared.completed.as_raw_fd()
    }

    /// Queues `job`, starting a worker when none is idle.
    ///
    /// # Safety
    /// The descriptor, the iovec array and the memory it describes must
    /// stay valid until [`IoThreadPool::take_completions`] returns the
    /// job's tag (or the pool is dropped, which waits for every job).
    pub unsafe fn submit(&mut self, job: Job) {
        let mut s = self.shared.lock();
        s.jobs.push_back(job);
        let start_worker = s.idle < s.jobs.len() && s.workers < MAX_WORKERS;
        if start_worker {
            s.workers += 1;
        }
        drop(s);
        if start_worker {
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name(self.name.clone())
                .spawn(move || work(&shared));
            match spawned {
                Ok(t) => {
                    self.threads.retain(|t| !t.is_finished());
                    self.threads.push(t);
                }
                // The job waits for a worker that exists; with none, it
                // fails rather than waiting forever.
                Err(_) => self.fail_orphans(),
            }
        }
        self.shared.work.notify_one();
    }

    /// A worker could not start: if no worker is left, the queued jobs
    /// fail with EAGAIN.
    fn fail_orphans(&self) {
        let mut s = self.shared.lock();
        s.workers -= 1;
        if s.workers == 0 {
            let failed: Vec<(u64, i32)> =
                s.jobs.drain(..).map(|j| (j.tag, -libc::EAGAIN)).collect();
            s.done.extend(failed);
            drop(s);
            let _ = self.shared.completed.write(1);
        }
    }

    /// Moves the finished jobs' (tag, result) into `out`.
    pub fn take_completions(&self, out: &mut Vec<(u64, i32)>) {
        let _ = self.shared.completed.read();
        out.append(&mut self.shared.lock().done);
    }

    /// Whether completions wait to be taken.
    pub fn has_completions(&self) -> bool {
        !self.shared.lock().done.is_empty()
    }

    /// Blocks until a completion is there to take.
    pub fn wait(&self) {
        while !self.has_completions() {
            let mut p = libc::pollfd {
                fd: self.completion_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one descriptor we own, with a valid array.
            unsafe { libc::poll(&mut p, 1, 100) };
        }
    }
}

impl Drop for IoThreadPool {
    /// Queued jobs still run: their memory must not be reused under them.
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.work.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn work(shared: &Shared) {
    let mut s = shared.lock();
    loop {
        if let Some(job) = s.jobs.pop_front() {
            drop(s);
            let result = job.run();
            s = shared.lock();
            s.done.push((job.tag, result));
            let _ = shared.completed.write(1);
            continue;
        }
        if s.stopping {
            break;
        }
        s.idle += 1;
        let (guard, timeout) = shared
            .work
            .wait_timeout(s, IDLE_EXIT)
            .unwrap_or_else(|e| e.into_inner());
        s = guard;
        s.idle -= 1;
        if timeout.timed_out() && s.jobs.is_empty() {
            break;
        }
    }
    s.workers -= 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// Submits `job` and waits for its completion.
    fn run(pool: &mut IoThreadPool, job: Job) -> (u64, i32) {
        // SAFETY: every caller keeps the file, iovecs and buffers alive
        // across this call, which returns only once the job is done.
        unsafe { pool.submit(job) };
        let mut done = Vec::new();
        while done.is_empty() {
            pool.wait();
            pool.take_completions(&mut done);
        }
        done[0]
    }

    #[test]
    fn reads_and_writes_run_on_workers() {
        let path = std::env::temp_dir().join(format!("vmm-pool-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("file");
        let _ = std::fs::remove_file(&path);
        let mut pool = IoThreadPool::new("worker").expect("pool");
        let data = [b"hello ".to_vec(), b"pool".to_vec()];
        let iov: Vec<libc::iovec> = data
            .iter()
            .map(|d| libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            })
            .collect();
        let job = |fd, iov: &[libc::iovec], write, tag| Job {
            fd,
            iov: iov.as_ptr(),
            iovcnt: iov.len() as i32,
            offset: 4096,
            write,
            tag,
        };
        assert_eq!(
            run(&mut pool, job(file.as_raw_fd(), &iov, true, 7)),
            (7, 10)
        );
        let mut back = [0u8; 10];
        file.read_exact_at(&mut back, 4096).expect("read back");
        assert_eq!(&back, b"hello pool");

        let mut buf = vec![0u8; 10];
        let iov = [libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        }];
        assert_eq!(run(&mut pool, job(-1, &iov, false, 8)), (8, -libc::EBADF));
        assert_eq!(
            run(&mut pool, job(file.as_raw_fd(), &iov, false, 9)),
            (9, 10)
        );
        assert_eq!(&buf, b"hello pool");
    }
}
