//! The block graph: every node by node-name, every backend by name,
//! opening nodes from BlockdevOptions, deleting them, resizing, and
//! the query answers.

use crate::backend::BlockBackend;
use crate::error::{BlockError, Result};
use crate::file::{FileDriver, FileOptions};
use crate::node::{Child, Driver, Node, NodeFlags, ParentUse};
use crate::null::NullDriver;
use crate::perm;
use crate::qcow2::{EventSink, Qcow2Image, Qcow2Options};
use crate::raw::RawDriver;
use qmp::qapi::*;
use qmp::visit::ToQObject;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Longest node name QEMU keeps (32 bytes with the NUL).
const NODE_NAME_MAX: usize = 31;

/// All nodes and backends of one VM. Lives on the main thread; devices
/// hold `Arc<BlockBackend>`s taken from it.
#[derive(Default)]
pub struct BlockGraph {
    nodes: Vec<Arc<Node>>,
    backends: Vec<Arc<BlockBackend>>,
    next_use: u64,
    name_counter: u64,
    /// `-drive` interfaces and indexes taken so far.
    pub(crate) drive_slots: Vec<(String, u32)>,
    /// Where drivers send events (BLOCK_IMAGE_CORRUPTED); set after
    /// the nodes of the command line exist, so drivers hold the slot.
    events: Arc<Mutex<Option<EventSink>>>,
}

/// QEMU's id_wellformed: a letter, then letters, digits, `-`, `.`, `_`.
pub fn id_wellformed(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// The driver name of a set of options (`"qcow2"`).
fn driver_name(opts: &BlockdevOptions) -> String {
    opts.to_qobject()
        .get("driver")
        .and_then(|d| d.as_str())
        .unwrap_or("")
        .to_string()
}

/// A node being opened: its own driver and the children it opened.
struct Opened {
    driver: Box<dyn Driver>,
    children: Vec<(&'static str, Arc<Node>)>,
}

impl BlockGraph {
    pub fn new() -> BlockGraph {
        BlockGraph::default()
    }

    /// Writes out what every driver keeps in memory, as QEMU does at
    /// exit; the nodes stay usable.
    pub fn close_all(&self) {
        for n in &self.nodes {
            n.driver.close();
        }
    }

    /// Sets where the block layer's events go.
    pub fn set_event_sink(&mut self, sink: EventSink) {
        *self.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink);
    }

    /// The sink drivers get: whatever the slot holds when they emit.
    fn driver_event_sink(&self) -> EventSink {
        let slot = self.events.clone();
        Arc::new(move |e| {
            let sink = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(s) = sink {
                s(e);
            }
        })
    }

    fn new_use_id(&mut self) -> u64 {
        self.next_use += 1;
        self.next_use
    }

    /// `#blockNNN`: a counter and two random digits, as QEMU's
    /// id_generate.
    fn generate_name(&mut self) -> String {
        static SEED: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
        let x = SEED
            .fetch_add(nanos | 1, Ordering::Relaxed)
            .wrapping_mul(0x2545_f491_4f6c_dd1d);
        let n = self.name_counter;
        self.name_counter += 1;
        format!("#block{n}{:02}", (x >> 33) % 100)
    }

    pub fn find_node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.iter().find(|n| n.name == name).cloned()
    }

    pub fn find_backend(&self, name: &str) -> Option<Arc<BlockBackend>> {
        self.backends
            .iter()
            .find(|b| !b.name.is_empty() && b.name == name)
            .cloned()
    }

    pub fn backends(&self) -> &[Arc<BlockBackend>] {
        &self.backends
    }

    /// QEMU's bdrv_lookup_bs: a backend's root by its name, else a node.
    pub fn lookup_bs(&self, device: Option<&str>, node_name: Option<&str>) -> Result<Arc<Node>> {
        if let Some(d) = device {
            if let Some(b) = self.find_backend(d) {
                return b
                    .root()
                    .ok_or_else(|| BlockError::generic(format!("Device '{d}' has no medium")));
            }
        }
        if let Some(n) = node_name.and_then(|n| self.find_node(n)) {
            return Ok(n);
        }
        Err(BlockError::generic(format!(
            "Cannot find device={} nor node_name={}",
            device.unwrap_or(""),
            node_name.unwrap_or("")
        )))
    }

    fn check_node_name(&self, name: &str) -> Result<()> {
        if !id_wellformed(name) {
            return Err(BlockError::generic("Invalid node name"));
        }
        if self.find_backend(name).is_some() {
            return Err(BlockError::generic(format!(
                "node-name={name} is conflicting with a device id"
            )));
        }
        if self.find_node(name).is_some() {
            return Err(BlockError::generic("Duplicate node name"));
        }
        if name.len() > NODE_NAME_MAX {
            return Err(BlockError::generic("Node name too long"));
        }
        Ok(())
    }

    /// blockdev-add and -blockdev: a tree of nodes whose root the
    /// monitor owns.
    pub fn blockdev_add(&mut self, opts: &BlockdevOptions) -> Result<Arc<Node>> {
        if opts.node_name.is_none() {
            return Err(BlockError::generic(
                "'node-name' must be specified for the root node",
            ));
        }
        self.open_tree(opts, None, true)
    }

    /// Opens a tree of nodes; on failure every node it made is gone.
    pub(crate) fn open_tree(
        &mut self,
        opts: &BlockdevOptions,
        inherit: Option<&NodeFlags>,
        monitor_owned: bool,
    ) -> Result<Arc<Node>> {
        let mark = self.nodes.len();
        let r = self.open(opts, inherit, monitor_owned);
        if r.is_err() {
            self.nodes.truncate(mark);
        }
        r
    }

    fn open(
        &mut self,
        opts: &BlockdevOptions,
        inherit: Option<&NodeFlags>,
        monitor_owned: bool,
    ) -> Result<Arc<Node>> {
        let flags = self.flags(opts, inherit)?;
        let Opened { driver, children } = self.open_driver(opts, &flags)?;
        let name = match &opts.node_name {
            Some(n) => {
                self.check_node_name(n)?;
                n.clone()
            }
            None => self.generate_name(),
        };
        let desc = format!("node '{name}'");
        let children: Vec<Child> = children
            .into_iter()
            .map(|(role, node)| {
                let use_id = self.new_use_id();
                node.set_use(
                    use_id,
                    Some(ParentUse {
                        id: use_id,
                        desc: desc.clone(),
                        role,
                        perm: 0,
                        shared: perm::ALL,
                        is_backend: false,
                        device: String::new(),
                    }),
                );
                Child { role, node, use_id }
            })
            .collect();
        let node = Arc::new(Node {
            name,
            driver,
            flags,
            children,
            parents: Mutex::new(Vec::new()),
            monitor_owned,
            wr_highest_offset: AtomicU64::new(0),
            options: opts.to_qobject(),
        });
        node.driver.attach_node(&node);
        self.nodes.push(node.clone());
        Ok(node)
    }

    fn flags(&self, opts: &BlockdevOptions, inherit: Option<&NodeFlags>) -> Result<NodeFlags> {
        let cache = opts.cache.as_ref();
        let read_only = opts
            .read_only
            .or(inherit.map(|f| f.read_only))
            .unwrap_or(false);
        let unmap = match opts.discard {
            Some(d) => d == BlockdevDiscardOptions::Unmap,
            // Lower layers always pass discards on; the top decides.
            None => inherit.is_some(),
        };
        let detect_zeroes = opts
            .detect_zeroes
            .or(inherit.map(|f| f.detect_zeroes))
            .unwrap_or(BlockdevDetectZeroesOptions::Off);
        if detect_zeroes == BlockdevDetectZeroesOptions::Unmap && !unmap {
            return Err(BlockError::generic(
                "setting detect-zeroes to unmap is not allowed without setting discard operation to unmap",
            ));
        }
        if opts.force_share == Some(true) && !read_only {
            return Err(BlockError::generic(
                "force-share=on can only be used with read-only images",
            ));
        }
        Ok(NodeFlags {
            read_only,
            direct: cache
                .and_then(|c| c.direct)
                .or(inherit.map(|f| f.direct))
                .unwrap_or(false),
            no_flush: cache
                .and_then(|c| c.no_flush)
                .or(inherit.map(|f| f.no_flush))
                .unwrap_or(false),
            unmap,
            detect_zeroes,
        })
    }

    fn open_child(&mut self, r: &BlockdevRef, flags: &NodeFlags) -> Result<Arc<Node>> {
        match r {
            BlockdevRef::Definition(o) => self.open(o, Some(flags), false),
            BlockdevRef::Reference(name) => self.lookup_bs(Some(name), Some(name)),
        }
    }

    fn open_driver(&mut self, opts: &BlockdevOptions, flags: &NodeFlags) -> Result<Opened> {
        let leaf = |driver: Box<dyn Driver>| Opened {
            driver,
            children: Vec::new(),
        };
        match &opts.u {
            BlockdevOptionsVariant::File(f) => Ok(leaf(Box::new(open_file(f, flags, false)?))),
            BlockdevOptionsVariant::HostDevice(f) => Ok(leaf(Box::new(open_file(f, flags, true)?))),
            BlockdevOptionsVariant::NullCo(n) => {
                Ok(leaf(Box::new(NullDriver::new(false, n.size, n.latency_ns))))
            }
            BlockdevOptionsVariant::NullAio(n) => {
                Ok(leaf(Box::new(NullDriver::new(true, n.size, n.latency_ns))))
            }
            BlockdevOptionsVariant::Blkdebug(b) => {
                let image = self.open_child(&b.image, flags)?;
                let driver = crate::blkdebug::BlkdebugDriver::open(image.clone(), b)?;
                Ok(Opened {
                    driver: Box::new(driver),
                    children: vec![("image", image)],
                })
            }
            BlockdevOptionsVariant::Raw(r) => {
                let file = self.open_child(&r.file, flags)?;
                let driver = RawDriver::open(file.clone(), r.offset, r.size)?;
                Ok(Opened {
                    driver: Box::new(driver),
                    children: vec![("file", file)],
                })
            }
            BlockdevOptionsVariant::Qcow2(q) => self.open_qcow2(q, flags),
            _ => Err(BlockError::generic(format!(
                "Unknown driver: '{}'",
                driver_name(opts)
            ))),
        }
    }

    /// A qcow2 node: its file, then its backing chain (given, none, or
    /// the one the header names, relative to the image).
    fn open_qcow2(&mut self, q: &BlockdevOptionsQcow2, flags: &NodeFlags) -> Result<Opened> {
        let file = self.open_child(&q.file, flags)?;
        let backing_flags = NodeFlags {
            read_only: true,
            ..flags.clone()
        };
        let backing = match q.backing.as_deref() {
            Some(BlockdevRefOrNull::Null(())) => None,
            Some(BlockdevRefOrNull::Definition(o)) => Some(
                self.open(o, Some(&backing_flags), false)
                    .map_err(|e| e.prepend("Could not open backing file: "))?,
            ),
            Some(BlockdevRefOrNull::Reference(name)) => {
                Some(self.lookup_bs(Some(name), Some(name))?)
            }
            None => match Qcow2Image::backing_from_header(&file)? {
                (Some(name), fmt) => {
                    let path = full_backing_filename(&file.driver.filename(), &name);
                    let fmt = fmt
                        .or_else(|| crate::drive::probe_format(&path).map(str::to_string))
                        .unwrap_or_else(|| "raw".to_string());
                    let mut fo = serde_json::Map::new();
                    fo.insert("driver".into(), "file".into());
                    fo.insert("filename".into(), path.into());
                    let mut o = serde_json::Map::new();
                    o.insert("driver".into(), fmt.into());
                    o.insert("file".into(), serde_json::Value::Object(fo));
                    let opts: BlockdevOptions =
                        qmp::visit::from_value(&serde_json::Value::Object(o)).map_err(|e| {
                            BlockError::generic(format!("Could not open backing file: {}", e.desc))
                        })?;
                    Some(
                        self.open(&opts, Some(&backing_flags), false)
                            .map_err(|e| e.prepend("Could not open backing file: "))?,
                    )
                }
                (None, _) => None,
            },
        };
        let opts = Qcow2Options {
            lazy_refcounts: q.lazy_refcounts,
            pass_discard_request: q.pass_discard_request,
            pass_discard_snapshot: q.pass_discard_snapshot,
            pass_discard_other: q.pass_discard_other,
            overlap_check: q.overlap_check.clone(),
            cache_size: q.cache_size,
            l2_cache_size: q.l2_cache_size,
            refcount_cache_size: q.refcount_cache_size,
            cache_clean_interval: q.cache_clean_interval,
            encrypt_key_secret: q.encrypt.as_ref().and_then(encrypt_key_secret),
            unmap: flags.unmap,
            read_only: flags.read_only,
        };
        let img = Qcow2Image::open(
            file.clone(),
            backing.clone(),
            &opts,
            Some(self.driver_event_sink()),
        )?;
        let mut children = vec![("file", file)];
        if let Some(b) = backing {
            children.push(("backing", b));
        }
        Ok(Opened {
            driver: Box::new(img),
            children,
        })
    }

    /// blockdev-del, with QEMU's refusals.
    pub fn blockdev_del(&mut self, name: &str) -> Result<()> {
        let Some(node) = self.find_node(name) else {
            return Err(BlockError::generic(format!("Cannot find node {name}")));
        };
        if node.has_backend() {
            return Err(BlockError::generic(format!("Node {name} is in use")));
        }
        if !node.monitor_owned {
            return Err(BlockError::generic(format!(
                "Node {name} is not owned by the monitor"
            )));
        }
        if node.parent_count() > 0 {
            return Err(BlockError::generic(format!(
                "Block device {name} is in use"
            )));
        }
        self.nodes.retain(|n| n.name != name);
        drop(node);
        self.sweep();
        Ok(())
    }

    /// Drops nodes nobody uses any more (children of deleted nodes).
    pub(crate) fn sweep(&mut self) {
        loop {
            let before = self.nodes.len();
            self.nodes
                .retain(|n| n.monitor_owned || n.parent_count() > 0 || Arc::strong_count(n) > 1);
            if self.nodes.len() == before {
                break;
            }
        }
    }

    /// Makes a backend on `root` (None: an empty drive) with the given
    /// use of it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_backend(
        &mut self,
        name: &str,
        root: Option<Arc<Node>>,
        perm_: (u64, u64),
        write_cache: bool,
        on_read_error: BlockdevOnError,
        on_write_error: BlockdevOnError,
    ) -> Result<Arc<BlockBackend>> {
        if !name.is_empty() {
            if self.find_backend(name).is_some() {
                return Err(BlockError::generic(format!(
                    "Device with id '{name}' already exists"
                )));
            }
            if self.find_node(name).is_some() {
                return Err(BlockError::generic(format!(
                    "Device name '{name}' conflicts with an existing node name"
                )));
            }
        }
        let use_id = self.new_use_id();
        let desc = if name.is_empty() {
            "a block device".to_string()
        } else {
            name.to_string()
        };
        if let Some(r) = &root {
            r.check_use(use_id, perm_.0, perm_.1)?;
            r.set_use(
                use_id,
                Some(ParentUse {
                    id: use_id,
                    desc,
                    role: "root",
                    perm: perm_.0,
                    shared: perm_.1,
                    is_backend: true,
                    device: name.to_string(),
                }),
            );
        }
        let b = Arc::new(BlockBackend::new(
            name.to_string(),
            use_id,
            root,
            perm_,
            write_cache,
            on_read_error,
            on_write_error,
            !name.is_empty(),
        ));
        self.backends.push(b.clone());
        Ok(b)
    }

    /// Changes a backend's use of its root, checked first.
    fn set_backend_perm(
        &self,
        b: &BlockBackend,
        perm_: u64,
        shared: u64,
        desc: &str,
    ) -> Result<()> {
        if let Some(r) = b.root() {
            r.check_use(b.use_id, perm_, shared)?;
            r.set_use(
                b.use_id,
                Some(ParentUse {
                    id: b.use_id,
                    desc: desc.to_string(),
                    role: "root",
                    perm: perm_,
                    shared,
                    is_backend: true,
                    device: b.name.clone(),
                }),
            );
        }
        *b.perm.lock().unwrap_or_else(|e| e.into_inner()) = (perm_, shared);
        Ok(())
    }

    /// A device's `drive=` property: the backend of that name, or a new
    /// anonymous backend on the node of that name. `Ok(None)` when
    /// neither exists (the device words that error). The device then
    /// uses the backend as QEMU's block devices do: consistent reads,
    /// writes unless the backend is read-only; it lets others read and
    /// (when `resizable`) resize.
    pub fn attach_device(
        &mut self,
        drive: &str,
        qdev: &str,
        resizable: bool,
    ) -> Result<Option<Arc<BlockBackend>>> {
        let (b, created) = match self.find_backend(drive) {
            Some(b) => (b, false),
            None => match self.find_node(drive) {
                Some(node) => (
                    self.add_backend(
                        "",
                        Some(node),
                        (0, perm::ALL),
                        true,
                        BlockdevOnError::Report,
                        BlockdevOnError::Enospc,
                    )?,
                    true,
                ),
                None => return Ok(None),
            },
        };
        let result = (|| {
            let mut dev = b.device.lock().unwrap_or_else(|e| e.into_inner());
            if dev.is_some() {
                return Err(BlockError::generic(format!(
                    "Drive '{drive}' is already in use by another device"
                )));
            }
            let ro = b.root().is_none_or(|n| n.read_only());
            let mut p = perm::CONSISTENT_READ;
            if !ro {
                p |= perm::WRITE;
            }
            let mut shared = perm::CONSISTENT_READ | perm::WRITE_UNCHANGED | perm::GRAPH_MOD;
            if resizable {
                shared |= perm::RESIZE;
            }
            let desc = if b.name.is_empty() { qdev } else { &b.name };
            self.set_backend_perm(&b, p, shared, desc)?;
            *dev = Some(qdev.to_string());
            b.enable_iostatus();
            Ok(())
        })();
        match result {
            Ok(()) => Ok(Some(b)),
            Err(e) => {
                if created {
                    self.remove_backend(&b);
                }
                Err(e)
            }
        }
    }

    /// Undoes attach_device for a device that could not be created: the
    /// backend is free again (its permissions are set anew by the next
    /// attach), an anonymous one goes away.
    pub fn detach_device(&mut self, b: &Arc<BlockBackend>) {
        *b.device.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if b.name.is_empty() {
            self.remove_backend(b);
        }
    }

    /// HMP drive_del, as QEMU 2.11's: a node name deletes that node
    /// (blockdev-del); a drive loses its medium and its name. A device
    /// that still uses it then gets ENOMEDIUM, reported to the guest
    /// rather than stopping the VM.
    pub fn drive_del(&mut self, id: &str) -> Result<()> {
        if self.find_node(id).is_some() {
            return self.blockdev_del(id);
        }
        let Some(b) = self.find_backend(id) else {
            return Err(BlockError::generic(format!("Device '{id}' not found")));
        };
        if b.device.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            b.set_on_error(BlockdevOnError::Report, BlockdevOnError::Report);
        }
        self.remove_backend(&b);
        Ok(())
    }

    /// HMP commit (QEMU 2.11's synchronous bdrv_commit): what the root
    /// of drive `device` holds itself goes down into its backing file,
    /// then the root is emptied. A read-only backing file is reopened
    /// read-write for the time of it (vmm can do that for qcow2 and raw
    /// images and files). Errors are errno values, as QEMU's monitor prints them;
    /// a drive without medium or an unknown one get their own texts.
    pub fn commit(&self, device: &str) -> std::result::Result<(), CommitError> {
        let Some(b) = self.find_backend(device) else {
            return Err(CommitError::NotFound);
        };
        let Some(top) = b.root() else {
            return Err(CommitError::NoMedium);
        };
        commit_node(&top).map_err(CommitError::Io)
    }

    /// `commit all` and the mux's `C-a s`: every drive with a backing
    /// file, the first error ending it.
    pub fn commit_all(&self) -> io::Result<()> {
        for b in &self.backends {
            if let Some(top) = b.root() {
                if top.backing_child().is_some() {
                    commit_node(&top)?;
                }
            }
        }
        Ok(())
    }

    /// Forgets a backend (its device went away, or it was anonymous).
    pub fn remove_backend(&mut self, b: &Arc<BlockBackend>) {
        self.backends.retain(|x| !Arc::ptr_eq(x, b));
        if let Some(r) = b.root.write().unwrap_or_else(|e| e.into_inner()).take() {
            r.set_use(b.use_id, None);
        }
        self.sweep();
    }

    /// Whether QEMU counts the node as a root: the root of a backend or
    /// a node the monitor owns.
    pub(crate) fn is_root(&self, node: &Arc<Node>) -> bool {
        node.monitor_owned
            || self
                .backends
                .iter()
                .any(|b| b.root().is_some_and(|r| Arc::ptr_eq(&r, node)))
    }

    /// block_resize.
    pub fn block_resize(
        &mut self,
        device: Option<&str>,
        node_name: Option<&str>,
        size: i64,
    ) -> Result<()> {
        let node = self.lookup_bs(device, node_name)?;
        if !self.is_root(&node) {
            return Err(BlockError::generic("The feature 'resize' is not enabled"));
        }
        if size < 0 {
            return Err(BlockError::generic("Parameter 'size' expects a >0 size"));
        }
        let use_id = self.new_use_id();
        node.check_use(use_id, perm::RESIZE, perm::ALL)?;
        node.set_use(
            use_id,
            Some(ParentUse {
                id: use_id,
                desc: "a block device".to_string(),
                role: "root",
                perm: perm::RESIZE,
                shared: perm::ALL,
                is_backend: true,
                device: String::new(),
            }),
        );
        let r = if node.driver.name().starts_with("null") {
            node.driver.truncate(size as u64)
        } else if node.read_only() {
            Err(BlockError::generic("Image is read-only"))
        } else {
            node.driver.truncate(size as u64)
        };
        node.set_use(use_id, None);
        r?;
        for b in &self.backends {
            if let Some(root) = b.root() {
                let mut n = Some(root);
                while let Some(x) = n {
                    if Arc::ptr_eq(&x, &node) {
                        b.notify_resize();
                        break;
                    }
                    n = x.file_child().cloned();
                }
            }
        }
        Ok(())
    }

    fn filename(node: &Node) -> String {
        let windowed = node.driver_name() == "raw"
            && (node.options.get("offset").is_some() || node.options.get("size").is_some());
        if windowed {
            // QEMU describes such a node by its options.
            let mut o = serde_json::Map::new();
            o.insert("driver".into(), "raw".into());
            for k in ["offset", "size"] {
                if let Some(v) = node.options.get(k) {
                    o.insert(k.into(), v.clone());
                }
            }
            if let Some(f) = node.file_child() {
                let mut fo = serde_json::Map::new();
                fo.insert("driver".into(), f.driver_name().into());
                if !f.driver_name().starts_with("null") {
                    fo.insert("filename".into(), f.driver.filename().into());
                }
                o.insert("file".into(), serde_json::Value::Object(fo));
            }
            return format!("json:{}", serde_json::Value::Object(o));
        }
        node.driver.filename()
    }

    /// The backing file a node names and its format: the attached
    /// backing node's (as QEMU records it on attach), else what the
    /// image header says.
    fn backing_file(node: &Node) -> Option<(String, Option<String>)> {
        if let Some(b) = node.backing_child() {
            return Some((Self::filename(b), Some(b.driver_name().to_string())));
        }
        node.driver.qcow2().and_then(|q| q.backing_name())
    }

    fn image_info(node: &Node) -> ImageInfo {
        let mut info = ImageInfo {
            filename: Self::filename(node),
            format: node.driver_name().to_string(),
            dirty_flag: None,
            actual_size: node.driver.actual_size().map(|s| s as i64),
            virtual_size: node.size() as i64,
            cluster_size: None,
            encrypted: None,
            compressed: None,
            backing_filename: None,
            full_backing_filename: None,
            backing_filename_format: None,
            snapshots: None,
            backing_image: None,
            format_specific: None,
        };
        if let Some(q) = node.driver.qcow2() {
            let (spec, dirty, snapshots) = q.info();
            info.cluster_size = Some(q.cluster_size() as i64);
            info.dirty_flag = Some(dirty);
            info.format_specific = Some(spec);
            info.snapshots = (!snapshots.is_empty()).then_some(snapshots);
        }
        if let Some((name, fmt)) = Self::backing_file(node) {
            info.full_backing_filename = Some(full_backing_filename(&Self::filename(node), &name));
            info.backing_filename = Some(name);
            info.backing_filename_format = fmt;
        }
        if let Some(b) = node.backing_child() {
            info.backing_image = Some(Box::new(Self::image_info(b)));
        }
        info
    }

    /// The BlockDeviceInfo of a node (for `blk`'s root when given).
    pub fn device_info(node: &Node, blk: Option<&BlockBackend>) -> BlockDeviceInfo {
        BlockDeviceInfo {
            file: Self::filename(node),
            node_name: Some(node.name.clone()),
            ro: node.read_only(),
            drv: node.driver_name().to_string(),
            backing_file: Self::backing_file(node).map(|(n, _)| n),
            backing_file_depth: {
                let mut depth = 0;
                let mut n = node.backing_child();
                while let Some(b) = n {
                    depth += 1;
                    n = b.backing_child();
                }
                depth
            },
            encrypted: false,
            encryption_key_missing: false,
            detect_zeroes: node.flags.detect_zeroes,
            bps: 0,
            bps_rd: 0,
            bps_wr: 0,
            iops: 0,
            iops_rd: 0,
            iops_wr: 0,
            image: Self::image_info(node),
            bps_max: None,
            bps_rd_max: None,
            bps_wr_max: None,
            iops_max: None,
            iops_rd_max: None,
            iops_wr_max: None,
            bps_max_length: None,
            bps_rd_max_length: None,
            bps_wr_max_length: None,
            iops_max_length: None,
            iops_rd_max_length: None,
            iops_wr_max_length: None,
            iops_size: None,
            group: None,
            cache: BlockdevCacheInfo {
                writeback: blk.is_none_or(|b| b.write_cache()),
                direct: node.flags.direct,
                no_flush: node.flags.no_flush,
            },
            write_threshold: 0,
        }
    }

    /// query-named-block-nodes.
    pub fn query_named_block_nodes(&self) -> Vec<BlockDeviceInfo> {
        self.nodes
            .iter()
            .map(|n| Self::device_info(n, None))
            .collect()
    }

    /// query-block: every backend with a name or a device.
    pub fn query_block(&self) -> Vec<BlockInfo> {
        self.backends
            .iter()
            .filter_map(|b| {
                let dev = b.device.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if b.name.is_empty() && dev.is_none() {
                    return None;
                }
                Some(BlockInfo {
                    device: b.name.clone(),
                    qdev: dev.clone().filter(|d| !d.is_empty()),
                    r#type: "unknown".to_string(),
                    // Without a device the drive counts as removable.
                    removable: dev.is_none(),
                    locked: false,
                    inserted: b.root().map(|r| Self::device_info(&r, Some(b))),
                    tray_open: None,
                    io_status: b.iostatus(),
                    dirty_bitmaps: None,
                })
            })
            .collect()
    }

    fn node_stats(node: &Node) -> BlockStats {
        BlockStats {
            device: None,
            node_name: Some(node.name.clone()),
            stats: BlockDeviceStats {
                wr_highest_offset: node.wr_highest_offset.load(Ordering::Relaxed) as i64,
                ..zero_stats()
            },
            parent: node.file_child().map(|c| Box::new(Self::node_stats(c))),
            backing: node.backing_child().map(|c| Box::new(Self::node_stats(c))),
        }
    }

    /// query-blockstats: per backend, or per named node with
    /// `query-nodes`.
    pub fn query_blockstats(&self, query_nodes: bool) -> Vec<BlockStats> {
        if query_nodes {
            return self.nodes.iter().map(|n| Self::node_stats(n)).collect();
        }
        self.backends
            .iter()
            .filter(|b| {
                !b.name.is_empty() || b.device.lock().unwrap_or_else(|e| e.into_inner()).is_some()
            })
            .map(|b| {
                let mut s = match b.root() {
                    Some(r) => Self::node_stats(&r),
                    None => BlockStats {
                        device: None,
                        node_name: None,
                        stats: zero_stats(),
                        parent: None,
                        backing: None,
                    },
                };
                s.device = Some(b.name.clone());
                let st = &b.stats;
                let g = |a: &AtomicU64| a.load(Ordering::Relaxed) as i64;
                s.stats = BlockDeviceStats {
                    rd_bytes: g(&st.rd_bytes),
                    wr_bytes: g(&st.wr_bytes),
                    rd_operations: g(&st.rd_ops),
                    wr_operations: g(&st.wr_ops),
                    flush_operations: g(&st.flush_ops),
                    flush_total_time_ns: g(&st.flush_time_ns),
                    wr_total_time_ns: g(&st.wr_time_ns),
                    rd_total_time_ns: g(&st.rd_time_ns),
                    wr_highest_offset: s.stats.wr_highest_offset,
                    rd_merged: g(&st.rd_merged),
                    wr_merged: g(&st.wr_merged),
                    idle_time_ns: b.idle_time_ns(),
                    failed_rd_operations: g(&st.failed_rd),
                    failed_wr_operations: g(&st.failed_wr),
                    failed_flush_operations: g(&st.failed_flush),
                    invalid_rd_operations: g(&st.invalid_rd),
                    invalid_wr_operations: g(&st.invalid_wr),
                    invalid_flush_operations: g(&st.invalid_flush),
                    account_invalid: b.account_invalid,
                    account_failed: b.account_failed,
                    timed_stats: Vec::new(),
                };
                s
            })
            .collect()
    }
}

fn zero_stats() -> BlockDeviceStats {
    BlockDeviceStats {
        rd_bytes: 0,
        wr_bytes: 0,
        rd_operations: 0,
        wr_operations: 0,
        flush_operations: 0,
        flush_total_time_ns: 0,
        wr_total_time_ns: 0,
        rd_total_time_ns: 0,
        wr_highest_offset: 0,
        rd_merged: 0,
        wr_merged: 0,
        idle_time_ns: None,
        failed_rd_operations: 0,
        failed_wr_operations: 0,
        failed_flush_operations: 0,
        invalid_rd_operations: 0,
        invalid_wr_operations: 0,
        invalid_flush_operations: 0,
        account_invalid: false,
        account_failed: false,
        timed_stats: Vec::new(),
    }
}

/// The key-secret of qcow2 encryption options (LUKS or AES).
fn encrypt_key_secret(e: &BlockdevQcow2Encryption) -> Option<String> {
    e.to_qobject()
        .get("key-secret")
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// QEMU's path_combine for a backing file named in an image: relative
/// names are relative to the image's directory.
pub(crate) fn full_backing_filename(image: &str, backing: &str) -> String {
    if backing.starts_with('/') || backing.contains("://") || backing.starts_with("json:") {
        return backing.to_string();
    }
    match image.rfind('/') {
        Some(i) => format!("{}{}", &image[..=i], backing),
        None => backing.to_string(),
    }
}

fn open_file(f: &BlockdevOptionsFile, flags: &NodeFlags, host_device: bool) -> Result<FileDriver> {
    if let Some(pr) = &f.pr_manager {
        return Err(BlockError::generic(format!(
            "No persistent reservation manager with id '{pr}'"
        )));
    }
    if f.aio == Some(BlockdevAioOptions::Native) && !flags.direct {
        return Err(BlockError::generic(
            "aio=native was specified, but it requires cache.direct=on, which was not specified.",
        ));
    }
    FileDriver::open(&FileOptions {
        filename: f.filename.clone(),
        read_only: flags.read_only,
        direct: flags.direct,
        locking: f.locking != Some(OnOffAuto::Off),
        host_device,
        native_aio: f.aio == Some(BlockdevAioOptions::Native),
    })
}

/// Why a commit did not happen.
#[derive(Debug)]
pub enum CommitError {
    NotFound,
    NoMedium,
    Io(io::Error),
}

/// bdrv_commit on `top`: copy its own clusters into its backing node,
/// in 2 MiB steps, then empty it.
fn commit_node(top: &Arc<Node>) -> io::Result<()> {
    const STEP: u64 = 2 << 20;
    let errno = |e: i32| io::Error::from_raw_os_error(e);
    let (Some(image), Some(base)) = (top.driver.qcow2(), top.backing_child()) else {
        return Err(errno(libc::ENOTSUP));
    };
    let reopen = base.read_only();
    if reopen {
        base.driver.reopen_file(false).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOTSUP) {
                io::Error::other(format!(
                    "not available yet: vmm reopens only qcow2 and raw images and files read-write, and the backing file is {}",
                    base.driver_name()
                ))
            } else {
                errno(libc::EACCES)
            }
        })?;
    }
    let copied = (|| {
        let len = top.size();
        if len > base.size() {
            base.driver.truncate(len).map_err(|_| errno(libc::EIO))?;
        }
        let mut buf = vec![0u8; STEP as usize];
        let mut offset = 0;
        while offset < len {
            let (own, n) = image.allocated(offset, STEP.min(len - offset))?;
            if n == 0 {
                break;
            }
            if own {
                let chunk = &mut buf[..n as usize];
                top.read(offset, chunk)?;
                base.write(offset, chunk)?;
            }
            offset += n;
        }
        image.make_empty()?;
        top.flush()?;
        base.flush()
    })();
    if reopen {
        let _ = base.driver.reopen_file(true);
    }
    copied
}
