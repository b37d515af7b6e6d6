//! The consistency check (what `qemu-img check` does): every reference
//! counted from the tables and compared with the stored refcounts, and
//! the repair that a dirty image with lazy refcounts gets on open.

use super::*;
use std::collections::HashMap;

/// Most L2 entries one check visits: a hostile image with an L1 table
/// full of the same L2 table must not keep the check busy for hours.
const MAX_VISITS: u64 = 1 << 28;

/// What a check found (and fixed), as qemu-img reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckResult {
    /// References with a refcount below their count, or wrong flags.
    pub corruptions: u64,
    /// Clusters with a refcount above their references.
    pub leaks: u64,
    /// Problems the check could not get past.
    pub check_errors: u64,
    pub corruptions_fixed: u64,
    pub leaks_fixed: u64,
}

struct Counter {
    counts: HashMap<u64, u64>,
    cluster_bits: u32,
    /// Clusters of the file (references past them are corruptions).
    file_clusters: u64,
    visits: u64,
    result: CheckResult,
}

impl Counter {
    /// Counts one reference to each cluster of `[offset, offset+len)`.
    fn add(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = offset >> self.cluster_bits;
        let last = (offset + len - 1) >> self.cluster_bits;
        for c in first..=last {
            if c >= self.file_clusters + (1 << 20) {
                // Far past the end of the file: a broken reference.
                self.result.corruptions += 1;
                return;
            }
            *self.counts.entry(c).or_insert(0) += 1;
        }
    }
}

impl State {
    /// Counts the references of one L1 tree.
    fn count_tree(&mut self, ctr: &mut Counter, l1: &[u64], active: bool) -> io::Result<()> {
        let cs = self.g.cluster_size;
        let mut seen = std::collections::HashSet::new();
        for e in l1 {
            let l2off = e & L1E_OFFSET_MASK;
            if l2off == 0 {
                continue;
            }
            if self.g.offset_in_cluster(l2off) != 0 {
                ctr.result.corruptions += 1;
                continue;
            }
            ctr.add(l2off, cs);
            // A table used twice by one L1 table, or one past the end of
            // the file, is broken: counted, not walked (a hostile image
            // must not make the walk endless).
            if !seen.insert(l2off) || l2off >> ctr.cluster_bits >= ctr.file_clusters {
                ctr.result.corruptions += 1;
                continue;
            }
            let mut table = vec![0u8; cs as usize];
            self.file.read(l2off, &mut table)?;
            // A dirty cached copy is newer than the file.
            if let Some(s) = self.l2_cache.find(l2off) {
                table.copy_from_slice(&self.l2_cache.get(s).data);
            }
            for j in 0..self.g.l2_entries() as usize {
                ctr.visits += 1;
                if ctr.visits > MAX_VISITS {
                    ctr.result.check_errors += 1;
                    return Ok(());
                }
                let ent = be64(&table, j * 8);
                match classify(ent) {
                    Cluster::ZeroPlain | Cluster::ZeroAlloc(_) if self.g.version < 3 => {
                        ctr.result.corruptions += 1;
                    }
                    Cluster::Normal(h) | Cluster::ZeroAlloc(h) => {
                        if self.g.offset_in_cluster(h) != 0 {
                            ctr.result.corruptions += 1;
                            continue;
                        }
                        ctr.add(h, cs);
                    }
                    Cluster::Compressed => {
                        let (off, n) = self.compressed_span(ent);
                        ctr.add(off, n * cs);
                    }
                    _ => {}
                }
            }
            let _ = active;
        }
        Ok(())
    }

    /// Checks the image; with `repair`, fixes refcounts and flags.
    pub(super) fn check(&mut self, repair: bool) -> io::Result<CheckResult> {
        let cs = self.g.cluster_size;
        let mut ctr = Counter {
            counts: HashMap::new(),
            cluster_bits: self.g.cluster_bits,
            file_clusters: self.g.bytes_to_clusters(self.file.size()),
            visits: 0,
            result: CheckResult::default(),
        };
        ctr.add(0, cs);
        ctr.add(self.hdr.l1_table_offset, self.l1.len() as u64 * 8);
        let l1 = self.l1.clone();
        self.count_tree(&mut ctr, &l1, true)?;
        ctr.add(
            self.hdr.snapshots_offset,
            snapshot::table_bytes(&self.snapshots),
        );
        for s in self.snapshots.clone() {
            if s.l1_size as u64 > MAX_L1_BYTES / 8 || self.g.offset_in_cluster(s.l1_offset) != 0 {
                ctr.result.corruptions += 1;
                continue;
            }
            ctr.add(s.l1_offset, s.l1_size as u64 * 8);
            let sl1 = read_u64_table(&self.file, s.l1_offset, s.l1_size as usize)?;
            self.count_tree(&mut ctr, &sl1, false)?;
        }
        ctr.add(
            self.hdr.refcount_table_offset,
            self.hdr.refcount_table_clusters as u64 * cs,
        );
        for e in self.reftable.clone() {
            let o = e & REFT_OFFSET_MASK;
            if o != 0 {
                ctr.add(o, cs);
            }
        }
        let mut res = ctr.result.clone();
        // Compare with the stored refcounts: every counted cluster and
        // every cluster a refcount block describes.
        let mut clusters: Vec<u64> = ctr.counts.keys().copied().collect();
        let entries = 1u64 << self.g.rb_bits;
        for (i, e) in self.reftable.clone().iter().enumerate() {
            if e & REFT_OFFSET_MASK != 0 {
                let first = (i as u64) << self.g.rb_bits;
                let end = (first + entries).min(ctr.file_clusters.max(first));
                clusters.extend(first..end);
            }
        }
        clusters.sort_unstable();
        clusters.dedup();
        let mut fixes: Vec<(u64, i64)> = Vec::new();
        for c in clusters {
            let want = ctr.counts.get(&c).copied().unwrap_or(0);
            let have = self.refcount(c)?;
            if have == want {
                continue;
            }
            if have > want {
                res.leaks += 1;
            } else {
                res.corruptions += 1;
            }
            fixes.push((c, want as i64 - have as i64));
        }
        // The COPIED flags of the active tree.
        for e in &l1 {
            let l2off = e & L1E_OFFSET_MASK;
            if l2off == 0 || self.g.offset_in_cluster(l2off) != 0 {
                continue;
            }
            let copied = e & OFLAG_COPIED != 0;
            if copied != (ctr.counts.get(&(l2off >> self.g.cluster_bits)) == Some(&1)) {
                res.corruptions += 1;
            }
        }
        if !repair {
            return Ok(res);
        }
        self.mark_dirty()?;
        // Raise first (a referenced cluster must never look free), then
        // lower; a raise where no refcount block exists cannot be done
        // without allocating, which is not safe on a broken image.
        fixes.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
        for (c, d) in fixes {
            if d > 0 && self.refblock_offset_of(c)? == 0 {
                res.check_errors += 1;
                continue;
            }
            self.update_refcount(c, d, DiscardKind::Never)?;
            if d > 0 {
                res.corruptions_fixed += 1;
            } else {
                res.leaks_fixed += 1;
            }
        }
        self.update_tree_refcounts(&l1, 0, true)?;
        self.flush_caches()?;
        self.file.flush()?;
        self.free_cluster_index = 0;
        Ok(res)
    }

    fn refblock_offset_of(&mut self, cluster: u64) -> io::Result<u64> {
        let i = (cluster >> self.g.rb_bits) as usize;
        Ok(self.reftable.get(i).copied().unwrap_or(0) & REFT_OFFSET_MASK)
    }
}
