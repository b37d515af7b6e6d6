//! A write-back cache of cluster-sized metadata tables (L2 tables and
//! refcount blocks), least recently used out first. The cache only
//! holds bytes; the image decides when dirty tables may be written,
//! because their order on disk is what keeps a crashed image
//! consistent.

/// One cached table.
pub struct CachedTable {
    /// Host offset of the table in the image file.
    pub offset: u64,
    pub data: Vec<u8>,
    pub dirty: bool,
    last_use: u64,
}

/// Tables by host offset. Small (QEMU's default is 16 L2 tables of
/// 64 KiB), so a linear scan is as fast as a map.
pub struct TableCache {
    tables: Vec<CachedTable>,
    capacity: usize,
    clock: u64,
}

impl TableCache {
    pub fn new(capacity: usize) -> TableCache {
        TableCache {
            tables: Vec::with_capacity(capacity),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// The slot holding the table at `offset`, marked used.
    pub fn find(&mut self, offset: u64) -> Option<usize> {
        let i = self.tables.iter().position(|t| t.offset == offset)?;
        self.clock += 1;
        self.tables[i].last_use = self.clock;
        Some(i)
    }

    /// The slot a new table should go into when the cache is full: the
    /// least recently used one (the caller writes it out if dirty).
    /// None while there is room.
    pub fn victim(&self) -> Option<usize> {
        if self.tables.len() < self.capacity {
            return None;
        }
        self.tables
            .iter()
            .enumerate()
            .min_by_key(|(_, t)| t.last_use)
            .map(|(i, _)| i)
    }

    /// Puts a table in (the victim, if any, must have been written).
    pub fn insert(&mut self, offset: u64, data: Vec<u8>, dirty: bool) -> usize {
        self.clock += 1;
        let t = CachedTable {
            offset,
            data,
            dirty,
            last_use: self.clock,
        };
        match self.victim() {
            Some(i) => {
                self.tables[i] = t;
                i
            }
            None => {
                self.tables.push(t);
                self.tables.len() - 1
            }
        }
    }

    pub fn get(&self, slot: usize) -> &CachedTable {
        &self.tables[slot]
    }

    pub fn get_mut(&mut self, slot: usize) -> &mut CachedTable {
        &mut self.tables[slot]
    }

    /// Slots of the dirty tables, in offset order (sequential writes).
    pub fn dirty_slots(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.tables.len())
            .filter(|i| self.tables[*i].dirty)
            .collect();
        v.sort_by_key(|i| self.tables[*i].offset);
        v
    }

    /// Forgets the table at `offset` (its cluster was freed).
    pub fn forget(&mut self, offset: u64) {
        self.tables.retain(|t| t.offset != offset);
    }

    /// Forgets every clean table (cache-clean-interval).
    pub fn drop_clean(&mut self) {
        self.tables.retain(|t| t.dirty);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_goes_first() {
        let mut c = TableCache::new(2);
        c.insert(0x1000, vec![1], false);
        c.insert(0x2000, vec![2], false);
        assert_eq!(c.find(0x1000), Some(0));
        assert_eq!(c.victim(), Some(1));
        c.insert(0x3000, vec![3], true);
        assert!(c.find(0x2000).is_none());
        assert_eq!(c.dirty_slots(), vec![1]);
    }
}
