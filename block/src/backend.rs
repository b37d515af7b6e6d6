//! Block backends: the attachment point a device (or a job, an NBD
//! export) uses. A backend has a name (`-drive id=`; empty when a device
//! names a node directly), a root node, the device's use of it, error
//! policies and I/O statistics.

use crate::node::Node;
use qmp::qapi::{
    BlockDeviceIoStatus, BlockErrorAction, BlockIoErrorEvent, BlockdevOnError, IoOperationType,
};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// Counters of one backend (query-blockstats).
#[derive(Default)]
pub(crate) struct Stats {
    pub rd_bytes: AtomicU64,
    pub wr_bytes: AtomicU64,
    pub rd_ops: AtomicU64,
    pub wr_ops: AtomicU64,
    pub flush_ops: AtomicU64,
    pub discard_ops: AtomicU64,
    pub rd_time_ns: AtomicU64,
    pub wr_time_ns: AtomicU64,
    pub flush_time_ns: AtomicU64,
    pub failed_rd: AtomicU64,
    pub failed_wr: AtomicU64,
    pub failed_flush: AtomicU64,
    pub invalid_rd: AtomicU64,
    pub invalid_wr: AtomicU64,
    pub invalid_flush: AtomicU64,
    /// Requests merged into others (QEMU's block_acct_merge_done).
    pub rd_merged: AtomicU64,
    pub wr_merged: AtomicU64,
    /// Nanoseconds since the backend was created, at the last request
    /// (0: none yet).
    pub last_access_ns: AtomicU64,
}

#[derive(Clone, Copy)]
enum Kind {
    Read,
    Write,
    Flush,
    Other,
}

/// The handle a device holds: synchronous I/O on the backend's root
/// node, safe to call from any thread, and the host extent that lets a
/// device's I/O thread send reads and writes to the file itself
/// (`host_extent`, counted back through `host_io_done`).
pub struct BlockBackend {
    pub(crate) name: String,
    pub(crate) use_id: u64,
    pub(crate) root: RwLock<Option<Arc<Node>>>,
    /// The device's QOM path or id (`qdev` in query-block), once attached.
    pub(crate) device: Mutex<Option<String>>,
    /// This backend's use of its root: (perm, shared).
    pub(crate) perm: Mutex<(u64, u64)>,
    pub(crate) write_cache: AtomicBool,
    /// `rerror` and `werror`; a device may change them when it attaches
    /// (its own `rerror=`/`werror=` properties).
    on_error: Mutex<(BlockdevOnError, BlockdevOnError)>,
    pub(crate) iostatus_enabled: AtomicBool,
    pub(crate) iostatus: Mutex<BlockDeviceIoStatus>,
    pub(crate) account_invalid: bool,
    pub(crate) account_failed: bool,
    pub(crate) stats: Stats,
    created: Instant,
    resize_notifier: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

impl BlockBackend {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: String,
        use_id: u64,
        root: Option<Arc<Node>>,
        perm: (u64, u64),
        write_cache: bool,
        on_read_error: BlockdevOnError,
        on_write_error: BlockdevOnError,
        account: bool,
    ) -> BlockBackend {
        BlockBackend {
            name,
            use_id,
            root: RwLock::new(root),
            device: Mutex::new(None),
            perm: Mutex::new(perm),
            write_cache: AtomicBool::new(write_cache),
            on_error: Mutex::new((on_read_error, on_write_error)),
            iostatus_enabled: AtomicBool::new(false),
            iostatus: Mutex::new(BlockDeviceIoStatus::Ok),
            account_invalid: account,
            account_failed: account,
            stats: Stats::default(),
            created: Instant::now(),
            resize_notifier: Mutex::new(None),
        }
    }

    /// The backend's name (`-drive id=`), empty for one a device made
    /// for a node it names.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The root node, if a medium is inserted.
    pub fn root(&self) -> Option<Arc<Node>> {
        self.root.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Size in bytes (0 without a medium).
    pub fn size(&self) -> u64 {
        self.root().map_or(0, |n| n.size())
    }

    /// Whether writes are refused: the root is read-only or the backend
    /// holds no write permission.
    pub fn read_only(&self) -> bool {
        let (perm, _) = *self.perm.lock().unwrap_or_else(|e| e.into_inner());
        self.root()
            .is_none_or(|n| n.read_only() || perm & crate::perm::WRITE == 0)
    }

    /// Whether the guest sees a write-back cache (`cache=writethrough`
    /// turns it off; a device may change it, as virtio-blk's WCE does).
    pub fn write_cache(&self) -> bool {
        self.write_cache.load(Ordering::Relaxed)
    }

    pub fn set_write_cache(&self, on: bool) {
        self.write_cache.store(on, Ordering::Relaxed);
    }

    /// The error policies (`rerror`, `werror`) the device applies.
    pub fn on_error(&self, read: bool) -> BlockdevOnError {
        let (r, w) = *self.on_error.lock().unwrap_or_else(|e| e.into_inner());
        if read {
            r
        } else {
            w
        }
    }

    /// Sets `rerror` and `werror` (QEMU's blk_set_on_error); `Auto`
    /// keeps what the backend had.
    pub fn set_on_error(&self, read: BlockdevOnError, write: BlockdevOnError) {
        let mut p = self.on_error.lock().unwrap_or_else(|e| e.into_inner());
        if read != BlockdevOnError::Auto {
            p.0 = read;
        }
        if write != BlockdevOnError::Auto {
            p.1 = write;
        }
    }

    /// A device that reports I/O status (query-block's `io-status`)
    /// turns it on when it attaches; the status starts `ok`.
    pub fn enable_iostatus(&self) {
        self.iostatus_enabled.store(true, Ordering::Relaxed);
        *self.iostatus.lock().unwrap_or_else(|e| e.into_inner()) = BlockDeviceIoStatus::Ok;
    }

    /// Whether query-block reports `io-status` (QEMU's
    /// blk_iostatus_is_enabled): a device turned it on and a policy can
    /// stop the VM.
    pub fn iostatus_is_enabled(&self) -> bool {
        let (r, w) = *self.on_error.lock().unwrap_or_else(|e| e.into_inner());
        self.iostatus_enabled.load(Ordering::Relaxed)
            && (matches!(w, BlockdevOnError::Enospc | BlockdevOnError::Stop)
                || r == BlockdevOnError::Stop)
    }

    /// The I/O status, when reported.
    pub fn iostatus(&self) -> Option<BlockDeviceIoStatus> {
        self.iostatus_is_enabled()
            .then(|| *self.iostatus.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Back to `ok` (`cont` does it for every named backend).
    pub fn iostatus_reset(&self) {
        if self.iostatus_is_enabled() {
            *self.iostatus.lock().unwrap_or_else(|e| e.into_inner()) = BlockDeviceIoStatus::Ok;
        }
    }

    /// What a device does about a failed request (QEMU's
    /// blk_get_error_action): `errno` is the host's error number.
    pub fn error_action(&self, is_read: bool, errno: i32) -> BlockErrorAction {
        match self.on_error(is_read) {
            BlockdevOnError::Enospc if errno == libc::ENOSPC => BlockErrorAction::Stop,
            BlockdevOnError::Enospc | BlockdevOnError::Report => BlockErrorAction::Report,
            BlockdevOnError::Stop => BlockErrorAction::Stop,
            BlockdevOnError::Ignore => BlockErrorAction::Ignore,
            // Never stored: set_on_error keeps the old policy for Auto.
            BlockdevOnError::Auto => BlockErrorAction::Report,
        }
    }

    /// Records a failed request the device acts on with `action` (QEMU's
    /// blk_error_action): a stop marks the I/O status failed (or
    /// nospace) first, so that query-block agrees with the events. The
    /// caller emits the returned BLOCK_IO_ERROR event, then stops the
    /// VM for `Stop`.
    pub fn record_error(
        &self,
        action: BlockErrorAction,
        is_read: bool,
        errno: i32,
    ) -> BlockIoErrorEvent {
        let enabled = self.iostatus_is_enabled();
        if action == BlockErrorAction::Stop && enabled {
            let mut s = self.iostatus.lock().unwrap_or_else(|e| e.into_inner());
            if *s == BlockDeviceIoStatus::Ok {
                *s = if errno == libc::ENOSPC {
                    BlockDeviceIoStatus::Nospace
                } else {
                    BlockDeviceIoStatus::Failed
                };
            }
        }
        BlockIoErrorEvent {
            device: self.name.clone(),
            node_name: self
                .root()
                .map(|n| n.name().to_string())
                .unwrap_or_default(),
            operation: if is_read {
                IoOperationType::Read
            } else {
                IoOperationType::Write
            },
            action,
            nospace: enabled.then_some(errno == libc::ENOSPC),
            reason: crate::error::strerror(&io::Error::from_raw_os_error(errno)),
        }
    }

    /// Called after block_resize changed the size (virtio-blk raises a
    /// configuration change interrupt).
    pub fn set_resize_notifier(&self, f: Box<dyn Fn() + Send + Sync>) {
        *self
            .resize_notifier
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(f);
    }

    pub(crate) fn notify_resize(&self) {
        if let Some(f) = &*self
            .resize_notifier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            f();
        }
    }

    /// Where the device's bytes lie in one host file, for reads and
    /// writes that go there directly (asynchronous, zero-copy): a medium
    /// whose graph is a file or raw's window of one, without
    /// detect-zeroes, and a write-back cache (write-through needs a
    /// flush after each write, which the synchronous path does).
    pub fn host_extent(&self) -> Option<crate::node::HostExtent> {
        if !self.write_cache() {
            return None;
        }
        self.root()?.host_extent()
    }

    /// Counts `requests` reads or writes that went to `extent` directly
    /// as one transfer of `len` bytes, as QEMU counts merged requests:
    /// each one an operation, all but one merged. A failed transfer is
    /// not counted here: the device runs its requests again through the
    /// synchronous path.
    pub fn host_io_done(
        &self,
        extent: &crate::node::HostExtent,
        write: bool,
        offset: u64,
        len: u64,
        requests: u32,
        started: Instant,
    ) {
        if write {
            extent.note_write(offset, len);
        }
        let s = &self.stats;
        let (ops, bytes, time, merged) = if write {
            (&s.wr_ops, &s.wr_bytes, &s.wr_time_ns, &s.wr_merged)
        } else {
            (&s.rd_ops, &s.rd_bytes, &s.rd_time_ns, &s.rd_merged)
        };
        let requests = u64::from(requests.max(1));
        ops.fetch_add(requests, Ordering::Relaxed);
        bytes.fetch_add(len, Ordering::Relaxed);
        // Each request waited for the whole transfer.
        time.fetch_add(
            started.elapsed().as_nanos() as u64 * requests,
            Ordering::Relaxed,
        );
        merged.fetch_add(requests - 1, Ordering::Relaxed);
        self.touch();
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = Instant::now();
        let node = self.check(Kind::Read, offset, buf.len() as u64)?;
        let r = node.read(offset, buf);
        self.account(Kind::Read, buf.len() as u64, start, &r);
        r
    }

    /// Writes `buf` at `offset`.
    pub fn write(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let start = Instant::now();
        let node = self.check(Kind::Write, offset, buf.len() as u64)?;
        let mut r = node.write(offset, buf);
        if r.is_ok() && !self.write_cache() {
            r = node.flush();
        }
        self.account(Kind::Write, buf.len() as u64, start, &r);
        r
    }

    /// Makes earlier writes durable.
    pub fn flush(&self) -> io::Result<()> {
        let start = Instant::now();
        let Some(node) = self.root() else {
            self.count_invalid(Kind::Flush);
            return Err(io::Error::from_raw_os_error(libc::ENOMEDIUM));
        };
        let r = node.flush();
        self.account(Kind::Flush, 0, start, &r);
        r
    }

    /// Lets the host forget `len` bytes at `offset` (a no-op unless the
    /// node was opened with `discard=unmap`).
    pub fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let start = Instant::now();
        let node = self.check(Kind::Other, offset, len)?;
        let r = node.discard(offset, len);
        self.account(Kind::Other, 0, start, &r);
        r
    }

    /// Writes `len` zero bytes at `offset`; `may_unmap` lets the host
    /// deallocate them where the node allows discards.
    pub fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> io::Result<()> {
        let start = Instant::now();
        let node = self.check(Kind::Write, offset, len)?;
        let r = node.write_zeroes(offset, len, may_unmap);
        self.account(Kind::Write, len, start, &r);
        r
    }

    /// QEMU's request check: a medium, write permission for writes, and
    /// the range inside the device.
    fn check(&self, kind: Kind, offset: u64, len: u64) -> io::Result<Arc<Node>> {
        let Some(node) = self.root() else {
            self.count_invalid(kind);
            return Err(io::Error::from_raw_os_error(libc::ENOMEDIUM));
        };
        if matches!(kind, Kind::Write | Kind::Other) && self.read_only() {
            self.count_invalid(kind);
            return Err(io::Error::from_raw_os_error(libc::EACCES));
        }
        let size = node.size();
        if len > i32::MAX as u64 || offset > size || size - offset < len {
            self.count_invalid(kind);
            return Err(eio());
        }
        Ok(node)
    }

    fn count_invalid(&self, kind: Kind) {
        let s = &self.stats;
        let c = match kind {
            Kind::Read => &s.invalid_rd,
            Kind::Write => &s.invalid_wr,
            Kind::Flush => &s.invalid_flush,
            Kind::Other => return,
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    fn touch(&self) {
        let now = self.created.elapsed().as_nanos().max(1) as u64;
        self.stats.last_access_ns.store(now, Ordering::Relaxed);
    }

    /// Counts a finished request. A failed one counts as the device
    /// will treat it (QEMU accounts in the device): failed when reported,
    /// done when ignored, not at all when it stops the VM (its retry
    /// counts).
    fn account(&self, kind: Kind, bytes: u64, start: Instant, r: &io::Result<()>) {
        let s = &self.stats;
        let ns = start.elapsed().as_nanos() as u64;
        let (failed, counters) = match kind {
            Kind::Read => (&s.failed_rd, Some((&s.rd_ops, &s.rd_bytes, &s.rd_time_ns))),
            Kind::Write => (&s.failed_wr, Some((&s.wr_ops, &s.wr_bytes, &s.wr_time_ns))),
            Kind::Flush => (&s.failed_flush, None),
            Kind::Other => {
                s.discard_ops.fetch_add(1, Ordering::Relaxed);
                self.touch();
                return;
            }
        };
        if let Err(e) = r {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            match self.error_action(matches!(kind, Kind::Read), errno) {
                BlockErrorAction::Report => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    self.touch();
                    return;
                }
                BlockErrorAction::Stop => return,
                BlockErrorAction::Ignore => {}
            }
        }
        if let Some((ops, b, t)) = counters {
            ops.fetch_add(1, Ordering::Relaxed);
            b.fetch_add(bytes, Ordering::Relaxed);
            t.fetch_add(ns, Ordering::Relaxed);
        } else {
            s.flush_ops.fetch_add(1, Ordering::Relaxed);
            s.flush_time_ns.fetch_add(ns, Ordering::Relaxed);
        }
        self.touch();
    }

    /// Nanoseconds since the last request, if there was one.
    pub(crate) fn idle_time_ns(&self) -> Option<i64> {
        let last = self.stats.last_access_ns.load(Ordering::Relaxed);
        (last != 0).then(|| self.created.elapsed().as_nanos() as i64 - last as i64)
    }
}

impl Drop for BlockBackend {
    fn drop(&mut self) {
        if let Some(root) = self.root.get_mut().ok().and_then(|r| r.take()) {
            root.set_use(self.use_id, None);
        }
    }
}
