//! The qcow2 format, versions 2 and 3, interchangeable with QEMU's:
//! L1/L2 mapping with an L2 cache, refcounts of any width with table
//! growth, zero and compressed clusters, discard, backing files,
//! internal snapshots, lazy refcounts with repair, overlap checks and
//! corruption marking, and image creation.
//!
//! Crash consistency comes from the order of metadata writes: a
//! cluster's refcount reaches the file before any L2 or L1 entry that
//! points to it, and a reference is removed on disk before the
//! refcount that counted it drops. A crash then leaves at most leaked
//! clusters. With lazy refcounts the first rule is relaxed and the
//! dirty bit makes the next open repair the refcounts.

mod cache;
mod check;
mod create;
mod header;
mod refcount;
mod snapshot;

pub use check::CheckResult;
pub(crate) use create::create;
pub use create::CreateOptions;

use crate::error::{BlockError, Result};
use crate::node::{Driver, Node};
use cache::TableCache;
use header::*;
use qmp::qapi::{
    BlockImageCorruptedEvent, Event, ImageInfoSpecific, ImageInfoSpecificQCow2,
    Qcow2OverlapCheckMode, Qcow2OverlapChecks, SnapshotInfo,
};
use snapshot::Snapshot;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

const L1E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2E_OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const REFT_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;
const OFLAG_COPIED: u64 = 1 << 63;
const OFLAG_COMPRESSED: u64 = 1 << 62;
const OFLAG_ZERO: u64 = 1;

/// QEMU's defaults: 1 MiB of L2 cache, a quarter of that for refcount
/// blocks, at least 2 L2 tables and 4 refcount blocks.
const DEFAULT_L2_CACHE_BYTES: u64 = 1 << 20;
const MIN_L2_CACHE_TABLES: u64 = 2;
const MIN_REFCOUNT_CACHE_TABLES: u64 = 4;

/// Overlap check bits, in QEMU's order (their names index
/// `OVERLAP_NAMES`).
pub(crate) const OL_MAIN_HEADER: u32 = 1 << 0;
pub(crate) const OL_ACTIVE_L1: u32 = 1 << 1;
pub(crate) const OL_ACTIVE_L2: u32 = 1 << 2;
pub(crate) const OL_REFCOUNT_TABLE: u32 = 1 << 3;
pub(crate) const OL_REFCOUNT_BLOCK: u32 = 1 << 4;
pub(crate) const OL_SNAPSHOT_TABLE: u32 = 1 << 5;
pub(crate) const OL_INACTIVE_L1: u32 = 1 << 6;
pub(crate) const OL_INACTIVE_L2: u32 = 1 << 7;
const OL_CONSTANT: u32 = OL_MAIN_HEADER | OL_ACTIVE_L1 | OL_REFCOUNT_TABLE | OL_SNAPSHOT_TABLE;
const OL_ALL: u32 = 0xff;
const OL_CACHED: u32 = OL_ALL & !OL_INACTIVE_L2;
const OVERLAP_NAMES: [&str; 8] = [
    "qcow2_header",
    "active L1 table",
    "active L2 table",
    "refcount table",
    "refcount block",
    "snapshot table",
    "inactive L1 table",
    "inactive L2 table",
];

/// Why a cluster is freed: which `pass-discard-*` option decides
/// whether the host file hears of it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum DiscardKind {
    Never,
    Request,
    Snapshot,
    Other,
}

/// Where events of the block layer go (the main loop's queue).
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// What an L2 entry says about a guest cluster.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cluster {
    Unallocated,
    ZeroPlain,
    ZeroAlloc(u64),
    Normal(u64),
    Compressed,
}

fn classify(e: u64) -> Cluster {
    if e & OFLAG_COMPRESSED != 0 {
        Cluster::Compressed
    } else if e & OFLAG_ZERO != 0 {
        match e & L2E_OFFSET_MASK {
            0 => Cluster::ZeroPlain,
            h => Cluster::ZeroAlloc(h),
        }
    } else {
        match e & L2E_OFFSET_MASK {
            0 => Cluster::Unallocated,
            h => Cluster::Normal(h),
        }
    }
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// The open options that are qcow2's own.
#[derive(Clone, Debug, Default)]
pub(crate) struct Qcow2Options {
    pub lazy_refcounts: Option<bool>,
    pub pass_discard_request: Option<bool>,
    pub pass_discard_snapshot: Option<bool>,
    pub pass_discard_other: Option<bool>,
    pub overlap_check: Option<Qcow2OverlapChecks>,
    pub cache_size: Option<i64>,
    pub l2_cache_size: Option<i64>,
    pub refcount_cache_size: Option<i64>,
    pub cache_clean_interval: Option<i64>,
    pub encrypt_key_secret: Option<String>,
    /// `discard=unmap` on the node (default of pass-discard-request).
    pub unmap: bool,
    pub read_only: bool,
}

/// The immutable shape of an image.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    version: u32,
    cluster_bits: u32,
    cluster_size: u64,
    /// log2 of the entries of an L2 table.
    l2_bits: u32,
    refcount_order: u32,
    /// log2 of the entries of a refcount block.
    rb_bits: u32,
    refcount_max: u64,
    csize_shift: u32,
    csize_mask: u64,
    coffset_mask: u64,
}

impl Geometry {
    fn new(version: u32, cluster_bits: u32, refcount_order: u32) -> Geometry {
        let bits = 1u32 << refcount_order;
        Geometry {
            version,
            cluster_bits,
            cluster_size: 1 << cluster_bits,
            l2_bits: cluster_bits - 3,
            refcount_order,
            rb_bits: cluster_bits + 3 - refcount_order,
            refcount_max: if bits == 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            },
            csize_shift: 62 - (cluster_bits - 8),
            csize_mask: (1 << (cluster_bits - 8)) - 1,
            coffset_mask: (1 << (62 - (cluster_bits - 8))) - 1,
        }
    }

    fn offset_in_cluster(&self, x: u64) -> u64 {
        x & (self.cluster_size - 1)
    }

    fn l2_entries(&self) -> u64 {
        1 << self.l2_bits
    }

    /// L1 entries needed for `size` bytes.
    fn l1_entries_for(&self, size: u64) -> u64 {
        size.div_ceil(self.cluster_size << self.l2_bits)
    }

    fn bytes_to_clusters(&self, b: u64) -> u64 {
        b.div_ceil(self.cluster_size)
    }
}

/// Everything that changes, behind the image's lock.
struct State {
    g: Geometry,
    file: Arc<Node>,
    hdr: Qcow2Header,
    backing_name: Option<String>,
    backing_format: Option<String>,
    l1: Vec<u64>,
    reftable: Vec<u64>,
    /// Highest reftable index in use (bounds the overlap scan).
    max_reftable_index: usize,
    l2_cache: TableCache,
    rc_cache: TableCache,
    snapshots: Vec<Snapshot>,
    /// Clusters below this are known in use.
    free_cluster_index: u64,
    lazy_refcounts: bool,
    /// The dirty bit is set on disk (lazy refcounts in use).
    dirty_on_disk: bool,
    /// A fatal corruption was found: no more I/O.
    broken: bool,
    signaled_corruption: bool,
    overlap_checks: u32,
    pass_discard: [bool; 4],
    read_only: bool,
    /// The last decompressed cluster (its L2 entry and bytes).
    compressed_cache: Option<(u64, Vec<u8>)>,
    /// Reused for copy-on-write of a whole cluster.
    scratch: Vec<u8>,
    /// A backing node is attached (unallocated clusters read from it).
    has_backing: bool,
    /// Nothing was ever written at or past this host offset (the file's
    /// end at open, then past every cluster handed out).
    host_end: u64,
    /// The last allocation lay past `host_end`: it reads as zeros.
    last_alloc_fresh: bool,
    /// cache-clean-interval: clean tables unused this long are dropped.
    clean_interval: Option<std::time::Duration>,
    last_clean: std::time::Instant,
    /// A corruption to report once the lock is released: message,
    /// offset, size, fatal.
    pending_event: Option<(String, Option<u64>, Option<u64>, bool)>,
    /// A compressed cluster replaced by a write, freed after the new
    /// L2 entry.
    free_compressed_later: Option<u64>,
}

/// An open qcow2 image.
pub struct Qcow2Image {
    state: Mutex<State>,
    file: Arc<Node>,
    backing: Option<Arc<Node>>,
    g: Geometry,
    node: OnceLock<Weak<Node>>,
    events: Option<EventSink>,
}

impl Qcow2Image {
    /// Opens the image in `file`. `backing` is the backing node the
    /// caller opened (from the options or the header's name).
    pub(crate) fn open(
        file: Arc<Node>,
        backing: Option<Arc<Node>>,
        opts: &Qcow2Options,
        events: Option<EventSink>,
    ) -> Result<Qcow2Image> {
        let mut st = State::load(file.clone(), opts)?;
        st.has_backing = backing.is_some();
        st.host_end = file.size().div_ceil(st.g.cluster_size) * st.g.cluster_size;
        let g = st.g;
        if !opts.read_only {
            if st.hdr.incompatible_features & INCOMPAT_DIRTY != 0 {
                let r = st.check(true).map_err(|e| {
                    BlockError::generic(format!(
                        "Could not repair dirty image: {}",
                        crate::error::strerror(&e)
                    ))
                })?;
                if r.check_errors > 0 || r.corruptions > 0 {
                    return Err(BlockError::generic(
                        "Could not repair dirty image: Input/output error",
                    ));
                }
                st.mark_clean()
                    .map_err(|e| BlockError::generic(crate::error::strerror(&e)))?;
            }
            // Bits vmm does not maintain are cleared, so that no one
            // trusts data vmm did not keep up to date (persistent
            // bitmaps).
            if st.hdr.autoclear_features != 0 {
                st.hdr.autoclear_features = 0;
                st.write_header_bytes(88, &0u64.to_be_bytes())
                    .map_err(|e| BlockError::generic(crate::error::strerror(&e)))?;
            }
        }
        Ok(Qcow2Image {
            state: Mutex::new(st),
            file,
            backing,
            g,
            node: OnceLock::new(),
            events,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The backing file name and format the header names.
    pub(crate) fn backing_from_header(file: &Node) -> Result<(Option<String>, Option<String>)> {
        let mut first = vec![0u8; 4096];
        file.read(0, &mut first)
            .map_err(|e| BlockError::generic(crate::error::strerror(&e)))?;
        let hdr = Qcow2Header::parse(&first)?;
        let cs = hdr.cluster_size() as usize;
        first.resize(cs, 0);
        file.read(0, &mut first)
            .map_err(|e| BlockError::generic(crate::error::strerror(&e)))?;
        let (name, exts) = parse_names(&hdr, &first)?;
        let fmt = backing_format(&exts)?;
        Ok((name, fmt))
    }

    /// Emits BLOCK_IMAGE_CORRUPTED for corruption the state recorded.
    fn report(&self, st: &mut State) {
        let Some((msg, offset, size, fatal)) = st.pending_event.take() else {
            return;
        };
        let Some(sink) = &self.events else { return };
        let node = self.node.get().and_then(|w| w.upgrade());
        let (device, node_name) = match &node {
            Some(n) => (n.device_name(), Some(n.name().to_string())),
            None => (String::new(), None),
        };
        sink(Event::BlockImageCorrupted(BlockImageCorruptedEvent {
            device,
            node_name,
            msg,
            offset: offset.map(|o| o as i64),
            size: size.map(|s| s as i64),
            fatal,
        }));
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<T> {
        let mut st = self.lock();
        if st.broken {
            return Err(io::Error::from_raw_os_error(libc::ENOMEDIUM));
        }
        if let Some(i) = st.clean_interval {
            // QEMU drops them from a timer; dropping them on the next
            // request after the interval frees the same memory.
            if st.last_clean.elapsed() >= i {
                st.l2_cache.drop_clean();
                st.rc_cache.drop_clean();
                st.last_clean = std::time::Instant::now();
            }
        }
        let r = f(&mut st);
        self.report(&mut st);
        r
    }

    /// Whether this image itself holds the guest bytes at `offset`
    /// (data, zeroes or compressed data) rather than leaving them to its
    /// backing file, and for how many bytes from there (at most `max`)
    /// that stays so: QEMU's bdrv_is_allocated, this layer only.
    pub(crate) fn allocated(&self, offset: u64, max: u64) -> io::Result<(bool, u64)> {
        self.with_state(|st| {
            let cs = st.g.cluster_size;
            let end = offset.saturating_add(max).min(st.hdr.size);
            let mut pos = offset;
            let mut first: Option<bool> = None;
            while pos < end {
                let here = classify(st.l2_entry(pos)?) != Cluster::Unallocated;
                match first {
                    None => first = Some(here),
                    Some(f) if f != here => break,
                    Some(_) => {}
                }
                pos = (pos / cs + 1) * cs;
            }
            Ok((first.unwrap_or(false), pos.min(end).saturating_sub(offset)))
        })
    }

    /// Every guest cluster dropped, so that all reads go to the backing
    /// file again (QEMU's qcow2_make_empty, after a commit).
    pub(crate) fn make_empty(&self) -> io::Result<()> {
        self.with_state(|st| {
            let size = st.hdr.size;
            st.mark_dirty()?;
            st.clear_clusters_full(0, size.div_ceil(st.g.cluster_size) * st.g.cluster_size)?;
            st.flush_caches()?;
            st.file.flush()
        })
    }

    /// Image-specific information for query-block and query-named-block-nodes.
    pub(crate) fn info(&self) -> (ImageInfoSpecific, bool, Vec<SnapshotInfo>) {
        let st = self.lock();
        let v3 = st.g.version >= 3;
        let spec = ImageInfoSpecific::Qcow2(ImageInfoSpecificQCow2 {
            compat: if v3 { "1.1" } else { "0.10" }.to_string(),
            lazy_refcounts: v3.then_some(st.lazy_refcounts),
            corrupt: v3.then_some(st.hdr.incompatible_features & INCOMPAT_CORRUPT != 0),
            refcount_bits: 1 << st.g.refcount_order,
            encrypt: None,
        });
        let dirty = st.hdr.incompatible_features & INCOMPAT_DIRTY != 0;
        (spec, dirty, st.snapshots.iter().map(|s| s.info()).collect())
    }

    pub(crate) fn cluster_size(&self) -> u64 {
        self.g.cluster_size
    }

    pub(crate) fn backing_name(&self) -> Option<(String, Option<String>)> {
        let st = self.lock();
        st.backing_name
            .clone()
            .map(|n| (n, st.backing_format.clone()))
    }

    pub(crate) fn snapshot_list(&self) -> Vec<SnapshotInfo> {
        self.lock().snapshots.iter().map(|s| s.info()).collect()
    }

    /// Creates an internal snapshot (blockdev-snapshot-internal-sync).
    pub(crate) fn snapshot_create(&self, name: &str, vm_clock_nsec: u64) -> io::Result<()> {
        self.with_state(|st| st.snapshot_create(name, vm_clock_nsec))
    }

    /// Deletes an internal snapshot; returns what it was.
    pub(crate) fn snapshot_delete(
        &self,
        id: Option<&str>,
        name: Option<&str>,
    ) -> io::Result<Option<SnapshotInfo>> {
        self.with_state(|st| st.snapshot_delete(id, name))
    }

    /// Consistency check (qemu-img check), optionally repairing.
    pub fn check(&self, repair: bool) -> io::Result<CheckResult> {
        self.with_state(|st| st.check(repair))
    }

    fn backing_read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match &self.backing {
            Some(b) => {
                let bsize = b.size();
                if offset >= bsize {
                    buf.fill(0);
                    return Ok(());
                }
                let n = ((bsize - offset) as usize).min(buf.len());
                b.read(offset, &mut buf[..n])?;
                buf[n..].fill(0);
                Ok(())
            }
            None => {
                buf.fill(0);
                Ok(())
            }
        }
    }
}

impl State {
    /// Reads and checks the header, the tables and the snapshots.
    fn load(file: Arc<Node>, opts: &Qcow2Options) -> Result<State> {
        let ioerr = |e: io::Error| BlockError::generic(crate::error::strerror(&e));
        let mut first = vec![0u8; V3_HEADER_LEN as usize];
        file.read(0, &mut first).map_err(|e| {
            BlockError::generic(format!(
                "Could not read qcow2 header: {}",
                crate::error::strerror(&e)
            ))
        })?;
        let hdr = Qcow2Header::parse(&first)?;
        let g = Geometry::new(hdr.version, hdr.cluster_bits, hdr.refcount_order.min(6));
        let mut cluster0 = vec![0u8; g.cluster_size as usize];
        file.read(0, &mut cluster0).map_err(ioerr)?;
        let ext_end = if hdr.backing_file_offset != 0 {
            hdr.backing_file_offset
        } else {
            g.cluster_size
        };
        let exts_for_features =
            parse_extensions(&cluster0, hdr.header_length as u64, ext_end).unwrap_or_default();
        if hdr.incompatible_features & !INCOMPAT_MASK != 0 {
            return Err(BlockError::generic(unsupported_features(
                &exts_for_features,
                hdr.incompatible_features & !INCOMPAT_MASK,
            )));
        }
        if hdr.incompatible_features & INCOMPAT_CORRUPT != 0 && !opts.read_only {
            return Err(BlockError::generic(
                "qcow2: Image is corrupt; cannot be opened read/write",
            ));
        }
        if hdr.refcount_order > 6 {
            return Err(BlockError::generic(
                "Reference count entry width too large; may not exceed 64 bits",
            ));
        }
        if hdr.version == 2 && hdr.refcount_order != 4 {
            return Err(BlockError::generic("Invalid refcount order"));
        }
        if hdr.crypt_method == CRYPT_AES {
            return Err(BlockError::generic(
                "Use of AES-CBC encrypted qcow2 images is no longer supported in system emulators",
            ));
        }
        if hdr.crypt_method != CRYPT_NONE {
            return Err(BlockError::generic(match opts.encrypt_key_secret {
                None => "Parameter 'encrypt.key-secret' is required for cipher".to_string(),
                Some(_) => "not available yet: qcow2 images with LUKS encryption arrive with the LUKS driver in vmm".to_string(),
            }));
        }
        // The refcount table.
        let max_rt_clusters = MAX_REFTABLE_BYTES >> g.cluster_bits;
        if hdr.refcount_table_clusters as u64 > max_rt_clusters.max(1) {
            return Err(BlockError::generic("Reference count table too large"));
        }
        if hdr.refcount_table_clusters == 0 {
            return Err(BlockError::generic(
                "Image does not contain a reference count table",
            ));
        }
        let rt_bytes = (hdr.refcount_table_clusters as u64) << g.cluster_bits;
        validate_table(
            &file,
            g,
            hdr.refcount_table_offset,
            rt_bytes,
            "Invalid reference count table offset",
        )?;
        // The snapshot table's place (its entries are read below).
        if hdr.nb_snapshots > MAX_SNAPSHOTS {
            return Err(BlockError::generic("Too many snapshots"));
        }
        validate_table(
            &file,
            g,
            hdr.snapshots_offset,
            hdr.nb_snapshots as u64 * 40,
            "Invalid snapshot table offset",
        )?;
        // The L1 table.
        if hdr.l1_size as u64 > MAX_L1_BYTES / 8 {
            return Err(BlockError::generic("Active L1 table too large"));
        }
        if g.l1_entries_for(hdr.size) > i32::MAX as u64 {
            return Err(BlockError::generic("Image is too big"));
        }
        if (hdr.l1_size as u64) < g.l1_entries_for(hdr.size) {
            return Err(BlockError::generic("L1 table is too small"));
        }
        validate_table(
            &file,
            g,
            hdr.l1_table_offset,
            hdr.l1_size as u64 * 8,
            "Invalid L1 table offset",
        )?;
        let l1 = read_u64_table(&file, hdr.l1_table_offset, hdr.l1_size as usize).map_err(|e| {
            BlockError::generic(format!(
                "Could not read L1 table: {}",
                crate::error::strerror(&e)
            ))
        })?;
        let reftable = read_u64_table(&file, hdr.refcount_table_offset, (rt_bytes / 8) as usize)
            .map_err(|e| {
                BlockError::generic(format!(
                    "Could not initialize refcount handling: {}",
                    crate::error::strerror(&e)
                ))
            })?;
        let (backing_name, exts) = parse_names(&hdr, &cluster0)?;
        let backing_format = backing_format(&exts)?;
        let snapshots = snapshot::read_table(&file, g, hdr.snapshots_offset, hdr.nb_snapshots)?;

        // Options.
        let lazy = opts
            .lazy_refcounts
            .unwrap_or(hdr.compatible_features & COMPAT_LAZY_REFCOUNTS != 0);
        if lazy && hdr.version < 3 {
            return Err(BlockError::generic(
                "Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level",
            ));
        }
        let (l2_bytes, rc_bytes) = cache_sizes(opts, g)?;
        if let Some(i) = opts.cache_clean_interval {
            if !(0..=i32::MAX as i64).contains(&i) {
                return Err(BlockError::generic("Cache clean interval too big"));
            }
        }
        let overlap_checks = overlap_mask(opts.overlap_check.as_ref());
        let pass_discard = [
            false,
            opts.pass_discard_request.unwrap_or(opts.unmap),
            opts.pass_discard_snapshot.unwrap_or(true),
            opts.pass_discard_other.unwrap_or(false),
        ];
        let max_reftable_index = reftable.iter().rposition(|e| *e != 0).unwrap_or(0);
        Ok(State {
            g,
            file,
            hdr,
            backing_name,
            backing_format,
            l1,
            reftable,
            max_reftable_index,
            l2_cache: TableCache::new((l2_bytes >> g.cluster_bits) as usize),
            rc_cache: TableCache::new((rc_bytes >> g.cluster_bits) as usize),
            snapshots,
            free_cluster_index: 0,
            lazy_refcounts: lazy,
            dirty_on_disk: false,
            broken: false,
            signaled_corruption: false,
            overlap_checks,
            pass_discard,
            read_only: opts.read_only,
            compressed_cache: None,
            scratch: Vec::new(),
            has_backing: false,
            host_end: 0,
            last_alloc_fresh: false,
            clean_interval: opts
                .cache_clean_interval
                .filter(|i| *i > 0)
                .map(|i| std::time::Duration::from_secs(i as u64)),
            last_clean: std::time::Instant::now(),
            pending_event: None,
            free_compressed_later: None,
        })
    }
}

/// QEMU's cache size options: the byte sizes of the L2 and refcount
/// caches, with its errors.
fn cache_sizes(opts: &Qcow2Options, g: Geometry) -> Result<(u64, u64)> {
    let cs = g.cluster_size;
    let neg = |v: Option<i64>| v.map(|x| x.max(0) as u64);
    let (total, l2, rc) = (
        neg(opts.cache_size),
        neg(opts.l2_cache_size),
        neg(opts.refcount_cache_size),
    );
    let ratio = 4;
    let (l2, rc) =
        match (total, l2, rc) {
            (Some(_), Some(_), Some(_)) => return Err(BlockError::generic(
                "cache-size, l2-cache-size and refcount-cache-size may not be set the same time",
            )),
            (Some(t), Some(l2), None) => {
                if l2 > t {
                    return Err(BlockError::generic(
                        "l2-cache-size may not exceed cache-size",
                    ));
                }
                (l2, t - l2)
            }
            (Some(t), None, Some(rc)) => {
                if rc > t {
                    return Err(BlockError::generic(
                        "refcount-cache-size may not exceed cache-size",
                    ));
                }
                (t - rc, rc)
            }
            (Some(t), None, None) => (t * ratio / (ratio + 1), t / (ratio + 1)),
            (None, Some(l2), Some(rc)) => (l2, rc),
            (None, Some(l2), None) => (l2, l2 / ratio),
            (None, None, Some(rc)) => (rc * ratio, rc),
            (None, None, None) => (DEFAULT_L2_CACHE_BYTES, DEFAULT_L2_CACHE_BYTES / ratio),
        };
    Ok((
        l2.max(MIN_L2_CACHE_TABLES * cs),
        rc.max(MIN_REFCOUNT_CACHE_TABLES * cs),
    ))
}

/// The checks an `overlap-check` option asks for.
fn overlap_mask(o: Option<&Qcow2OverlapChecks>) -> u32 {
    let mode = |m: Qcow2OverlapCheckMode| match m {
        Qcow2OverlapCheckMode::None => 0,
        Qcow2OverlapCheckMode::Constant => OL_CONSTANT,
        Qcow2OverlapCheckMode::Cached => OL_CACHED,
        Qcow2OverlapCheckMode::All => OL_ALL,
    };
    match o {
        None => OL_CACHED,
        Some(Qcow2OverlapChecks::Mode(m)) => mode(*m),
        Some(Qcow2OverlapChecks::Flags(f)) => {
            let mut m = mode(f.template.unwrap_or(Qcow2OverlapCheckMode::Cached));
            let flags = [
                f.main_header,
                f.active_l1,
                f.active_l2,
                f.refcount_table,
                f.refcount_block,
                f.snapshot_table,
                f.inactive_l1,
                f.inactive_l2,
            ];
            for (bit, v) in flags.iter().enumerate() {
                match v {
                    Some(true) => m |= 1 << bit,
                    Some(false) => m &= !(1 << bit),
                    None => {}
                }
            }
            m
        }
    }
}

/// The backing file name (from the header) and the extensions.
fn parse_names(hdr: &Qcow2Header, cluster0: &[u8]) -> Result<(Option<String>, Vec<Extension>)> {
    let cs = hdr.cluster_size();
    let ext_end = if hdr.backing_file_offset != 0 {
        hdr.backing_file_offset
    } else {
        cs
    };
    let exts = parse_extensions(cluster0, hdr.header_length as u64, ext_end)?;
    let name = if hdr.backing_file_offset != 0 {
        let len = hdr.backing_file_size as u64;
        if len > MAX_BACKING_NAME.min((cs - hdr.backing_file_offset) as u32) as u64 {
            return Err(BlockError::generic("Backing file name too long"));
        }
        let at = hdr.backing_file_offset as usize;
        Some(String::from_utf8_lossy(&cluster0[at..at + len as usize]).into_owned())
    } else {
        None
    };
    Ok((name, exts))
}

fn backing_format(exts: &[Extension]) -> Result<Option<String>> {
    match exts.iter().find(|e| e.kind == EXT_BACKING_FORMAT) {
        None => Ok(None),
        Some(e) if e.data.len() >= 16 => Err(BlockError::generic(format!(
            "ERROR: ext_backing_format: len={} too large (>=16)",
            e.data.len()
        ))),
        Some(e) => Ok(Some(String::from_utf8_lossy(&e.data).into_owned())),
    }
}

/// QEMU's validate_table_offset: aligned, and its end representable.
fn validate_table(file: &Node, g: Geometry, offset: u64, bytes: u64, msg: &str) -> Result<()> {
    let _ = file;
    if bytes > 0 && (g.offset_in_cluster(offset) != 0 || offset.checked_add(bytes).is_none())
        || offset > i64::MAX as u64
        || bytes > i64::MAX as u64 - offset.min(i64::MAX as u64)
    {
        return Err(BlockError::generic(msg));
    }
    Ok(())
}

/// Reads `n` big-endian u64 at `offset`.
fn read_u64_table(file: &Node, offset: u64, n: usize) -> io::Result<Vec<u64>> {
    let mut b = vec![0u8; n * 8];
    if n > 0 {
        file.read(offset, &mut b)?;
    }
    Ok(b.chunks_exact(8).map(|c| be64(c, 0)).collect())
}

fn u64_table_bytes(t: &[u64]) -> Vec<u8> {
    let mut b = Vec::with_capacity(t.len() * 8);
    for e in t {
        b.extend_from_slice(&e.to_be_bytes());
    }
    b
}

impl State {
    // ---- corruption and overlap checks ----

    /// Records a corruption (QEMU's qcow2_signal_corruption): a fatal
    /// one on a writable image marks it corrupt and stops all I/O.
    fn corrupt(
        &mut self,
        fatal: bool,
        offset: Option<u64>,
        size: Option<u64>,
        msg: String,
    ) -> io::Error {
        let fatal = fatal && !self.read_only;
        let already = self.hdr.incompatible_features & INCOMPAT_CORRUPT != 0;
        if self.signaled_corruption && (!fatal || already) {
            return eio();
        }
        if fatal {
            eprintln!(
                "qcow2: Marking image as corrupt: {msg}; further corruption events will be suppressed"
            );
        } else {
            eprintln!(
                "qcow2: Image is corrupt: {msg}; further non-fatal corruption events will be suppressed"
            );
        }
        self.pending_event = Some((msg, offset, size, fatal));
        if fatal {
            if self.g.version >= 3 {
                self.hdr.incompatible_features |= INCOMPAT_CORRUPT;
                let v = self.hdr.incompatible_features.to_be_bytes();
                let _ = self
                    .file
                    .write(OFF_INCOMPAT, &v)
                    .and_then(|_| self.file.flush());
            }
            self.broken = true;
        }
        self.signaled_corruption = true;
        eio()
    }

    /// The first metadata structure `[offset, offset+len)` overlaps,
    /// among the checked ones not in `ignore`.
    fn overlap(&mut self, offset: u64, len: u64, ignore: u32) -> io::Result<Option<u32>> {
        let checks = self.overlap_checks & !ignore;
        if checks == 0 || len == 0 {
            return Ok(None);
        }
        let cs = self.g.cluster_size;
        let end = offset + len;
        let hit = |start: u64, bytes: u64| bytes > 0 && offset < start + bytes && start < end;
        if checks & OL_MAIN_HEADER != 0 && offset < cs {
            return Ok(Some(OL_MAIN_HEADER));
        }
        if checks & OL_ACTIVE_L1 != 0
            && hit(
                self.hdr.l1_table_offset,
                (self.l1.len() as u64 * 8).div_ceil(cs) * cs,
            )
        {
            return Ok(Some(OL_ACTIVE_L1));
        }
        if checks & OL_ACTIVE_L2 != 0 {
            for e in &self.l1 {
                let o = e & L1E_OFFSET_MASK;
                if o != 0 && hit(o, cs) {
                    return Ok(Some(OL_ACTIVE_L2));
                }
            }
        }
        if checks & OL_REFCOUNT_TABLE != 0
            && hit(
                self.hdr.refcount_table_offset,
                (self.reftable.len() as u64 * 8).div_ceil(cs) * cs,
            )
        {
            return Ok(Some(OL_REFCOUNT_TABLE));
        }
        if checks & OL_REFCOUNT_BLOCK != 0 {
            for e in &self.reftable[..=self
                .max_reftable_index
                .min(self.reftable.len().saturating_sub(1))]
            {
                let o = e & REFT_OFFSET_MASK;
                if o != 0 && hit(o, cs) {
                    return Ok(Some(OL_REFCOUNT_BLOCK));
                }
            }
        }
        if checks & OL_SNAPSHOT_TABLE != 0
            && hit(
                self.hdr.snapshots_offset,
                snapshot::table_bytes(&self.snapshots).div_ceil(cs) * cs,
            )
        {
            return Ok(Some(OL_SNAPSHOT_TABLE));
        }
        if checks & OL_INACTIVE_L1 != 0 {
            for s in &self.snapshots {
                if hit(s.l1_offset, (s.l1_size as u64 * 8).div_ceil(cs) * cs) {
                    return Ok(Some(OL_INACTIVE_L1));
                }
            }
        }
        if checks & OL_INACTIVE_L2 != 0 {
            for s in self.snapshots.clone() {
                let l1 = read_u64_table(&self.file, s.l1_offset, s.l1_size as usize)?;
                for e in l1 {
                    let o = e & L1E_OFFSET_MASK;
                    if o != 0 && hit(o, cs) {
                        return Ok(Some(OL_INACTIVE_L2));
                    }
                }
            }
        }
        Ok(None)
    }

    /// QEMU's pre-write overlap check: a write that would hit metadata
    /// is a corruption, and refused.
    fn check_write(&mut self, offset: u64, len: u64, ignore: u32) -> io::Result<()> {
        if let Some(bit) = self.overlap(offset, len, ignore)? {
            let name = OVERLAP_NAMES[bit.trailing_zeros() as usize];
            return Err(self.corrupt(
                true,
                Some(offset),
                Some(len),
                format!("Preventing invalid write on metadata (overlaps with {name})"),
            ));
        }
        Ok(())
    }

    // ---- header ----

    fn write_header_bytes(&mut self, at: u64, bytes: &[u8]) -> io::Result<()> {
        self.file.write(at, bytes)?;
        self.file.flush()
    }

    /// Sets the dirty bit before the first metadata change with lazy
    /// refcounts.
    fn mark_dirty(&mut self) -> io::Result<()> {
        if !self.lazy_refcounts || self.dirty_on_disk {
            return Ok(());
        }
        self.hdr.incompatible_features |= INCOMPAT_DIRTY;
        let v = self.hdr.incompatible_features.to_be_bytes();
        self.write_header_bytes(OFF_INCOMPAT, &v)?;
        self.dirty_on_disk = true;
        Ok(())
    }

    /// Writes every cache out and clears the dirty bit.
    fn mark_clean(&mut self) -> io::Result<()> {
        self.flush_caches()?;
        self.file.flush()?;
        if self.hdr.incompatible_features & INCOMPAT_DIRTY != 0 {
            self.hdr.incompatible_features &= !INCOMPAT_DIRTY;
            let v = self.hdr.incompatible_features.to_be_bytes();
            self.write_header_bytes(OFF_INCOMPAT, &v)?;
        }
        self.dirty_on_disk = false;
        Ok(())
    }

    // ---- caches ----

    /// Writes the dirty refcount blocks; true when there were any.
    fn flush_refcounts(&mut self) -> io::Result<bool> {
        let dirty = self.rc_cache.dirty_slots();
        for &slot in &dirty {
            let off = self.rc_cache.get(slot).offset;
            self.check_write(off, self.g.cluster_size, OL_REFCOUNT_BLOCK)?;
            self.file.write(off, &self.rc_cache.get(slot).data)?;
            self.rc_cache.get_mut(slot).dirty = false;
        }
        Ok(!dirty.is_empty())
    }

    /// Makes the refcounts durable before an L2 table that may point
    /// to newly counted clusters is written (QEMU's cache dependency:
    /// a power cut must not leave a reference without its count).
    fn refcounts_before_l2(&mut self) -> io::Result<()> {
        if !self.lazy_refcounts && self.flush_refcounts()? {
            self.file.flush()?;
        }
        Ok(())
    }

    /// Writes one dirty L2 table, refcounts first.
    fn write_l2_slot(&mut self, slot: usize) -> io::Result<()> {
        self.refcounts_before_l2()?;
        let off = self.l2_cache.get(slot).offset;
        self.check_write(off, self.g.cluster_size, OL_ACTIVE_L2)?;
        self.file.write(off, &self.l2_cache.get(slot).data)?;
        self.l2_cache.get_mut(slot).dirty = false;
        Ok(())
    }

    /// Writes the dirty L2 tables (refcounts first); true when there
    /// were any.
    fn flush_l2(&mut self) -> io::Result<bool> {
        let dirty = self.l2_cache.dirty_slots();
        if dirty.is_empty() {
            return Ok(false);
        }
        self.refcounts_before_l2()?;
        for slot in dirty {
            self.write_l2_slot(slot)?;
        }
        Ok(true)
    }

    fn flush_caches(&mut self) -> io::Result<()> {
        self.flush_l2()?;
        self.flush_refcounts()?;
        Ok(())
    }

    /// The cache slot of the L2 table at `offset`, read if needed.
    fn load_l2(&mut self, offset: u64) -> io::Result<usize> {
        if let Some(s) = self.l2_cache.find(offset) {
            return Ok(s);
        }
        if let Some(v) = self.l2_cache.victim() {
            if self.l2_cache.get(v).dirty {
                self.write_l2_slot(v)?;
            }
        }
        let mut data = vec![0u8; self.g.cluster_size as usize];
        self.file.read(offset, &mut data)?;
        Ok(self.l2_cache.insert(offset, data, false))
    }

    /// The cache slot of the refcount block at `offset`, read if needed.
    fn load_refblock(&mut self, offset: u64) -> io::Result<usize> {
        if let Some(s) = self.rc_cache.find(offset) {
            return Ok(s);
        }
        if let Some(v) = self.rc_cache.victim() {
            if self.rc_cache.get(v).dirty {
                let off = self.rc_cache.get(v).offset;
                self.check_write(off, self.g.cluster_size, OL_REFCOUNT_BLOCK)?;
                self.file.write(off, &self.rc_cache.get(v).data)?;
                self.rc_cache.get_mut(v).dirty = false;
            }
        }
        let mut data = vec![0u8; self.g.cluster_size as usize];
        self.file.read(offset, &mut data)?;
        Ok(self.rc_cache.insert(offset, data, false))
    }

    // ---- mapping ----

    /// The L2 table offset of L1 entry `l1i` (0: none), checked.
    fn l2_offset(&mut self, l1i: usize) -> io::Result<u64> {
        let Some(e) = self.l1.get(l1i).copied() else {
            return Ok(0);
        };
        let off = e & L1E_OFFSET_MASK;
        if self.g.offset_in_cluster(off) != 0 {
            return Err(self.corrupt(
                true,
                None,
                None,
                format!("L2 table offset {off:#x} unaligned (L1 index: {l1i:#x})"),
            ));
        }
        Ok(off)
    }

    fn l1_index(&self, guest: u64) -> usize {
        (guest >> (self.g.cluster_bits + self.g.l2_bits)) as usize
    }

    fn l2_index(&self, guest: u64) -> usize {
        ((guest >> self.g.cluster_bits) & (self.g.l2_entries() - 1)) as usize
    }

    /// The L2 entry of a guest offset (0 where no L2 table exists).
    fn l2_entry(&mut self, guest: u64) -> io::Result<u64> {
        let l2 = self.l2_offset(self.l1_index(guest))?;
        if l2 == 0 {
            return Ok(0);
        }
        let slot = self.load_l2(l2)?;
        let i = self.l2_index(guest);
        let e = be64(&self.l2_cache.get(slot).data, i * 8);
        self.check_entry(e, l2, i)?;
        Ok(e)
    }

    /// QEMU's checks of an L2 entry before use.
    fn check_entry(&mut self, e: u64, l2: u64, i: usize) -> io::Result<()> {
        match classify(e) {
            Cluster::Normal(h) | Cluster::ZeroAlloc(h) if self.g.offset_in_cluster(h) != 0 => {
                let what = if matches!(classify(e), Cluster::Normal(_)) {
                    "Cluster allocation offset"
                } else {
                    "Preallocated zero cluster offset"
                };
                Err(self.corrupt(
                    true,
                    None,
                    None,
                    format!("{what} {h:#x} unaligned (L2 offset: {l2:#x}, L2 index: {i:#x})"),
                ))
            }
            Cluster::ZeroPlain | Cluster::ZeroAlloc(_) if self.g.version < 3 => {
                Err(self.corrupt(
                    true,
                    None,
                    None,
                    format!(
                        "Zero cluster entry found in pre-v3 image (L2 offset: {l2:#x}, L2 index: {i:#x})"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    fn set_l2_entry(&mut self, slot: usize, i: usize, e: u64) {
        let t = self.l2_cache.get_mut(slot);
        put_be64(&mut t.data, i * 8, e);
        t.dirty = true;
    }

    /// The slot of a writable (refcount 1) L2 table for L1 entry `l1i`:
    /// allocated, or copied from a shared one, as needed.
    fn l2_for_write(&mut self, l1i: usize) -> io::Result<usize> {
        if l1i >= self.l1.len() {
            return Err(einval());
        }
        let e = self.l1[l1i];
        let old = self.l2_offset(l1i)?;
        if old != 0 && e & OFLAG_COPIED != 0 {
            return self.load_l2(old);
        }
        self.mark_dirty()?;
        let data = if old == 0 {
            vec![0u8; self.g.cluster_size as usize]
        } else {
            let s = self.load_l2(old)?;
            self.l2_cache.get(s).data.clone()
        };
        let new = self.alloc_clusters(1)?;
        // The new table and its refcount are durable before the L1
        // entry that points to it.
        self.refcounts_before_l2()?;
        self.check_write(new, self.g.cluster_size, 0)?;
        self.file.write(new, &data)?;
        self.file.flush()?;
        if let Some(v) = self.l2_cache.victim() {
            if self.l2_cache.get(v).dirty {
                self.write_l2_slot(v)?;
            }
        }
        let slot = self.l2_cache.insert(new, data, false);
        self.write_l1_entry(l1i, new | OFLAG_COPIED)?;
        if old != 0 {
            self.free_clusters(old, 1, DiscardKind::Other)?;
        }
        // The slot may have moved if freeing evicted tables.
        self.load_l2(new).or(Ok(slot))
    }

    fn write_l1_entry(&mut self, l1i: usize, e: u64) -> io::Result<()> {
        let at = self.hdr.l1_table_offset + l1i as u64 * 8;
        self.check_write(at, 8, OL_ACTIVE_L1)?;
        self.file.write(at, &e.to_be_bytes())?;
        self.l1[l1i] = e;
        Ok(())
    }

    /// Decompresses the compressed cluster of L2 entry `e`.
    fn read_compressed(&mut self, e: u64) -> io::Result<&[u8]> {
        if self.compressed_cache.as_ref().is_none_or(|(k, _)| *k != e) {
            let g = self.g;
            let coffset = e & g.coffset_mask;
            let nb_csectors = ((e >> g.csize_shift) & g.csize_mask) + 1;
            let csize = nb_csectors * 512 - (coffset & 511);
            let mut input = vec![0u8; csize as usize];
            self.file.read(coffset, &mut input)?;
            let out =
                miniz_oxide::inflate::decompress_to_vec_with_limit(&input, g.cluster_size as usize)
                    .map_err(|_| eio())?;
            if out.len() as u64 != g.cluster_size {
                return Err(eio());
            }
            self.compressed_cache = Some((e, out));
        }
        Ok(self.compressed_cache.as_ref().map_or(&[][..], |(_, d)| d))
    }

    // ---- the I/O paths ----

    fn read(&mut self, img: &Qcow2Image, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let cs = self.g.cluster_size;
        let mut done = 0usize;
        // A run of guest bytes that maps to contiguous host bytes.
        let mut run: Option<(u64, usize, usize)> = None; // (host, buf start, len)
        while done < buf.len() {
            let pos = offset + done as u64;
            let in_cluster = self.g.offset_in_cluster(pos);
            let n = ((cs - in_cluster) as usize).min(buf.len() - done);
            let e = self.l2_entry(pos)?;
            match classify(e) {
                Cluster::Normal(h) => {
                    let host = h + in_cluster;
                    match &mut run {
                        Some((rh, rs, rl)) if *rh + *rl as u64 == host && *rs + *rl == done => {
                            *rl += n;
                        }
                        _ => {
                            if let Some((rh, rs, rl)) = run.take() {
                                self.file.read(rh, &mut buf[rs..rs + rl])?;
                            }
                            run = Some((host, done, n));
                        }
                    }
                }
                kind => {
                    let out = &mut buf[done..done + n];
                    match kind {
                        Cluster::Unallocated => img.backing_read(pos, out)?,
                        Cluster::Compressed => {
                            let d = self.read_compressed(e)?;
                            out.copy_from_slice(&d[in_cluster as usize..in_cluster as usize + n]);
                        }
                        _ => out.fill(0),
                    }
                }
            }
            done += n;
        }
        if let Some((rh, rs, rl)) = run {
            self.file.read(rh, &mut buf[rs..rs + rl])?;
        }
        Ok(())
    }

    /// The current contents of a guest cluster, into `self.scratch`.
    fn cluster_contents(&mut self, img: &Qcow2Image, guest_cluster: u64, e: u64) -> io::Result<()> {
        let cs = self.g.cluster_size as usize;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(cs, 0);
        let r = match classify(e) {
            Cluster::Normal(h) => self.file.read(h, &mut buf),
            Cluster::Compressed => self.read_compressed(e).map(|d| buf.copy_from_slice(d)),
            Cluster::Unallocated => img.backing_read(guest_cluster, &mut buf),
            Cluster::ZeroPlain | Cluster::ZeroAlloc(_) => {
                buf.fill(0);
                Ok(())
            }
        };
        self.scratch = buf;
        r
    }

    fn write(&mut self, img: &Qcow2Image, offset: u64, data: &[u8]) -> io::Result<()> {
        let cs = self.g.cluster_size;
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let in_cluster = self.g.offset_in_cluster(pos);
            let n = ((cs - in_cluster) as usize).min(data.len() - done);
            self.write_cluster(img, pos, &data[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    /// Writes within one guest cluster.
    fn write_cluster(&mut self, img: &Qcow2Image, pos: u64, data: &[u8]) -> io::Result<()> {
        let cs = self.g.cluster_size;
        let in_cluster = self.g.offset_in_cluster(pos);
        let guest_cluster = pos - in_cluster;
        let slot = self.l2_for_write(self.l1_index(pos))?;
        let i = self.l2_index(pos);
        let l2off = self.l2_cache.get(slot).offset;
        let e = be64(&self.l2_cache.get(slot).data, i * 8);
        self.check_entry(e, l2off, i)?;
        let copied = e & OFLAG_COPIED != 0;
        if let (Cluster::Normal(h), true) = (classify(e), copied) {
            self.check_write(h + in_cluster, data.len() as u64, 0)?;
            return self.file.write(h + in_cluster, data);
        }
        self.mark_dirty()?;
        let kind = classify(e);
        let (host, old, fresh) = match (kind, copied) {
            (Cluster::ZeroAlloc(h), true) => (h, None, false),
            _ => {
                let h = self.alloc_clusters(1)?;
                let old = match kind {
                    Cluster::Normal(o) | Cluster::ZeroAlloc(o) => Some(o),
                    Cluster::Compressed => {
                        self.free_compressed_later = Some(e);
                        None
                    }
                    _ => None,
                };
                (h, old, self.last_alloc_fresh)
            }
        };
        let reads_zero = match kind {
            Cluster::ZeroPlain | Cluster::ZeroAlloc(_) => true,
            Cluster::Unallocated => !self.has_backing,
            _ => false,
        };
        if data.len() as u64 == cs {
            self.check_write(host, cs, 0)?;
            self.file.write(host, data)?;
        } else if reads_zero && fresh {
            // A cluster past the old end of the file reads as zeros
            // already: only the new bytes need writing.
            self.check_write(host + in_cluster, data.len() as u64, 0)?;
            self.file.write(host + in_cluster, data)?;
        } else {
            // Otherwise the whole cluster: the old contents around the
            // new bytes.
            self.cluster_contents(img, guest_cluster, e)?;
            self.scratch[in_cluster as usize..in_cluster as usize + data.len()]
                .copy_from_slice(data);
            self.check_write(host, cs, 0)?;
            let buf = std::mem::take(&mut self.scratch);
            let r = self.file.write(host, &buf);
            self.scratch = buf;
            r?;
        }
        // The slot may have been evicted by the allocation.
        let slot = self.load_l2(l2off)?;
        self.set_l2_entry(slot, i, host | OFLAG_COPIED);
        if let Some(o) = old {
            self.free_clusters(o, 1, DiscardKind::Never)?;
        }
        if let Some(c) = self.free_compressed_later.take() {
            self.free_compressed(c, DiscardKind::Never)?;
        }
        Ok(())
    }

    /// Zeroes or discards whole clusters `[offset, offset+len)`.
    /// `discard`: QEMU's discard (zero clusters on v3 so that nothing
    /// of the backing file shows through, unallocated on v2);
    /// otherwise write-zeroes (v3 only), keeping the allocation unless
    /// `unmap`.
    fn clear_clusters(
        &mut self,
        offset: u64,
        len: u64,
        discard: bool,
        unmap: bool,
    ) -> io::Result<()> {
        let cs = self.g.cluster_size;
        let discarded = if self.g.version >= 3 { OFLAG_ZERO } else { 0 };
        let mut pos = offset;
        while pos < offset + len {
            let e = self.l2_entry(pos)?;
            let kind = classify(e);
            let (new, free) = if discard {
                match kind {
                    Cluster::Unallocated if !self.has_backing => (e, false),
                    Cluster::ZeroPlain => (e, false),
                    _ => (discarded, true),
                }
            } else if unmap || kind == Cluster::Compressed {
                (OFLAG_ZERO, true)
            } else {
                (e | OFLAG_ZERO, false)
            };
            if new != e {
                self.mark_dirty()?;
                let slot = self.l2_for_write(self.l1_index(pos))?;
                let i = self.l2_index(pos);
                self.set_l2_entry(slot, i, new);
                if free {
                    match kind {
                        Cluster::Normal(h) | Cluster::ZeroAlloc(h) => {
                            self.free_clusters(h, 1, DiscardKind::Request)?
                        }
                        Cluster::Compressed => self.free_compressed(e, DiscardKind::Request)?,
                        _ => {}
                    }
                }
            }
            pos += cs;
        }
        Ok(())
    }

    fn discard(&mut self, offset: u64, len: u64, size: u64) -> io::Result<()> {
        // Only whole clusters (or the partial last one at the end).
        let cs = self.g.cluster_size;
        let start = offset.div_ceil(cs) * cs;
        let mut end = (offset + len) / cs * cs;
        if offset + len == size {
            end = size.div_ceil(cs) * cs;
        }
        if end <= start {
            return Ok(());
        }
        self.clear_clusters(start, end - start, true, false)
    }

    fn write_zeroes(
        &mut self,
        img: &Qcow2Image,
        offset: u64,
        len: u64,
        may_unmap: bool,
        size: u64,
    ) -> io::Result<()> {
        let cs = self.g.cluster_size;
        let end = offset + len;
        if self.g.version < 3 {
            return self.write_explicit_zeroes(img, offset, len);
        }
        // Partial clusters at either end are written as data unless
        // they already read as zero; whole clusters become zero ones
        // (the last cluster of the image counts as whole).
        let eff_end = if end == size {
            end.div_ceil(cs) * cs
        } else {
            end
        };
        let head_end = (offset.div_ceil(cs) * cs).min(end);
        let whole_end = (eff_end / cs * cs).max(head_end);
        if head_end > offset {
            self.write_explicit_zeroes(img, offset, head_end - offset)?;
        }
        if whole_end > head_end {
            self.clear_clusters(head_end, whole_end - head_end, false, may_unmap)?;
        }
        if end > whole_end {
            self.write_explicit_zeroes(img, whole_end, end - whole_end)?;
        }
        Ok(())
    }

    fn write_explicit_zeroes(&mut self, img: &Qcow2Image, offset: u64, len: u64) -> io::Result<()> {
        let cs = self.g.cluster_size;
        let zeros = vec![0u8; cs.min(len) as usize];
        let mut pos = offset;
        while pos < offset + len {
            let n = (cs - self.g.offset_in_cluster(pos)).min(offset + len - pos);
            // Already zero (no data, no backing data): nothing to do.
            let e = self.l2_entry(pos)?;
            let reads_zero = match classify(e) {
                Cluster::ZeroPlain | Cluster::ZeroAlloc(_) => true,
                Cluster::Unallocated => !self.has_backing,
                _ => false,
            };
            if !reads_zero {
                self.write_cluster(img, pos, &zeros[..n as usize])?;
            }
            pos += n;
        }
        Ok(())
    }

    /// Grows the image (block_resize); shrinking discards the tail.
    fn truncate(&mut self, new_size: u64) -> io::Result<std::result::Result<(), String>> {
        if !self.snapshots.is_empty() {
            return Ok(Err("Can't resize an image which has snapshots".into()));
        }
        if !new_size.is_multiple_of(512) {
            return Ok(Err("The new size must be a multiple of 512".into()));
        }
        let old = self.hdr.size;
        if new_size < old {
            if self.g.version < 3 {
                return Ok(Err("Cannot shrink a qcow2 image with version 2".into()));
            }
            let cs = self.g.cluster_size;
            let start = new_size.div_ceil(cs) * cs;
            let end = old.div_ceil(cs) * cs;
            if end > start {
                self.clear_clusters_full(start, end - start)?;
            }
        } else {
            let need = self.g.l1_entries_for(new_size);
            if need > self.l1.len() as u64 {
                if need > MAX_L1_BYTES / 8 {
                    return Ok(Err("Failed to grow the L1 table: File too large".into()));
                }
                self.grow_l1_to(need as usize)?;
            }
        }
        self.flush_caches()?;
        self.hdr.size = new_size;
        self.write_header_bytes(OFF_SIZE, &new_size.to_be_bytes())?;
        Ok(Ok(()))
    }

    /// Makes whole clusters unallocated (shrinking).
    fn clear_clusters_full(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let cs = self.g.cluster_size;
        let mut pos = offset;
        while pos < offset + len {
            let e = self.l2_entry(pos)?;
            if e != 0 {
                let slot = self.l2_for_write(self.l1_index(pos))?;
                let i = self.l2_index(pos);
                self.set_l2_entry(slot, i, 0);
                match classify(e) {
                    Cluster::Normal(h) | Cluster::ZeroAlloc(h) => {
                        self.free_clusters(h, 1, DiscardKind::Other)?
                    }
                    Cluster::Compressed => self.free_compressed(e, DiscardKind::Other)?,
                    _ => {}
                }
            }
            pos += cs;
        }
        Ok(())
    }

    /// An L1 table of `size` entries at a new place (QEMU's resize
    /// gives it exactly what the new size needs).
    fn grow_l1_to(&mut self, size: usize) -> io::Result<()> {
        self.flush_caches()?;
        let bytes = size as u64 * 8;
        let new = self.alloc_clusters(self.g.bytes_to_clusters(bytes))?;
        self.flush_refcounts()?;
        let mut table = self.l1.clone();
        table.resize(size, 0);
        let b = u64_table_bytes(&table);
        self.check_write(new, bytes, 0)?;
        self.file.write(new, &b)?;
        self.file.flush()?;
        let mut hdr = [0u8; 12];
        put_be32(&mut hdr, 0, size as u32);
        put_be64(&mut hdr, 4, new);
        self.write_header_bytes(OFF_L1, &hdr)?;
        let old = self.hdr.l1_table_offset;
        let old_bytes = self.l1.len() as u64 * 8;
        self.hdr.l1_table_offset = new;
        self.hdr.l1_size = size as u32;
        self.l1 = table;
        if old_bytes > 0 {
            self.free_clusters(old, self.g.bytes_to_clusters(old_bytes), DiscardKind::Other)?;
        }
        Ok(())
    }
}

impl Driver for Qcow2Image {
    fn name(&self) -> &'static str {
        "qcow2"
    }

    fn size(&self) -> u64 {
        self.lock().hdr.size
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.with_state(|st| st.read(self, offset, buf))
    }

    fn write(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.with_state(|st| {
            st.compressed_cache = None;
            st.write(self, offset, buf)
        })
    }

    fn flush(&self) -> io::Result<()> {
        self.with_state(|st| {
            st.flush_caches()?;
            st.file.flush()
        })
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.with_state(|st| {
            let size = st.hdr.size;
            st.discard(offset, len, size)
        })
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> io::Result<()> {
        self.with_state(|st| {
            let size = st.hdr.size;
            st.compressed_cache = None;
            st.write_zeroes(self, offset, len, may_unmap, size)
        })
    }

    fn truncate(&self, size: u64) -> Result<()> {
        let r = self.with_state(|st| st.truncate(size));
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(m)) => Err(BlockError::generic(m)),
            Err(e) => Err(BlockError::generic(format!(
                "Failed to grow the L1 table: {}",
                crate::error::strerror(&e)
            ))),
        }
    }

    fn filename(&self) -> String {
        self.file.driver.filename()
    }

    fn actual_size(&self) -> Option<u64> {
        self.file.driver.actual_size()
    }

    fn child_perm(&self, role: &str, perm: u64, shared: u64) -> (u64, u64) {
        crate::perm::format_child(role, perm, shared, self.lock().read_only)
    }

    /// The image read-write for a while (a commit into it) and back: the
    /// file reopened under it; read-write, a dirty image is repaired as
    /// at a read-write open; back to read-only, the metadata is written
    /// out first, as at close.
    fn reopen_file(&self, read_only: bool) -> io::Result<()> {
        let mut st = self.lock();
        if st.broken {
            return Err(io::Error::from_raw_os_error(libc::ENOMEDIUM));
        }
        if read_only {
            st.close();
            self.file.driver.reopen_file(true)?;
            st.read_only = true;
            return Ok(());
        }
        self.file.driver.reopen_file(false)?;
        st.read_only = false;
        if st.hdr.incompatible_features & INCOMPAT_DIRTY != 0 {
            let r = st.check(true)?;
            if r.check_errors > 0 || r.corruptions > 0 {
                return Err(eio());
            }
            st.mark_clean()?;
        }
        Ok(())
    }

    fn close(&self) {
        self.lock().close();
    }

    fn attach_node(&self, node: &Arc<Node>) {
        let _ = self.node.set(Arc::downgrade(node));
    }

    fn qcow2(&self) -> Option<&Qcow2Image> {
        Some(self)
    }
}

impl State {
    /// Caches out and, with lazy refcounts, the dirty bit cleared.
    fn close(&mut self) {
        if self.broken || self.read_only {
            return;
        }
        let r = if self.lazy_refcounts {
            self.mark_clean()
        } else {
            self.flush_caches().and_then(|_| self.file.flush())
        };
        if let Err(e) = r {
            eprintln!("qcow2: could not write metadata on close: {e}");
        }
    }
}

impl Drop for Qcow2Image {
    fn drop(&mut self) {
        self.state
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .close();
    }
}
