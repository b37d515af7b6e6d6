//! Entropy sources behind QEMU's rng backends, for a virtio-rng device
//! to draw from: a host file read without blocking (`rng-random`) and an
//! EGD server reached through a chardev (`rng-egd`).

use crate::chardev::{os_text, Chardev, Frontend};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// A host file of random bytes (`/dev/random`, `/dev/urandom`, a
/// hardware RNG's device node), opened read-only and non-blocking.
pub struct RandomFile {
    file: File,
}

impl RandomFile {
    /// Opens `path` as QEMU's rng-random does, with its error text.
    pub fn open(path: &str) -> Result<RandomFile, String> {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map(|file| RandomFile { file })
            .map_err(|e| format!("Could not open '{path}': {}", os_text(&e)))
    }

    /// Fills what it can of `buf` now; `WouldBlock` when the source has
    /// nothing to give yet.
    pub fn read_entropy(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }
}

impl std::os::fd::AsRawFd for RandomFile {
    /// For polling until entropy is available.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

/// Called with a request's bytes once they all arrived.
pub type Deliver = Box<dyn FnOnce(Vec<u8>) + Send>;

/// EGD's command for a blocking read: the server answers with exactly
/// the number of bytes asked for (at most 255 per command).
const EGD_READ_BLOCKING: u8 = 0x02;

struct Request {
    data: Vec<u8>,
    size: usize,
    deliver: Deliver,
}

#[derive(Default)]
struct EgdState {
    /// The handle attach gave (it names the frontend on a mux); None
    /// until attached.
    chardev: Option<Chardev>,
    /// Filled in order, as the server answers in order.
    requests: VecDeque<Request>,
    /// Commands the chardev has not taken yet.
    commands: VecDeque<u8>,
    /// Complete requests, oldest first, for whoever delivers.
    complete: VecDeque<Request>,
    /// A thread is delivering `complete`: others leave theirs to it, so
    /// that requesters hear in request order.
    delivering: bool,
}

impl EgdState {
    fn wanted(&self) -> usize {
        self.requests.iter().map(|r| r.size - r.data.len()).sum()
    }

    /// Hands waiting commands to the chardev; what it cannot take now
    /// waits for `output_ready`.
    fn flush(&mut self) {
        let Some(c) = &self.chardev else { return };
        while !self.commands.is_empty() {
            let n = c.write(self.commands.as_slices().0);
            if n == 0 {
                break;
            }
            self.commands.drain(..n);
        }
    }

    /// Takes no more input than the requests wait for (the rest stays
    /// in the chardev); complete requests move to `complete`.
    fn pull(&mut self) {
        let wanted = self.wanted();
        let Some(c) = &self.chardev else { return };
        if wanted == 0 {
            return;
        }
        let input = c.read_input(wanted);
        let mut bytes = &input[..];
        while !bytes.is_empty() {
            let Some(r) = self.requests.front_mut() else {
                break;
            };
            let n = (r.size - r.data.len()).min(bytes.len());
            r.data.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if r.data.len() == r.size {
                self.complete.extend(self.requests.pop_front());
            }
        }
    }
}

struct EgdShared {
    st: Mutex<EgdState>,
}

impl EgdShared {
    fn lock(&self) -> MutexGuard<'_, EgdState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes input and tells the requesters whose bytes are all there,
    /// outside the lock (a requester may ask again at once).
    fn pull_and_deliver(&self) {
        let mut st = self.lock();
        st.pull();
        if st.delivering {
            return;
        }
        st.delivering = true;
        while let Some(r) = st.complete.pop_front() {
            drop(st);
            (r.deliver)(r.data);
            st = self.lock();
        }
        st.delivering = false;
    }
}

struct EgdFrontend(Weak<EgdShared>);

impl Frontend for EgdFrontend {
    fn input_ready(&self) {
        if let Some(s) = self.0.upgrade() {
            s.pull_and_deliver();
        }
    }

    fn output_ready(&self) {
        if let Some(s) = self.0.upgrade() {
            s.lock().flush();
        }
    }

    /// EGD has no use for breaks.
    fn send_break(&self) {}
}

/// A client of an EGD server (the Entropy Gathering Daemon protocol, as
/// egd.pl and QEMU's rng-egd speak it) on a chardev whose frontend it
/// is; dropping it releases the chardev.
pub struct EgdClient {
    shared: Arc<EgdShared>,
}

impl EgdClient {
    /// Becomes the frontend of `chardev`; fails with QEMU's text when
    /// another frontend has it. It does not follow a chardev-change, as
    /// QEMU's rng-egd does not.
    pub fn attach(chardev: &Chardev) -> Result<EgdClient, String> {
        let shared = Arc::new(EgdShared {
            st: Mutex::new(EgdState::default()),
        });
        let handle = chardev.attach(Arc::new(EgdFrontend(Arc::downgrade(&shared))), false)?;
        shared.lock().chardev = Some(handle);
        Ok(EgdClient { shared })
    }

    /// The label of the chardev in use.
    pub fn chardev_label(&self) -> String {
        self.shared
            .lock()
            .chardev
            .as_ref()
            .map(|c| c.label().to_string())
            .unwrap_or_default()
    }

    /// Asks the server for `size` bytes (one blocking-read command per
    /// 255 bytes, as QEMU sends them); `deliver` gets all of them, on the
    /// chardev's thread or this one. Requests are answered in order.
    pub fn request_entropy(&self, size: usize, deliver: Deliver) {
        if size == 0 {
            deliver(Vec::new());
            return;
        }
        {
            let mut st = self.shared.lock();
            st.requests.push_back(Request {
                data: Vec::with_capacity(size),
                size,
                deliver,
            });
            let mut left = size;
            while left > 0 {
                let len = left.min(255);
                st.commands.extend([EGD_READ_BLOCKING, len as u8]);
                left -= len;
            }
            st.flush();
        }
        // Bytes may wait in the chardev already (more than the last
        // request asked for); the backend says nothing more about them.
        self.shared.pull_and_deliver();
    }

    /// Bytes asked for and not yet received.
    pub fn pending(&self) -> usize {
        self.shared.lock().wanted()
    }
}

impl Drop for EgdClient {
    fn drop(&mut self) {
        let chardev = self.shared.lock().chardev.take();
        if let Some(c) = chardev {
            c.detach();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chardev::Registry;
    use std::io::Write;
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn random_file_reads_entropy() {
        let f = RandomFile::open("/dev/urandom").unwrap();
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        assert_eq!(f.read_entropy(&mut a).unwrap(), 64);
        assert_eq!(f.read_entropy(&mut b).unwrap(), 64);
        assert_ne!(a, b, "two reads gave the same 64 bytes");
        assert_eq!(
            RandomFile::open("/nonexistent/rng").err().as_deref(),
            Some("Could not open '/nonexistent/rng': No such file or directory")
        );
    }

    /// The byte an EGD responder sends at offset `i` of its answers.
    fn pattern(i: usize) -> u8 {
        (i * 7 + 3) as u8
    }

    /// A tiny EGD server: answers each blocking read with that many
    /// bytes of `pattern`; sends back the commands it read when the
    /// client goes away.
    fn egd_server(listener: UnixListener) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut sent = 0;
            let mut cmd = [0u8; 2];
            while s.read_exact(&mut cmd).is_ok() {
                seen.extend_from_slice(&cmd);
                assert_eq!(cmd[0], EGD_READ_BLOCKING);
                let answer: Vec<u8> = (sent..sent + cmd[1] as usize).map(pattern).collect();
                sent += answer.len();
                // In two pieces, so that a request fills across reads.
                let half = answer.len() / 2;
                s.write_all(&answer[..half]).unwrap();
                s.flush().unwrap();
                std::thread::sleep(Duration::from_millis(2));
                s.write_all(&answer[half..]).unwrap();
            }
            seen
        })
    }

    #[test]
    fn egd_requests_are_answered_in_order() {
        let dir = std::env::temp_dir().join(format!("rng-egd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("egd.sock");
        let _ = std::fs::remove_file(&path);
        let server = egd_server(UnixListener::bind(&path).unwrap());
        let backend = crate::chardev::unix_socket_backend(&path, false);
        let mut reg = Registry::new();
        let (c, _) = reg.add("egd", &backend).unwrap();
        let egd = EgdClient::attach(&c).unwrap();
        assert_eq!(egd.chardev_label(), "egd");
        // The chardev has its frontend now: a second one is refused.
        assert_eq!(
            EgdClient::attach(&c).err().as_deref(),
            Some("Device 'egd' is in use")
        );
        assert_eq!(reg.remove("egd"), Err("Chardev 'egd' is busy".to_string()));

        let (tx, rx) = mpsc::channel();
        for (i, size) in [300usize, 1, 255, 40].into_iter().enumerate() {
            let tx = tx.clone();
            egd.request_entropy(size, Box::new(move |data| tx.send((i, data)).unwrap()));
        }
        let mut offset = 0;
        for (i, size) in [300usize, 1, 255, 40].into_iter().enumerate() {
            let (got, data) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(got, i, "requests answered out of order");
            let expected: Vec<u8> = (offset..offset + size).map(pattern).collect();
            assert_eq!(data, expected, "request {i}");
            offset += size;
        }
        assert_eq!(egd.pending(), 0);
        egd.request_entropy(0, Box::new(move |data| tx.send((9, data)).unwrap()));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(1)).unwrap(),
            (9, vec![])
        );

        // Dropping the client frees the chardev; removing it closes the
        // connection, and the server saw one command per 255 bytes.
        drop(egd);
        reg.remove("egd").unwrap();
        drop(c);
        assert_eq!(server.join().unwrap(), [2, 255, 2, 45, 2, 1, 2, 255, 2, 40]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
