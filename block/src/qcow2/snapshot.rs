//! Internal snapshots: the snapshot table, creating a snapshot (a copy
//! of the L1 table and one more reference on everything it reaches)
//! and deleting one.

use super::header::{put_be32, put_be64, OFF_SNAPSHOTS};
use super::*;

/// Most bytes of a snapshot table QEMU accepts, and of one entry's
/// extra data vmm keeps.
const MAX_TABLE_BYTES: u64 = 64 << 20;
const MAX_EXTRA: usize = 1024;

/// One snapshot table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Snapshot {
    pub l1_offset: u64,
    pub l1_size: u32,
    pub id: String,
    pub name: String,
    pub date_sec: u32,
    pub date_nsec: u32,
    pub vm_clock_nsec: u64,
    pub vm_state_size: u64,
    /// Extra data (version 3: the large VM state size and the disk
    /// size), kept as it was.
    pub extra: Vec<u8>,
}

impl Snapshot {
    pub fn info(&self) -> SnapshotInfo {
        SnapshotInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            vm_state_size: self.vm_state_size as i64,
            date_sec: self.date_sec as i64,
            date_nsec: self.date_nsec as i64,
            vm_clock_sec: (self.vm_clock_nsec / 1_000_000_000) as i64,
            vm_clock_nsec: (self.vm_clock_nsec % 1_000_000_000) as i64,
        }
    }

    fn entry_bytes(&self) -> u64 {
        (40 + self.extra.len() + self.id.len() + self.name.len()).div_ceil(8) as u64 * 8
    }

    fn to_bytes(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let mut h = [0u8; 40];
        put_be64(&mut h, 0, self.l1_offset);
        put_be32(&mut h, 8, self.l1_size);
        put_be16(&mut h, 12, self.id.len() as u16);
        put_be16(&mut h, 14, self.name.len() as u16);
        put_be32(&mut h, 16, self.date_sec);
        put_be32(&mut h, 20, self.date_nsec);
        put_be64(&mut h, 24, self.vm_clock_nsec);
        put_be32(&mut h, 32, self.vm_state_size.min(u32::MAX as u64) as u32);
        put_be32(&mut h, 36, self.extra.len() as u32);
        out.extend_from_slice(&h);
        out.extend_from_slice(&self.extra);
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.resize(start + self.entry_bytes() as usize, 0);
    }
}

pub(super) fn table_bytes(list: &[Snapshot]) -> u64 {
    list.iter().map(|s| s.entry_bytes()).sum()
}

/// Reads `n` entries at `offset`, every size bounded.
pub(super) fn read_table(file: &Node, g: Geometry, offset: u64, n: u32) -> Result<Vec<Snapshot>> {
    let ioerr = |e: io::Error| {
        BlockError::generic(format!(
            "Failed to read snapshot table: {}",
            crate::error::strerror(&e)
        ))
    };
    let mut out = Vec::with_capacity(n.min(1024) as usize);
    let mut pos = offset;
    for _ in 0..n {
        let mut h = [0u8; 40];
        file.read(pos, &mut h).map_err(ioerr)?;
        let extra_len = be32(&h, 36) as u64;
        let id_len = be16(&h, 12) as usize;
        let name_len = be16(&h, 14) as usize;
        let mut extra = vec![0u8; (extra_len as usize).min(MAX_EXTRA)];
        file.read(pos + 40, &mut extra).map_err(ioerr)?;
        let mut id = vec![0u8; id_len];
        file.read(pos + 40 + extra_len, &mut id).map_err(ioerr)?;
        let mut name = vec![0u8; name_len];
        file.read(pos + 40 + extra_len + id_len as u64, &mut name)
            .map_err(ioerr)?;
        let mut vm_state_size = be32(&h, 32) as u64;
        if extra.len() >= 8 {
            vm_state_size = be64(&extra, 0);
        }
        pos += (40 + extra_len + id_len as u64 + name_len as u64).div_ceil(8) * 8;
        if pos - offset > MAX_TABLE_BYTES {
            return Err(BlockError::generic("Snapshot table is too big"));
        }
        out.push(Snapshot {
            l1_offset: be64(&h, 0),
            l1_size: be32(&h, 8),
            id: String::from_utf8_lossy(&id).into_owned(),
            name: String::from_utf8_lossy(&name).into_owned(),
            date_sec: be32(&h, 16),
            date_nsec: be32(&h, 20),
            vm_clock_nsec: be64(&h, 24),
            vm_state_size,
            extra,
        });
    }
    let _ = g;
    Ok(out)
}

impl State {
    /// Writes `list` as the new snapshot table and frees the old one.
    fn write_snapshot_table(&mut self, list: Vec<Snapshot>) -> io::Result<()> {
        let mut bytes = Vec::new();
        for s in &list {
            s.to_bytes(&mut bytes);
        }
        let new_off = if bytes.is_empty() {
            0
        } else {
            let off = self.alloc_clusters(self.g.bytes_to_clusters(bytes.len() as u64))?;
            self.check_write(off, bytes.len() as u64, 0)?;
            self.file.write(off, &bytes)?;
            off
        };
        // Everything the new table reaches is counted on disk first.
        self.flush_caches()?;
        self.file.flush()?;
        let mut hdr = [0u8; 12];
        put_be32(&mut hdr, 0, list.len() as u32);
        put_be64(&mut hdr, 4, new_off);
        self.write_header_bytes(OFF_SNAPSHOTS, &hdr)?;
        let old_off = self.hdr.snapshots_offset;
        let old_bytes = table_bytes(&self.snapshots);
        self.hdr.snapshots_offset = new_off;
        self.hdr.nb_snapshots = list.len() as u32;
        self.snapshots = list;
        if old_bytes > 0 && old_off != 0 {
            self.free_clusters(
                old_off,
                self.g.bytes_to_clusters(old_bytes),
                DiscardKind::Snapshot,
            )?;
        }
        Ok(())
    }

    /// Adds `delta` to the refcount of every cluster an L1 table
    /// reaches (its L2 tables once each, their data clusters), and sets
    /// the COPIED flags to what the refcounts now are. `active`: the
    /// table is the image's own L1 (its entries are updated too).
    pub(super) fn update_tree_refcounts(
        &mut self,
        l1: &[u64],
        delta: i64,
        active: bool,
    ) -> io::Result<()> {
        let cb = self.g.cluster_bits;
        for (l1i, e) in l1.iter().enumerate() {
            let l2off = e & L1E_OFFSET_MASK;
            if l2off == 0 {
                continue;
            }
            if self.g.offset_in_cluster(l2off) != 0 {
                return Err(self.corrupt(
                    true,
                    None,
                    None,
                    format!("L2 table offset {l2off:#x} unaligned (L1 index: {l1i:#x})"),
                ));
            }
            let slot = self.load_l2(l2off)?;
            let mut table = self.l2_cache.get(slot).data.clone();
            let mut changed = false;
            for j in 0..self.g.l2_entries() as usize {
                let ent = be64(&table, j * 8);
                match classify(ent) {
                    Cluster::Normal(h) | Cluster::ZeroAlloc(h) => {
                        if self.g.offset_in_cluster(h) != 0 {
                            return Err(self.corrupt(
                                true,
                                None,
                                None,
                                format!(
                                    "Cluster allocation offset {h:#x} unaligned (L2 offset: {l2off:#x}, L2 index: {j:#x})"
                                ),
                            ));
                        }
                        if delta != 0 {
                            self.update_refcount(h >> cb, delta, DiscardKind::Snapshot)?;
                        }
                        let rc = self.refcount(h >> cb)?;
                        let want = if rc == 1 {
                            ent | OFLAG_COPIED
                        } else {
                            ent & !OFLAG_COPIED
                        };
                        if want != ent {
                            put_be64(&mut table, j * 8, want);
                            changed = true;
                        }
                    }
                    Cluster::Compressed if delta != 0 => {
                        let (off, n) = self.compressed_span(ent);
                        for c in 0..n {
                            self.update_refcount((off >> cb) + c, delta, DiscardKind::Snapshot)?;
                        }
                    }
                    _ => {}
                }
            }
            if changed {
                let slot = self.load_l2(l2off)?;
                let t = self.l2_cache.get_mut(slot);
                t.data = table;
                t.dirty = true;
            }
            if delta != 0 {
                self.update_refcount(l2off >> cb, delta, DiscardKind::Snapshot)?;
            }
            if active {
                let rc = self.refcount(l2off >> cb)?;
                let want = if rc == 1 { l2off | OFLAG_COPIED } else { l2off };
                self.l1[l1i] = want;
            }
        }
        if active {
            let b = u64_table_bytes(&self.l1);
            let at = self.hdr.l1_table_offset;
            self.flush_caches()?;
            self.check_write(at, b.len() as u64, OL_ACTIVE_L1)?;
            self.file.write(at, &b)?;
        }
        Ok(())
    }

    /// blockdev-snapshot-internal-sync's work on the image.
    pub(super) fn snapshot_create(&mut self, name: &str, vm_clock_nsec: u64) -> io::Result<()> {
        if self.snapshots.len() as u32 >= MAX_SNAPSHOTS {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        }
        let id = self
            .snapshots
            .iter()
            .filter_map(|s| s.id.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        self.flush_caches()?;
        let l1 = self.l1.clone();
        let l1_bytes = l1.len() as u64 * 8;
        let l1_off = if l1.is_empty() {
            0
        } else {
            let off = self.alloc_clusters(self.g.bytes_to_clusters(l1_bytes))?;
            self.check_write(off, l1_bytes, 0)?;
            self.file.write(off, &u64_table_bytes(&l1))?;
            off
        };
        self.update_tree_refcounts(&l1, 1, true)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut extra = Vec::new();
        if self.g.version >= 3 {
            extra = vec![0u8; 16];
            put_be64(&mut extra, 8, self.hdr.size);
        }
        let mut list = self.snapshots.clone();
        list.push(Snapshot {
            l1_offset: l1_off,
            l1_size: l1.len() as u32,
            id: id.to_string(),
            name: name.to_string(),
            date_sec: now.as_secs() as u32,
            date_nsec: now.subsec_nanos(),
            vm_clock_nsec,
            vm_state_size: 0,
            extra,
        });
        self.write_snapshot_table(list)
    }

    /// Removes the snapshot matching `id` and/or `name`; None when none
    /// matches.
    pub(super) fn snapshot_delete(
        &mut self,
        id: Option<&str>,
        name: Option<&str>,
    ) -> io::Result<Option<SnapshotInfo>> {
        let Some(i) = self
            .snapshots
            .iter()
            .position(|s| id.is_none_or(|x| s.id == x) && name.is_none_or(|x| s.name == x))
        else {
            return Ok(None);
        };
        let sn = self.snapshots[i].clone();
        if sn.l1_size as u64 > MAX_L1_BYTES / 8 || self.g.offset_in_cluster(sn.l1_offset) != 0 {
            return Err(self.corrupt(
                true,
                None,
                None,
                "Snapshot L1 table offset invalid".to_string(),
            ));
        }
        let l1 = read_u64_table(&self.file, sn.l1_offset, sn.l1_size as usize)?;
        self.flush_caches()?;
        let mut list = self.snapshots.clone();
        list.remove(i);
        // The entry goes first, then what only it referenced.
        self.write_snapshot_table(list)?;
        self.update_tree_refcounts(&l1, -1, false)?;
        if sn.l1_size > 0 {
            self.free_clusters(
                sn.l1_offset,
                self.g.bytes_to_clusters(sn.l1_size as u64 * 8),
                DiscardKind::Snapshot,
            )?;
        }
        let active = self.l1.clone();
        self.update_tree_refcounts(&active, 0, true)?;
        self.flush_caches()?;
        Ok(Some(sn.info()))
    }
}
