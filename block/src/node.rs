//! A node of the block graph: a driver instance with its node-name,
//! children and the uses its parents make of it.

use crate::error::{BlockError, Result};
use crate::perm;
use qmp::qapi::{BlkdebugEvent, BlockdevDetectZeroesOptions};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What every driver does. Calls come from any thread (vCPUs, the main
/// loop); each is synchronous today. Offsets and lengths have been
/// checked against the node's size by the caller.
pub(crate) trait Driver: Send + Sync {
    /// The driver's name as `drv` reports it (`file`, `raw`, `null-co`).
    fn name(&self) -> &'static str;
    /// Size in bytes.
    fn size(&self) -> u64;
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    fn flush(&self) -> io::Result<()>;
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;
    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> io::Result<()>;
    /// Changes the size (block_resize), with QEMU's errors.
    fn truncate(&self, size: u64) -> Result<()>;
    /// The file name `query-named-block-nodes` reports.
    fn filename(&self) -> String;
    /// Bytes allocated on the host, where the driver knows it.
    fn actual_size(&self) -> Option<u64> {
        None
    }
    /// Whether a new cumulative use of the node is possible (file: the
    /// image locks of other processes).
    fn check_perm(&self, _perm: u64, _shared: u64) -> Result<()> {
        Ok(())
    }
    /// Takes the cumulative use (file: sets the image locks).
    fn set_perm(&self, _perm: u64, _shared: u64) {}
    /// How the driver maps its parents' use onto the child in `role`
    /// (raw: a filter, passed through).
    fn child_perm(&self, role: &str, perm: u64, shared: u64) -> (u64, u64) {
        let _ = role;
        perm::filter_child(perm, shared)
    }
    /// Called once the node holding the driver exists.
    fn attach_node(&self, _node: &Arc<Node>) {}
    /// vmm is exiting: metadata held in memory goes to the image
    /// (QEMU's bdrv_close_all).
    fn close(&self) {}
    /// The qcow2 image, for what only qcow2 does (snapshots, info).
    /// Opens the host file again, read-write or read-only, keeping its
    /// descriptor and locks (QEMU's bdrv_reopen, as a commit into a
    /// read-only backing file needs it); drivers that cannot answer
    /// ENOTSUP.
    fn reopen_file(&self, _read_only: bool) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::ENOTSUP))
    }

    fn qcow2(&self) -> Option<&crate::qcow2::Qcow2Image> {
        None
    }
    /// A point of interest in the I/O path was reached on this node
    /// (QEMU's bdrv_debug_event); only `blkdebug` acts on it.
    fn debug_event(&self, _event: BlkdebugEvent) {}
    /// Where the node's bytes lie in one host file, when reads and
    /// writes may go straight there without the driver seeing them (a
    /// file, raw's window of one). None for drivers that must see each
    /// request.
    fn host_extent(&self) -> Option<HostExtent> {
        None
    }
}

/// A node's bytes as a range of one host file: the asynchronous I/O
/// path reads and writes there directly, zero-copy from guest memory.
#[derive(Clone)]
pub struct HostExtent {
    /// Kept open while a request uses it.
    pub(crate) file: Arc<std::fs::File>,
    /// The file offset of the node's byte 0.
    pub base: u64,
    /// O_DIRECT alignment of offsets, lengths and buffer addresses (1
    /// without O_DIRECT).
    pub align: u64,
    /// `aio=native` on the file: io_uring rather than worker threads.
    pub native_aio: bool,
    /// The nodes on the way down with the offset of the top node's byte 0
    /// in each, so that a write done in the file still counts in each
    /// (`wr_highest_offset`).
    pub(crate) nodes: Vec<(Arc<Node>, u64)>,
}

impl HostExtent {
    pub fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&*self.file)
    }

    /// A write of `len` bytes at the top node's `offset` was done in
    /// the file.
    pub(crate) fn note_write(&self, offset: u64, len: u64) {
        for (node, delta) in &self.nodes {
            node.note_write(offset + delta, len);
        }
    }

    /// The same extent seen from a parent whose byte 0 is this node's
    /// byte `offset` (raw's window).
    pub(crate) fn shifted(mut self, offset: u64) -> HostExtent {
        self.base += offset;
        for (_, delta) in &mut self.nodes {
            *delta += offset;
        }
        self
    }
}

/// Who uses a node, and how.
#[derive(Clone, Debug)]
pub(crate) struct ParentUse {
    /// A number unique to the use (one per attachment).
    pub id: u64,
    /// How QEMU names the user in conflict errors.
    pub desc: String,
    /// The role (`file`, `root`).
    pub role: &'static str,
    pub perm: u64,
    pub shared: u64,
    /// A block backend's attachment (bdrv_has_blk).
    pub is_backend: bool,
    /// The backend's name, for events (empty when anonymous or not a
    /// backend).
    pub device: String,
}

/// One edge to a child.
pub(crate) struct Child {
    pub role: &'static str,
    pub node: Arc<Node>,
    /// The id of this edge among the child's parents.
    pub use_id: u64,
}

/// Open-time options that are not the driver's own.
#[derive(Clone, Debug)]
pub(crate) struct NodeFlags {
    pub read_only: bool,
    pub direct: bool,
    pub no_flush: bool,
    /// `discard=unmap`: discards reach the driver.
    pub unmap: bool,
    pub detect_zeroes: BlockdevDetectZeroesOptions,
}

/// A node of the graph.
pub struct Node {
    pub(crate) name: String,
    pub(crate) driver: Box<dyn Driver>,
    pub(crate) flags: NodeFlags,
    pub(crate) children: Vec<Child>,
    pub(crate) parents: Mutex<Vec<ParentUse>>,
    /// Created by blockdev-add or -blockdev at the top, not as a child.
    pub(crate) monitor_owned: bool,
    pub(crate) wr_highest_offset: AtomicU64,
    /// The options that opened it (for `json:` file names).
    pub(crate) options: serde_json::Value,
}

impl Node {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn driver_name(&self) -> &'static str {
        self.driver.name()
    }

    pub fn read_only(&self) -> bool {
        self.flags.read_only
    }

    pub fn size(&self) -> u64 {
        self.driver.size()
    }

    /// The node's `file` child, if any (QEMU's bs->file, which is
    /// blkdebug's `image` child too).
    pub fn file_child(&self) -> Option<&Arc<Node>> {
        self.children
            .iter()
            .find(|c| c.role == "file" || c.role == "image")
            .map(|c| &c.node)
    }

    /// Tells the node's driver that `event` happened (QEMU's
    /// BLKDBG_EVENT).
    pub(crate) fn debug_event(&self, event: BlkdebugEvent) {
        self.driver.debug_event(event);
    }

    pub(crate) fn parents(&self) -> std::sync::MutexGuard<'_, Vec<ParentUse>> {
        self.parents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The name of the backend attached to the node ("" if none), as
    /// QEMU's bdrv_get_device_name.
    pub fn device_name(&self) -> String {
        self.parents()
            .iter()
            .find(|p| p.is_backend && !p.device.is_empty())
            .map(|p| p.device.clone())
            .unwrap_or_default()
    }

    /// The node's `backing` child, if any.
    pub fn backing_child(&self) -> Option<&Arc<Node>> {
        self.children
            .iter()
            .find(|c| c.role == "backing")
            .map(|c| &c.node)
    }

    pub(crate) fn has_backend(&self) -> bool {
        self.parents().iter().any(|p| p.is_backend)
    }

    pub(crate) fn parent_count(&self) -> usize {
        self.parents().len()
    }

    pub fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.driver.read(offset, buf)
    }

    pub fn write(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if self.flags.detect_zeroes != BlockdevDetectZeroesOptions::Off
            && buf.iter().all(|b| *b == 0)
        {
            let unmap =
                self.flags.detect_zeroes == BlockdevDetectZeroesOptions::Unmap && self.flags.unmap;
            return self.write_zeroes(offset, buf.len() as u64, unmap);
        }
        self.debug_event(BlkdebugEvent::Pwritev);
        let r = self.driver.write(offset, buf);
        self.debug_event(BlkdebugEvent::PwritevDone);
        r?;
        self.note_write(offset, buf.len() as u64);
        Ok(())
    }

    pub fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> io::Result<()> {
        self.debug_event(BlkdebugEvent::PwritevZero);
        let r = self
            .driver
            .write_zeroes(offset, len, may_unmap && self.flags.unmap);
        self.debug_event(BlkdebugEvent::PwritevDone);
        r?;
        self.note_write(offset, len);
        Ok(())
    }

    pub fn flush(&self) -> io::Result<()> {
        let file = self.file_child();
        if let Some(f) = file {
            f.debug_event(BlkdebugEvent::FlushToOs);
        }
        if self.flags.no_flush {
            return Ok(());
        }
        if let Some(f) = file {
            f.debug_event(BlkdebugEvent::FlushToDisk);
        }
        self.driver.flush()
    }

    pub fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.flags.unmap {
            return Ok(());
        }
        self.driver.discard(offset, len)
    }

    /// Where the node's bytes lie in a host file, when requests may
    /// bypass every driver on the way (no detect-zeroes either).
    pub(crate) fn host_extent(self: &Arc<Self>) -> Option<HostExtent> {
        if self.flags.detect_zeroes != BlockdevDetectZeroesOptions::Off {
            return None;
        }
        let mut extent = self.driver.host_extent()?;
        extent.nodes.insert(0, (self.clone(), 0));
        Some(extent)
    }

    fn note_write(&self, offset: u64, len: u64) {
        self.wr_highest_offset
            .fetch_max(offset.saturating_add(len), Ordering::Relaxed);
    }

    /// The cumulative use of the node if `replace` (an existing use id)
    /// were changed to `new` (or removed when `new` is None; a new use
    /// when `replace` is not among the parents).
    fn cumulative(&self, replace: u64, new: Option<(u64, u64)>) -> (u64, u64) {
        let mut perm = 0;
        let mut shared = perm::ALL;
        for p in self.parents().iter().filter(|p| p.id != replace) {
            perm |= p.perm;
            shared &= p.shared;
        }
        if let Some((p, s)) = new {
            perm |= p;
            shared &= s;
        }
        (perm, shared)
    }

    /// Checks that use `id` may become `(perm, shared)`: against the
    /// other parents, the node's read-only state, and down the graph.
    pub(crate) fn check_use(&self, id: u64, perm: u64, shared: u64) -> Result<()> {
        if perm & (perm::WRITE | perm::WRITE_UNCHANGED) != 0 && self.flags.read_only {
            return Err(BlockError::generic("Block node is read-only"));
        }
        for p in self.parents().iter().filter(|p| p.id != id) {
            if perm & !p.shared != 0 {
                return Err(BlockError::generic(format!(
                    "Conflicts with use by {} as '{}', which does not allow '{}' on {}",
                    p.desc,
                    p.role,
                    perm::names(perm & !p.shared),
                    self.name
                )));
            }
            if p.perm & !shared != 0 {
                return Err(BlockError::generic(format!(
                    "Conflicts with use by {} as '{}', which uses '{}' on {}",
                    p.desc,
                    p.role,
                    perm::names(p.perm & !shared),
                    self.name
                )));
            }
        }
        let (cp, cs) = self.cumulative(id, Some((perm, shared)));
        self.check_down(cp, cs)
    }

    fn check_down(&self, perm: u64, shared: u64) -> Result<()> {
        if self.children.is_empty() {
            return self.driver.check_perm(perm, shared);
        }
        for c in &self.children {
            let (np, ns) = self.driver.child_perm(c.role, perm, shared);
            c.node.check_use(c.use_id, np, ns)?;
        }
        Ok(())
    }

    /// Records use `u` (replacing an earlier one with its id), or
    /// removes use `id` when `u` is None, and passes the new cumulative
    /// use down. Call `check_use` first where the use grows.
    pub(crate) fn set_use(&self, id: u64, u: Option<ParentUse>) {
        {
            let mut parents = self.parents();
            parents.retain(|p| p.id != id);
            if let Some(u) = u {
                parents.push(u);
            }
        }
        self.refresh_perm();
    }

    pub(crate) fn refresh_perm(&self) {
        let (perm, shared) = self.cumulative(u64::MAX, None);
        if self.children.is_empty() {
            self.driver.set_perm(perm, shared);
            return;
        }
        for c in &self.children {
            let (np, ns) = self.driver.child_perm(c.role, perm, shared);
            let mut parents = c.node.parents();
            if let Some(p) = parents.iter_mut().find(|p| p.id == c.use_id) {
                p.perm = np;
                p.shared = ns;
            }
            drop(parents);
            c.node.refresh_perm();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The children lose this parent.
        for c in &self.children {
            c.node.set_use(c.use_id, None);
        }
    }
}
