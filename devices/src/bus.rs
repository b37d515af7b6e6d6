//! Port-I/O and MMIO buses: address ranges mapped to devices.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

/// A device reached through a bus. `offset` is relative to the start of
/// the range the device was inserted at; `data.len()` is the access size.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Debug, PartialEq, Eq)]
pub struct BusOverlap {
    pub base: u64,
    pub len: u64,
}

impl fmt::Display for BusOverlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "range {:#x}+{:#x} overlaps a device already on the bus",
            self.base, self.len
        )
    }
}

impl std::error::Error for BusOverlap {}

struct Range {
    len: u64,
    device: SharedDevice,
}

/// One address space (port I/O or MMIO). Ranges can change while vCPUs
/// use the bus (a guest moving a PCI BAR), hence the lock.
#[derive(Default)]
pub struct Bus {
    ranges: RwLock<BTreeMap<u64, Range>>,
}

impl Bus {
    pub fn new() -> Bus {
        Bus::default()
    }

    pub fn insert(&self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusOverlap> {
        let end = base.checked_add(len).ok_or(BusOverlap { base, len })?;
        if len == 0 {
            return Err(BusOverlap { base, len });
        }
        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        let before = ranges.range(..end).next_back();
        if let Some((b, r)) = before {
            if b + r.len > base {
                return Err(BusOverlap { base, len });
            }
        }
        ranges.insert(base, Range { len, device });
        Ok(())
    }

    /// Takes the range that starts at `base` off the bus.
    pub fn remove(&self, base: u64) -> bool {
        self.ranges
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&base)
            .is_some()
    }

    fn find(&self, addr: u64) -> Option<(u64, SharedDevice)> {
        let ranges = self.ranges.read().unwrap_or_else(|e| e.into_inner());
        let (base, r) = ranges.range(..=addr).next_back()?;
        (addr - base < r.len).then(|| (addr - base, r.device.clone()))
    }

    /// Reads from the device at `addr`; false when nothing is there (the
    /// caller answers all-ones, as unassigned ports do).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                // A poisoned lock means a device panicked; keep serving.
                let mut d = dev.lock().unwrap_or_else(|e| e.into_inner());
                d.read(offset, data);
                true
            }
            None => false,
        }
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                let mut d = dev.lock().unwrap_or_else(|e| e.into_inner());
                d.write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(u8);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.0.wrapping_add(offset as u8));
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn ranges_do_not_overlap_and_offsets_are_relative() {
        let bus = Bus::new();
        bus.insert(0x3f8, 8, Arc::new(Mutex::new(Echo(1)))).unwrap();
        assert!(bus.insert(0x3fc, 8, Arc::new(Mutex::new(Echo(2)))).is_err());
        assert!(bus.insert(0x3f0, 9, Arc::new(Mutex::new(Echo(2)))).is_err());
        bus.insert(0x400, 1, Arc::new(Mutex::new(Echo(9)))).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b[0], 3);
        assert!(!bus.read(0x3f7, &mut b));
        assert!(bus.write(0x400, &[7]));
        assert!(bus.read(0x400, &mut b));
        assert_eq!(b[0], 7);
    }
}
