//! Refcounts: reading and changing them at any width (1 to 64 bits),
//! allocating free clusters, new refcount blocks and a bigger
//! refcount table when the image outgrows its own.

use super::header::{put_be32, put_be64, OFF_REFTABLE};
use super::*;

/// Where a refcount narrower than a byte sits: its byte, its shift
/// within the byte and its mask there.
fn sub_byte(i: usize, order: u32) -> (usize, usize, u8) {
    let bits = 1usize << order;
    let per_byte = 8 / bits;
    let shift = (i % per_byte) * bits;
    (i / per_byte, shift, ((((1u16 << bits) - 1) as u8) << shift))
}

/// Entry `i` of a refcount block of width `1 << order` bits (QEMU's
/// bit order below a byte: least significant first).
pub(super) fn get_rc(block: &[u8], i: u64, order: u32) -> u64 {
    let i = i as usize;
    match order {
        0..=2 => {
            let (byte, shift, mask) = sub_byte(i, order);
            u64::from((block[byte] & mask) >> shift)
        }
        3 => block[i] as u64,
        4 => be16(block, i * 2) as u64,
        5 => be32(block, i * 4) as u64,
        _ => be64(block, i * 8),
    }
}

pub(super) fn set_rc(block: &mut [u8], i: u64, order: u32, v: u64) {
    let i = i as usize;
    match order {
        0..=2 => {
            let (byte, shift, mask) = sub_byte(i, order);
            let b = &mut block[byte];
            *b = (*b & !mask) | (((v as u8) << shift) & mask);
        }
        3 => block[i] = v as u8,
        4 => put_be16(block, i * 2, v as u16),
        5 => put_be32(block, i * 4, v as u32),
        _ => put_be64(block, i * 8, v),
    }
}

impl State {
    /// Records clusters handed out or written at `[off, off+len)`.
    pub(super) fn note_written(&mut self, off: u64, len: u64) {
        self.last_alloc_fresh = off >= self.host_end;
        self.host_end = self.host_end.max(off + len);
    }

    fn rb_index(&self, cluster: u64) -> usize {
        (cluster >> self.g.rb_bits) as usize
    }

    fn rb_entry(&self, cluster: u64) -> u64 {
        cluster & ((1 << self.g.rb_bits) - 1)
    }

    /// The refcount block offset of reftable index `i` (0: none),
    /// checked.
    fn refblock_offset(&mut self, i: usize) -> io::Result<u64> {
        let Some(e) = self.reftable.get(i).copied() else {
            return Ok(0);
        };
        let off = e & REFT_OFFSET_MASK;
        if self.g.offset_in_cluster(off) != 0 {
            return Err(self.corrupt(
                true,
                None,
                None,
                format!("Refblock offset {off:#x} unaligned (reftable index: {i:#x})"),
            ));
        }
        Ok(off)
    }

    /// The refcount of a host cluster (by index).
    pub(super) fn refcount(&mut self, cluster: u64) -> io::Result<u64> {
        let rb = self.refblock_offset(self.rb_index(cluster))?;
        if rb == 0 {
            return Ok(0);
        }
        let slot = self.load_refblock(rb)?;
        Ok(get_rc(
            &self.rc_cache.get(slot).data,
            self.rb_entry(cluster),
            self.g.refcount_order,
        ))
    }

    /// Changes the refcount of a host cluster. A refcount that drops to
    /// zero frees the cluster (and, as `kind` says, the host file
    /// hears of it). Callers make sure that a drop follows the removal
    /// of the reference on disk.
    pub(super) fn update_refcount(
        &mut self,
        cluster: u64,
        delta: i64,
        kind: DiscardKind,
    ) -> io::Result<()> {
        let mut rb = self.refblock_offset(self.rb_index(cluster))?;
        if rb == 0 {
            if delta < 0 {
                return Err(einval());
            }
            self.create_refblock(self.rb_index(cluster))?;
            rb = self.refblock_offset(self.rb_index(cluster))?;
        }
        let slot = self.load_refblock(rb)?;
        let i = self.rb_entry(cluster);
        let old = get_rc(&self.rc_cache.get(slot).data, i, self.g.refcount_order);
        let new = if delta >= 0 {
            old.checked_add(delta as u64)
                .filter(|n| *n <= self.g.refcount_max)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ERANGE))?
        } else {
            old.checked_sub(delta.unsigned_abs()).ok_or_else(einval)?
        };
        let t = self.rc_cache.get_mut(slot);
        set_rc(&mut t.data, i, self.g.refcount_order, new);
        t.dirty = true;
        if new == 0 {
            self.free_cluster_index = self.free_cluster_index.min(cluster);
            let off = cluster << self.g.cluster_bits;
            // A freed table must not come back from a cache.
            self.l2_cache.forget(off);
            self.rc_cache.forget(off);
            // Nothing on disk refers to the cluster any more, so its
            // bytes may go at once.
            if self.pass_discard[kind as usize] {
                let _ = self.file.discard(off, self.g.cluster_size);
            }
        }
        Ok(())
    }

    /// Allocates `n` contiguous free clusters (refcount 1 each);
    /// returns the host offset of the first.
    pub(super) fn alloc_clusters(&mut self, n: u64) -> io::Result<u64> {
        loop {
            let mut start = self.free_cluster_index;
            let mut i = 0;
            // Past the end of the file only leaks can be counted; a
            // table claiming millions of them there is hostile, and
            // scanning it would never end.
            let limit = (self.host_end >> self.g.cluster_bits) + (1 << 20) + n;
            while i < n {
                if start + i > limit {
                    return Err(self.corrupt(
                        true,
                        None,
                        None,
                        "No free cluster found: refcounts claim the space past the end of the image".to_string(),
                    ));
                }
                if self.refcount(start + i)? != 0 {
                    start += i + 1;
                    i = 0;
                } else {
                    i += 1;
                }
            }
            if (start + n) << self.g.cluster_bits > i64::MAX as u64 {
                return Err(io::Error::from_raw_os_error(libc::EFBIG));
            }
            // Every cluster needs its refcount block before it can be
            // counted; a new block takes a cluster, so look again.
            let mut created = false;
            for rb in self.rb_index(start)..=self.rb_index(start + n - 1) {
                if self.refblock_offset(rb)? == 0 {
                    self.create_refblock(rb)?;
                    created = true;
                }
            }
            if created {
                continue;
            }
            for c in start..start + n {
                self.update_refcount(c, 1, DiscardKind::Never)?;
            }
            if n == 1 || start == self.free_cluster_index {
                self.free_cluster_index = start + n;
            }
            let off = start << self.g.cluster_bits;
            self.note_written(off, n << self.g.cluster_bits);
            return Ok(off);
        }
    }

    /// Frees `n` clusters from host offset `offset` (QEMU's
    /// qcow2_free_clusters), after writing out the tables that may
    /// still have referenced them.
    pub(super) fn free_clusters(
        &mut self,
        offset: u64,
        n: u64,
        kind: DiscardKind,
    ) -> io::Result<()> {
        self.flush_l2()?;
        let first = offset >> self.g.cluster_bits;
        for c in first..first + n {
            if let Err(e) = self.update_refcount(c, -1, kind) {
                return Err(if e.raw_os_error() == Some(libc::EINVAL) {
                    self.corrupt(
                        true,
                        Some(c << self.g.cluster_bits),
                        Some(self.g.cluster_size),
                        format!(
                            "Refcount of cluster {:#x} would drop below zero",
                            c << self.g.cluster_bits
                        ),
                    )
                } else {
                    e
                });
            }
        }
        Ok(())
    }

    /// The host clusters a compressed cluster occupies.
    pub(super) fn compressed_span(&self, e: u64) -> (u64, u64) {
        let g = self.g;
        let coffset = e & g.coffset_mask;
        let nb_csectors = ((e >> g.csize_shift) & g.csize_mask) + 1;
        let start = coffset & !511;
        let end = start + nb_csectors * 512;
        let first = start >> g.cluster_bits;
        let last = (end - 1) >> g.cluster_bits;
        (first << g.cluster_bits, last - first + 1)
    }

    pub(super) fn free_compressed(&mut self, e: u64, kind: DiscardKind) -> io::Result<()> {
        let (off, n) = self.compressed_span(e);
        self.free_clusters(off, n, kind)
    }

    /// A new refcount block for reftable index `rb`, placed in the
    /// first cluster it describes (free: nothing there is counted).
    pub(super) fn create_refblock(&mut self, rb: usize) -> io::Result<()> {
        if rb >= self.reftable.len() {
            self.grow_reftable(rb + 1)?;
            if self.refblock_offset(rb)? != 0 {
                return Ok(());
            }
        }
        let cluster = (rb as u64) << self.g.rb_bits;
        if cluster == 0 {
            // The header's own refcount block is missing.
            return Err(self.corrupt(
                true,
                None,
                None,
                "Refcount block for the image header is missing".to_string(),
            ));
        }
        let off = cluster << self.g.cluster_bits;
        self.note_written(off, self.g.cluster_size);
        let mut data = vec![0u8; self.g.cluster_size as usize];
        set_rc(&mut data, 0, self.g.refcount_order, 1);
        self.check_write(off, self.g.cluster_size, 0)?;
        self.file.write(off, &data)?;
        // The block is on disk before the table points to it.
        self.file.flush()?;
        let at = self.hdr.refcount_table_offset + rb as u64 * 8;
        self.check_write(at, 8, OL_REFCOUNT_TABLE)?;
        self.file.write(at, &off.to_be_bytes())?;
        self.reftable[rb] = off;
        self.max_reftable_index = self.max_reftable_index.max(rb);
        if let Some(v) = self.rc_cache.victim() {
            if self.rc_cache.get(v).dirty {
                let voff = self.rc_cache.get(v).offset;
                self.check_write(voff, self.g.cluster_size, OL_REFCOUNT_BLOCK)?;
                self.file.write(voff, &self.rc_cache.get(v).data)?;
                self.rc_cache.get_mut(v).dirty = false;
            }
        }
        self.rc_cache.insert(off, data, false);
        Ok(())
    }

    /// A refcount table of at least `min` entries, with the refcount
    /// blocks for itself, at the end of the image; then the header
    /// points to it and the old table is freed.
    fn grow_reftable(&mut self, min: usize) -> io::Result<()> {
        let g = self.g;
        let per_cluster = (g.cluster_size / 8) as usize;
        let mut entries = min.max(self.reftable.len() * 3 / 2).div_ceil(per_cluster) * per_cluster;
        let file_end = g.bytes_to_clusters(self.host_end.max(self.file.size()));
        let start = file_end.max((self.reftable.len() as u64) << g.rb_bits);
        let (blocks, table_clusters) = loop {
            let table_clusters = (entries / per_cluster) as u64;
            let mut k = 0u64;
            loop {
                let end = start + k + table_clusters;
                let need = ((end - 1) >> g.rb_bits) - (start >> g.rb_bits) + 1;
                if need == k {
                    break;
                }
                k = need;
            }
            let last_rb = ((start + k + table_clusters - 1) >> g.rb_bits) as usize;
            if last_rb < entries {
                break (k, table_clusters);
            }
            entries = (last_rb + 1).div_ceil(per_cluster) * per_cluster;
        };
        if entries as u64 * 8 > MAX_REFTABLE_BYTES {
            return Err(io::Error::from_raw_os_error(libc::EFBIG));
        }
        self.flush_refcounts()?;
        let first_rb = (start >> g.rb_bits) as usize;
        let mut table = self.reftable.clone();
        table.resize(entries, 0);
        // Block j describes range first_rb + j and sits at start + j.
        for j in 0..blocks {
            let rb = first_rb + j as usize;
            let mut data = vec![0u8; g.cluster_size as usize];
            for c in start..start + blocks + table_clusters {
                if (c >> g.rb_bits) as usize == rb {
                    set_rc(&mut data, c & ((1 << g.rb_bits) - 1), g.refcount_order, 1);
                }
            }
            let off = (start + j) << g.cluster_bits;
            self.file.write(off, &data)?;
            table[rb] = off;
        }
        let table_off = (start + blocks) << g.cluster_bits;
        self.note_written(
            start << g.cluster_bits,
            (blocks + table_clusters) << g.cluster_bits,
        );
        self.file.write(table_off, &u64_table_bytes(&table))?;
        self.file.flush()?;
        let mut hdr = [0u8; 12];
        put_be64(&mut hdr, 0, table_off);
        put_be32(&mut hdr, 8, table_clusters as u32);
        self.write_header_bytes(OFF_REFTABLE, &hdr)?;
        let old_off = self.hdr.refcount_table_offset;
        let old_clusters = self.hdr.refcount_table_clusters as u64;
        self.hdr.refcount_table_offset = table_off;
        self.hdr.refcount_table_clusters = table_clusters as u32;
        self.reftable = table;
        self.max_reftable_index = self.reftable.iter().rposition(|e| *e != 0).unwrap_or(0);
        self.free_clusters(old_off, old_clusters, DiscardKind::Other)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refcounts_of_every_width() {
        for order in 0..=6u32 {
            let mut b = vec![0u8; 512];
            let max = if order == 6 {
                u64::MAX
            } else {
                (1u64 << (1 << order)) - 1
            };
            let n = (512 * 8) >> order;
            for i in 0..n as u64 {
                set_rc(&mut b, i, order, i % (max.min(1000) + 1));
            }
            for i in 0..n as u64 {
                assert_eq!(
                    get_rc(&b, i, order),
                    i % (max.min(1000) + 1),
                    "order {order}"
                );
            }
        }
        // Sub-byte widths fill each byte from the least significant bit.
        let mut b = vec![0u8; 1];
        set_rc(&mut b, 1, 0, 1);
        assert_eq!(b[0], 0b10);
    }
}
