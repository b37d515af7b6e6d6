//! The PCI root bus of the `pc` machine and configuration mechanism #1.

use super::config::{self, BarKind};
use super::PciFunction;
use crate::bus::{Bus, BusDevice};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub type SharedFunction = Arc<Mutex<dyn PciFunction>>;

/// (slot, function) on bus 0.
pub type DevFn = (u8, u8);

/// Where a BAR is mapped now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mapping {
    io: bool,
    base: u64,
}

struct Slot {
    function: SharedFunction,
    mapped: [Option<Mapping>; 6],
}

/// Bus 0: its functions, and the buses their BARs appear on.
pub struct PciRoot {
    slots: Mutex<BTreeMap<DevFn, Slot>>,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
}

/// Forwards one BAR's accesses to its function.
struct BarWindow {
    function: SharedFunction,
    bar: usize,
}

impl BusDevice for BarWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let mut f = self.function.lock().unwrap_or_else(|e| e.into_inner());
        f.bar_read(self.bar, offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut f = self.function.lock().unwrap_or_else(|e| e.into_inner());
        f.bar_write(self.bar, offset, data);
    }
}

/// What `query-pci` reports of one function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionInfo {
    pub slot: u8,
    pub function: u8,
    pub vendor: u16,
    pub device: u16,
    pub class: u16,
    pub class_description: Option<&'static str>,
    pub irq: Option<u8>,
    pub qdev_id: String,
    /// (bar, io, address, size, prefetchable, 64-bit)
    pub regions: Vec<(usize, bool, u64, u64, bool, bool)>,
}

impl PciRoot {
    pub fn new(pio: Arc<Bus>, mmio: Arc<Bus>) -> Arc<PciRoot> {
        Arc::new(PciRoot {
            slots: Mutex::new(BTreeMap::new()),
            pio,
            mmio,
        })
    }

    /// Plugs a function in at `devfn`; its BARs appear where its config
    /// space says, if decoding is enabled.
    pub fn add(&self, devfn: DevFn, function: SharedFunction) -> Result<(), String> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if devfn.0 > 31 || devfn.1 > 7 {
            return Err(format!(
                "PCI: slot {} function {} out of range",
                devfn.0, devfn.1
            ));
        }
        if slots.contains_key(&devfn) {
            return Err(format!(
                "PCI: slot {} function {} not available for this device, in use",
                devfn.0, devfn.1
            ));
        }
        let mut slot = Slot {
            function,
            mapped: [None; 6],
        };
        self.remap(&mut slot);
        slots.insert(devfn, slot);
        Ok(())
    }

    /// Re-maps BARs after the command register or a BAR changed.
    fn remap(&self, slot: &mut Slot) {
        let f = slot.function.lock().unwrap_or_else(|e| e.into_inner());
        let cfg = f.config();
        let command = cfg.u16(config::COMMAND);
        let mut wanted = [None; 6];
        for (i, w) in wanted.iter_mut().enumerate() {
            let (Some(bar), Some(addr)) = (cfg.bar(i), cfg.bar_address(i)) else {
                continue;
            };
            let io = bar.kind == BarKind::Io;
            let enabled = if io {
                command & config::COMMAND_IO != 0
            } else {
                command & config::COMMAND_MEMORY != 0
            };
            // A BAR at 0 or all-ones (mid-sizing) decodes nothing.
            if enabled && addr != 0 && addr.wrapping_add(bar.size) > addr {
                *w = Some((Mapping { io, base: addr }, bar.size));
            }
        }
        drop(f);
        for (i, want) in wanted.iter().enumerate() {
            let now = want.map(|(m, _)| m);
            if slot.mapped[i] == now {
                continue;
            }
            if let Some(old) = slot.mapped[i].take() {
                let bus = if old.io { &self.pio } else { &self.mmio };
                bus.remove(old.base);
            }
            if let Some((m, size)) = *want {
                let bus = if m.io { &self.pio } else { &self.mmio };
                let window = Arc::new(Mutex::new(BarWindow {
                    function: slot.function.clone(),
                    bar: i,
                }));
                // A BAR placed over another device stays unmapped, as the
                // conflicting range wins on real chipsets too.
                if bus.insert(m.base, size, window).is_ok() {
                    slot.mapped[i] = Some(m);
                }
            }
        }
        let bases = slot.mapped.map(|m| m.map(|m| m.base));
        slot.function
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bars_mapped(&bases);
    }

    fn config_read(&self, devfn: DevFn, offset: usize, data: &mut [u8]) {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match slots.get(&devfn) {
            Some(slot) => slot
                .function
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .config_read(offset, data),
            None => data.fill(0xff),
        }
    }

    fn config_write(&self, devfn: DevFn, offset: usize, data: &[u8]) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = slots.get_mut(&devfn) else {
            return;
        };
        {
            let mut f = slot.function.lock().unwrap_or_else(|e| e.into_inner());
            f.config_mut().write(offset, data);
            f.config_written(offset, data.len());
        }
        let touches = |lo: usize, hi: usize| offset < hi && offset + data.len() > lo;
        if touches(config::COMMAND, config::COMMAND + 2) || touches(config::BAR0, config::BAR0 + 24)
        {
            self.remap(slot);
        }
    }

    /// Resets every function and maps their BARs where power-on puts them.
    pub fn reset(&self) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        for slot in slots.values_mut() {
            slot.function
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .reset();
            self.remap(slot);
        }
    }

    /// The first free slot from `from` on, for devices without `addr=`.
    pub fn free_slot(&self, from: u8) -> Option<u8> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        (from..32).find(|s| !slots.contains_key(&(*s, 0)))
    }

    /// A copy of the configuration space of the function at `devfn`, for
    /// the monitor's views of the machine (`info qtree`, `info mtree`).
    pub fn config_bytes(&self, devfn: DevFn) -> Option<[u8; 256]> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.get(&devfn)?;
        let f = slot.function.lock().unwrap_or_else(|e| e.into_inner());
        Some(*f.config().raw())
    }

    /// Every function, for `query-pci`.
    pub fn functions(&self) -> Vec<FunctionInfo> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .iter()
            .map(|(&(slot, function), s)| {
                let f = s.function.lock().unwrap_or_else(|e| e.into_inner());
                let c = f.config();
                let pin = c.u8(config::INTERRUPT_PIN);
                let regions = (0..6)
                    .filter_map(|i| {
                        let bar = c.bar(i)?;
                        // Not decoding: QEMU reports the address as -1.
                        let addr = match s.mapped[i] {
                            Some(_) => c.bar_address(i)?,
                            None => u64::MAX,
                        };
                        Some((
                            i,
                            bar.kind == BarKind::Io,
                            addr,
                            bar.size,
                            bar.prefetchable,
                            bar.kind == BarKind::Memory64,
                        ))
                    })
                    .collect();
                FunctionInfo {
                    slot,
                    function,
                    vendor: c.u16(config::VENDOR_ID),
                    device: c.u16(config::DEVICE_ID),
                    class: (u16::from(c.u8(config::CLASS)) << 8)
                        | u16::from(c.u8(config::SUBCLASS)),
                    class_description: f.class_description(),
                    irq: (pin != 0).then(|| c.u8(config::INTERRUPT_LINE)),
                    qdev_id: f.qdev_id().to_string(),
                    regions,
                }
            })
            .collect()
    }
}

/// Configuration mechanism #1: the address register at 0xcf8 and the data
/// window at 0xcfc-0xcff.
pub struct PciConfigIo {
    address: u32,
    root: Arc<PciRoot>,
    /// The reset control register shares port 0xcf9 with the address
    /// register's second byte: byte accesses there go to it.
    reset_control: Option<crate::bus::SharedDevice>,
}

impl PciConfigIo {
    pub fn new(root: Arc<PciRoot>, reset_control: Option<crate::bus::SharedDevice>) -> PciConfigIo {
        PciConfigIo {
            address: 0,
            root,
            reset_control,
        }
    }

    /// The function and register the address register selects, if enabled
    /// and on bus 0.
    fn target(&self, data_offset: u64) -> Option<(DevFn, usize)> {
        if self.address & 0x8000_0000 == 0 || (self.address >> 16) & 0xff != 0 {
            return None;
        }
        let slot = ((self.address >> 11) & 0x1f) as u8;
        let function = ((self.address >> 8) & 0x7) as u8;
        let reg = (self.address & 0xfc) as usize + data_offset as usize;
        Some(((slot, function), reg))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset == 1 && data.len() == 1 {
            if let Some(r) = &self.reset_control {
                r.lock().unwrap_or_else(|e| e.into_inner()).read(0, data);
                return;
            }
        }
        if offset < 4 {
            let bytes = self.address.to_le_bytes();
            for (i, b) in data.iter_mut().enumerate() {
                *b = bytes.get(offset as usize + i).copied().unwrap_or(0xff);
            }
            return;
        }
        match self.target(offset - 4) {
            Some((devfn, reg)) => self.root.config_read(devfn, reg, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 1 && data.len() == 1 {
            if let Some(r) = &self.reset_control {
                r.lock().unwrap_or_else(|e| e.into_inner()).write(0, data);
                return;
            }
        }
        if offset < 4 {
            // Only a full 32-bit write at 0xcf8 sets the address, as on
            // PC chipsets (byte writes to 0xcf9 are the reset register).
            if offset == 0 && data.len() == 4 {
                self.address =
                    u32::from_le_bytes([data[0], data[1], data[2], data[3]]) & 0x80ff_fffc;
            }
            return;
        }
        if let Some((devfn, reg)) = self.target(offset - 4) {
            self.root.config_write(devfn, reg, data);
        }
    }
}
