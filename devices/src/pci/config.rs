//! A PCI function's 256-byte configuration space: read-only identity
//! registers, writable bits by mask, and the BAR sizing protocol.

/// Standard register offsets.
pub const VENDOR_ID: usize = 0x00;
pub const DEVICE_ID: usize = 0x02;
pub const COMMAND: usize = 0x04;
pub const STATUS: usize = 0x06;
pub const REVISION: usize = 0x08;
pub const PROG_IF: usize = 0x09;
pub const SUBCLASS: usize = 0x0a;
pub const CLASS: usize = 0x0b;
pub const HEADER_TYPE: usize = 0x0e;
pub const BAR0: usize = 0x10;
pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
pub const SUBSYSTEM_ID: usize = 0x2e;
pub const INTERRUPT_LINE: usize = 0x3c;
pub const INTERRUPT_PIN: usize = 0x3d;

pub const COMMAND_IO: u16 = 0x1;
pub const COMMAND_MEMORY: u16 = 0x2;
pub const COMMAND_MASTER: u16 = 0x4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Memory32,
    Memory64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    pub kind: BarKind,
    pub size: u64,
    pub prefetchable: bool,
}

#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; 256],
    /// Bits the guest may change.
    writable: [u8; 256],
    bars: [Option<Bar>; 6],
}

impl ConfigSpace {
    pub fn new(
        vendor: u16,
        device: u16,
        class: u8,
        subclass: u8,
        prog_if: u8,
        revision: u8,
    ) -> ConfigSpace {
        let mut c = ConfigSpace {
            bytes: [0; 256],
            writable: [0; 256],
            bars: [None; 6],
        };
        c.set_u16(VENDOR_ID, vendor);
        c.set_u16(DEVICE_ID, device);
        c.bytes[REVISION] = revision;
        c.bytes[PROG_IF] = prog_if;
        c.bytes[SUBCLASS] = subclass;
        c.bytes[CLASS] = class;
        // Command: I/O, memory, bus master, interrupt disable may change.
        c.writable[COMMAND] = 0x07;
        c.writable[COMMAND + 1] = 0x04;
        c.writable[INTERRUPT_LINE] = 0xff;
        c
    }

    pub fn set_u8(&mut self, off: usize, v: u8) {
        self.bytes[off] = v;
    }

    pub fn set_u16(&mut self, off: usize, v: u16) {
        self.bytes[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }

    pub fn set_u32(&mut self, off: usize, v: u32) {
        self.bytes[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    pub fn u8(&self, off: usize) -> u8 {
        self.bytes[off]
    }

    pub fn u16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.bytes[off], self.bytes[off + 1]])
    }

    pub fn u32(&self, off: usize) -> u32 {
        u32::from_le_bytes([
            self.bytes[off],
            self.bytes[off + 1],
            self.bytes[off + 2],
            self.bytes[off + 3],
        ])
    }

    /// Lets the guest change `mask` bits of the byte at `off`.
    pub fn allow_write(&mut self, off: usize, mask: u8) {
        self.writable[off] = mask;
    }

    /// Declares BAR `index` (a 64-bit BAR takes `index` and `index + 1`)
    /// at `address`. `size` must be a power of two.
    pub fn add_bar(&mut self, index: usize, bar: Bar, address: u64) {
        let size = bar.size.max(if bar.kind == BarKind::Io { 4 } else { 16 });
        let bar = Bar { size, ..bar };
        self.bars[index] = Some(bar);
        let mask = !(size - 1);
        let (low_flags, low_mask) = match bar.kind {
            BarKind::Io => (0x1u32, (mask as u32) & !0x3),
            BarKind::Memory32 => ((bar.prefetchable as u32) << 3, (mask as u32) & !0xf),
            BarKind::Memory64 => (0x4 | ((bar.prefetchable as u32) << 3), (mask as u32) & !0xf),
        };
        let off = BAR0 + 4 * index;
        self.set_u32(off, (address as u32 & low_mask) | low_flags);
        self.writable[off..off + 4].copy_from_slice(&low_mask.to_le_bytes());
        if bar.kind == BarKind::Memory64 {
            self.set_u32(off + 4, (address >> 32) as u32);
            self.writable[off + 4..off + 8].copy_from_slice(&((mask >> 32) as u32).to_le_bytes());
        }
    }

    pub fn bar(&self, index: usize) -> Option<Bar> {
        self.bars.get(index).copied().flatten()
    }

    /// The address BAR `index` is programmed to.
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let bar = self.bar(index)?;
        let off = BAR0 + 4 * index;
        Some(match bar.kind {
            BarKind::Io => u64::from(self.u32(off) & !0x3),
            BarKind::Memory32 => u64::from(self.u32(off) & !0xf),
            BarKind::Memory64 => {
                u64::from(self.u32(off) & !0xf) | (u64::from(self.u32(off + 4)) << 32)
            }
        })
    }

    /// The register bytes, for device state.
    pub fn raw(&self) -> &[u8; 256] {
        &self.bytes
    }

    /// Restores register bytes saved with [`ConfigSpace::raw`].
    pub fn restore_raw(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() != 256 {
            return false;
        }
        self.bytes.copy_from_slice(bytes);
        true
    }

    pub fn read(&self, offset: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.bytes.get(offset + i).copied().unwrap_or(0xff);
        }
    }

    /// Applies a guest write through the writable masks; status bits are
    /// write-one-to-clear.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        for (i, &v) in data.iter().enumerate() {
            let off = offset + i;
            if off >= 256 {
                break;
            }
            if off == STATUS + 1 {
                // Error bits: write one to clear.
                self.bytes[off] &= !(v & 0xf9);
                continue;
            }
            let m = self.writable[off];
            self.bytes[off] = (self.bytes[off] & !m) | (v & m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_sizing_protocol() {
        let mut c = ConfigSpace::new(0x1af4, 0x1001, 1, 0, 0, 0);
        c.add_bar(
            0,
            Bar {
                kind: BarKind::Memory32,
                size: 0x1000,
                prefetchable: false,
            },
            0xe000_0000,
        );
        c.write(BAR0, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.u32(BAR0), 0xffff_f000);
        c.write(BAR0, &0xe100_0000u32.to_le_bytes());
        assert_eq!(c.bar_address(0), Some(0xe100_0000));
        c.add_bar(
            1,
            Bar {
                kind: BarKind::Io,
                size: 0x40,
                prefetchable: false,
            },
            0xc000,
        );
        c.write(BAR0 + 4, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(c.u32(BAR0 + 4), 0xffff_ffc1);
        // Identity registers are read-only.
        c.write(VENDOR_ID, &[0, 0]);
        assert_eq!(c.u16(VENDOR_ID), 0x1af4);
    }
}
