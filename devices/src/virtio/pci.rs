//! The virtio PCI transport as QEMU 2.11 builds it: vendor capabilities
//! that point into BAR 4 (common, ISR, device and notify regions, laid out
//! as QEMU lays them out), MSI-X in BAR 1, with INTx when MSI-X is off,
//! and for a transitional device (QEMU's default on a conventional PCI
//! bus) the legacy register block in I/O BAR 0 (see `legacy`).

mod legacy;

use super::{
    VirtioDevice, VirtioInterrupt, STATUS_DRIVER_OK, STATUS_FEATURES_OK, STATUS_NEEDS_RESET,
};
use crate::pci::config::{self, Bar, BarKind, ConfigSpace};
use crate::pci::PciFunction;
use crate::platform::{InterruptLine, IoEventRegistry, MsiSink};
use std::sync::{Arc, Mutex};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// BAR 4 regions.
const COMMON_OFFSET: u64 = 0x0000;
const ISR_OFFSET: u64 = 0x1000;
const DEVICE_OFFSET: u64 = 0x2000;
const NOTIFY_OFFSET: u64 = 0x3000;
const REGION_LEN: u64 = 0x1000;
const BAR4_SIZE: u64 = 0x4000;
const NOTIFY_MULTIPLIER: u32 = 4;
/// BAR 1: the MSI-X table, then its pending bits.
const MSIX_PBA_OFFSET: u64 = 0x800;
const BAR1_SIZE: u64 = 0x1000;
const NO_VECTOR: u16 = 0xffff;

/// QEMU's subsystem ID for PCI devices that set none of their own.
const SUBSYSTEM_ID_QEMU: u16 = 0x1100;

const CAP_MSIX: u8 = 0x11;
/// The VIRTIO_PCI_CAP_PCI_CFG capability; its data bytes at +16.
const PCI_CFG_CAP: usize = 0x94;
const PCI_CFG_DATA: usize = PCI_CFG_CAP + 16;
const CAP_VENDOR: u8 = 0x09;
const MSIX_CAP: usize = 0x40;
const MSIX_ENABLE: u16 = 1 << 15;
const MSIX_FUNCTION_MASK: u16 = 1 << 14;

#[derive(Clone, Copy, Default)]
struct MsixEntry {
    address: u64,
    data: u32,
    masked: bool,
}

/// Interrupt state shared by the transport and the device's interrupt
/// handle.
struct Interrupts {
    msix_enabled: bool,
    function_masked: bool,
    table: Vec<MsixEntry>,
    pending: Vec<bool>,
    isr: u8,
    config_vector: u16,
    /// Bumped whenever the device configuration changes under the driver.
    config_generation: u8,
    queue_vectors: Vec<u16>,
    /// The driver broke the rules (a hostile queue): NEEDS_RESET until
    /// the driver resets the device.
    broken: bool,
    /// The function may master the bus: MSI-X messages are memory writes
    /// and go nowhere without it, as in QEMU.
    bus_master: bool,
    /// Each MSI-X entry's irqfd route, made at its first message.
    vectors: Vec<Option<Box<dyn crate::platform::MsiVector>>>,
    msi: Arc<dyn MsiSink>,
    intx: Arc<dyn InterruptLine>,
}

impl Interrupts {
    fn signal(&mut self, vector: u16, isr_bit: u8) {
        if self.msix_enabled {
            if !self.bus_master {
                return;
            }
            let v = usize::from(vector);
            let Some(entry) = self.table.get(v).copied() else {
                return;
            };
            if self.function_masked || entry.masked {
                if let Some(p) = self.pending.get_mut(v) {
                    *p = true;
                }
            } else {
                self.deliver(v, entry);
            }
        } else {
            self.isr |= isr_bit;
            self.intx.set_level(true);
        }
    }

    /// Delivers what was pending behind a mask that was just lifted.
    fn flush_pending(&mut self) {
        if !self.msix_enabled || self.function_masked || !self.bus_master {
            return;
        }
        for v in 0..self.table.len() {
            if self.pending[v] && !self.table[v].masked {
                self.pending[v] = false;
                let entry = self.table[v];
                self.deliver(v, entry);
            }
        }
    }

    /// Sends entry `v`'s message through its irqfd where the machine
    /// gives one, else directly.
    fn deliver(&mut self, v: usize, entry: MsixEntry) {
        if let Some(slot) = self.vectors.get_mut(v) {
            if slot.is_none() {
                *slot = self.msi.vector();
            }
            if let Some(vector) = slot {
                if vector.send(entry.address, entry.data).is_ok() {
                    return;
                }
            }
        }
        self.msi.send_msi(entry.address, entry.data);
    }
}

struct InterruptHandle(Arc<Mutex<Interrupts>>);

impl VirtioInterrupt for InterruptHandle {
    fn notify_queue(&self, queue: u16) {
        let mut i = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let vector = i
            .queue_vectors
            .get(usize::from(queue))
            .copied()
            .unwrap_or(NO_VECTOR);
        i.signal(vector, 1);
    }

    fn notify_config(&self) {
        let mut i = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let vector = i.config_vector;
        i.signal(vector, 2);
    }

    fn device_broken(&self, why: &str) {
        let mut i = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !std::mem::replace(&mut i.broken, true) {
            // As QEMU's virtio_error reports it.
            eprintln!("vmm: virtio: {why}");
            let vector = i.config_vector;
            i.signal(vector, 2);
        }
    }
}

#[derive(Clone, Copy, Default)]
struct QueueRegs {
    size: u16,
    max_size: u16,
    enable: bool,
    desc: u64,
    driver: u64,
    device: u64,
}

/// Where the VMM placed a transport's BARs, as firmware would.
#[derive(Clone, Copy, Debug)]
pub struct VirtioBars {
    /// BAR 4: the virtio 1.0 regions.
    pub modern: u64,
    /// BAR 1: the MSI-X table.
    pub msix: u64,
    /// BAR 0, the legacy register block's I/O ports: a transitional
    /// device; None: modern only (`disable-legacy=on`).
    pub legacy: Option<u64>,
}

pub struct VirtioPci {
    config: ConfigSpace,
    /// The configuration space at power-on, for resets.
    initial_config: ConfigSpace,
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupts: Arc<Mutex<Interrupts>>,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    queue_select: u16,
    queues: Vec<QueueRegs>,
    /// One eventfd per queue, signalled when the driver notifies it.
    kicks: Vec<Arc<EventFd>>,
    /// Where KVM signals the kicks itself (ioeventfd), if it can.
    ioevents: Option<Arc<dyn IoEventRegistry>>,
    /// BAR 4's address while it is mapped.
    bar4: Option<u64>,
    /// The notify region's address the kicks are registered at.
    ioevents_at: Option<u64>,
    /// The device has the legacy interface (I/O BAR 0).
    legacy: bool,
    /// BAR 0's port while it is mapped.
    bar0: Option<u64>,
    /// The legacy notify port the kicks are registered at.
    legacy_ioevents_at: Option<u16>,
    /// Bus mastering as the device last heard of it.
    bus_master_seen: bool,
    /// Bus mastering went off under a running device: QEMU takes
    /// DRIVER_OK back, and the device (queues as they were) waits until
    /// the driver sets it again.
    suspended: bool,
    qdev_id: String,
}

fn vendor_cap(cfg: &mut ConfigSpace, at: usize, next: u8, kind: u8, offset: u64, len: u8) {
    cfg.set_u8(at, CAP_VENDOR);
    cfg.set_u8(at + 1, next);
    cfg.set_u8(at + 2, len);
    cfg.set_u8(at + 3, kind);
    cfg.set_u8(at + 4, 4); // BAR 4
    cfg.set_u32(at + 8, offset as u32);
    cfg.set_u32(at + 12, REGION_LEN as u32);
}

impl VirtioPci {
    /// The size of the legacy I/O BAR for `device`, as QEMU sizes it:
    /// the registers with MSI-X present and the device configuration,
    /// rounded up to a power of two.
    pub fn legacy_bar_size(device: &dyn VirtioDevice) -> u64 {
        (legacy::CONFIG_OFFSET_MSIX + device.config_size()).next_power_of_two()
    }

    /// A transport for `device` with its BARs at `bars`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        msi: Arc<dyn MsiSink>,
        intx: Arc<dyn InterruptLine>,
        intx_line: u8,
        bars: VirtioBars,
        qdev_id: String,
        ioevents: Option<Arc<dyn IoEventRegistry>>,
    ) -> std::io::Result<VirtioPci> {
        let device_type = device.device_type();
        // virtio-blk is mass storage (SCSI class, as QEMU reports it).
        let (class, subclass) = match device_type {
            2 => (0x01, 0x00),
            1 => (0x02, 0x00),
            _ => (0xff, 0x00),
        };
        let mut cfg = match bars.legacy {
            // Transitional: the legacy device ID and revision 0, the
            // virtio device ID as subsystem (what legacy drivers match).
            Some(port) => {
                let mut cfg =
                    ConfigSpace::new(0x1af4, 0x1000 + device_type - 1, class, subclass, 0, 0);
                cfg.set_u16(config::SUBSYSTEM_ID, device_type);
                cfg.add_bar(
                    0,
                    Bar {
                        kind: BarKind::Io,
                        size: Self::legacy_bar_size(device.as_ref()),
                        prefetchable: false,
                    },
                    port,
                );
                cfg
            }
            // Modern only: the subsystem stays QEMU's PCI default.
            None => {
                let mut cfg = ConfigSpace::new(0x1af4, 0x1040 + device_type, class, subclass, 0, 1);
                cfg.set_u16(config::SUBSYSTEM_ID, SUBSYSTEM_ID_QEMU);
                cfg
            }
        };
        cfg.set_u16(config::SUBSYSTEM_VENDOR_ID, 0x1af4);
        cfg.set_u8(config::INTERRUPT_PIN, 1);
        cfg.set_u8(config::INTERRUPT_LINE, intx_line);
        cfg.set_u16(config::STATUS, 0x10); // capabilities list
        cfg.set_u8(0x34, MSIX_CAP as u8);
        cfg.add_bar(
            4,
            Bar {
                kind: BarKind::Memory64,
                size: BAR4_SIZE,
                prefetchable: true,
            },
            bars.modern,
        );
        cfg.add_bar(
            1,
            Bar {
                kind: BarKind::Memory32,
                size: BAR1_SIZE,
                prefetchable: false,
            },
            bars.msix,
        );
        let queue_sizes = device.queue_max_sizes();
        let vectors = queue_sizes.len() + 1;
        // MSI-X: table in BAR 1 at 0, pending bits at 0x800.
        cfg.set_u8(MSIX_CAP, CAP_MSIX);
        cfg.set_u8(MSIX_CAP + 1, 0x50);
        cfg.set_u16(MSIX_CAP + 2, (vectors - 1) as u16);
        cfg.allow_write(MSIX_CAP + 3, 0xc0);
        cfg.set_u32(MSIX_CAP + 4, 1);
        cfg.set_u32(MSIX_CAP + 8, MSIX_PBA_OFFSET as u32 | 1);
        vendor_cap(&mut cfg, 0x50, 0x60, 1, COMMON_OFFSET, 16);
        vendor_cap(&mut cfg, 0x60, 0x70, 3, ISR_OFFSET, 16);
        vendor_cap(&mut cfg, 0x70, 0x80, 4, DEVICE_OFFSET, 16);
        vendor_cap(&mut cfg, 0x80, PCI_CFG_CAP as u8, 2, NOTIFY_OFFSET, 20);
        cfg.set_u32(0x80 + 16, NOTIFY_MULTIPLIER);
        // VIRTIO_PCI_CAP_PCI_CFG: a window onto BAR 4 through
        // configuration space; the driver sets bar, offset and length.
        vendor_cap(&mut cfg, PCI_CFG_CAP, 0x00, 5, 0, 20);
        cfg.set_u8(PCI_CFG_CAP + 4, 0);
        cfg.set_u32(PCI_CFG_CAP + 12, 0);
        cfg.allow_write(PCI_CFG_CAP + 4, 0xff);
        for off in PCI_CFG_CAP + 8..PCI_CFG_CAP + 20 {
            cfg.allow_write(off, 0xff);
        }
        let interrupts = Interrupts {
            msix_enabled: false,
            function_masked: false,
            table: vec![
                MsixEntry {
                    masked: true,
                    ..Default::default()
                };
                vectors
            ],
            pending: vec![false; vectors],
            isr: 0,
            config_vector: NO_VECTOR,
            config_generation: 0,
            queue_vectors: vec![NO_VECTOR; queue_sizes.len()],
            broken: false,
            bus_master: false,
            vectors: (0..vectors).map(|_| None).collect(),
            msi,
            intx,
        };
        let kicks = queue_sizes
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).map(Arc::new))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(VirtioPci {
            initial_config: cfg.clone(),
            config: cfg,
            device,
            mem,
            interrupts: Arc::new(Mutex::new(interrupts)),
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            queue_select: 0,
            queues: queue_sizes
                .into_iter()
                .map(|max| QueueRegs {
                    size: max,
                    max_size: max,
                    ..Default::default()
                })
                .collect(),
            kicks,
            ioevents,
            bar4: None,
            ioevents_at: None,
            legacy: bars.legacy.is_some(),
            bar0: None,
            legacy_ioevents_at: None,
            bus_master_seen: false,
            suspended: false,
            qdev_id,
        })
    }

    /// What to call when the device's configuration changed behind the
    /// driver's back (a resized disk): a new configuration generation and
    /// the configuration interrupt.
    pub fn config_change_notifier(&self) -> Box<dyn Fn() + Send + Sync> {
        let interrupts = self.interrupts.clone();
        Box::new(move || {
            {
                let mut i = interrupts.lock().unwrap_or_else(|e| e.into_inner());
                i.config_generation = i.config_generation.wrapping_add(1);
            }
            InterruptHandle(interrupts.clone()).notify_config();
        })
    }

    /// The VM runs again: the device resumes what an error policy
    /// stopped (virtio-blk retries its requests).
    pub fn vm_running(&mut self) {
        if self.status & STATUS_DRIVER_OK != 0 {
            self.device.vm_running();
        }
    }

    /// The VM stopped: the device finishes what is in flight and starts
    /// nothing new until it runs again.
    pub fn vm_stopped(&mut self) {
        if self.status & STATUS_DRIVER_OK != 0 {
            self.device.vm_stopped();
        }
    }

    fn broken(&self) -> bool {
        self.interrupts().broken
    }

    /// The driver runs the device (DRIVER_OK, not broken).
    fn running(&self) -> bool {
        self.status & STATUS_DRIVER_OK != 0 && !self.broken()
    }

    /// Has KVM signal the kicks on writes to the notify registers while
    /// the device runs and their BAR is mapped; else the transport
    /// signals them from its notify handlers.
    fn sync_ioevents(&mut self) {
        self.sync_modern_ioevents();
        self.sync_legacy_ioevents();
    }

    fn sync_modern_ioevents(&mut self) {
        let want = match self.bar4 {
            Some(bar) if self.running() => Some(bar + NOTIFY_OFFSET),
            _ => None,
        };
        if want == self.ioevents_at {
            return;
        }
        let Some(reg) = self.ioevents.clone() else {
            return;
        };
        let step = u64::from(NOTIFY_MULTIPLIER);
        if let Some(old) = self.ioevents_at.take() {
            for (i, k) in self.kicks.iter().enumerate() {
                // The VM the kicks were registered with may be gone.
                let _ = reg.unregister_mmio(old + i as u64 * step, k);
            }
        }
        let Some(base) = want else {
            return;
        };
        for (i, k) in self.kicks.iter().enumerate() {
            if reg.register_mmio(base + i as u64 * step, k).is_err() {
                for (j, k) in self.kicks.iter().enumerate().take(i) {
                    let _ = reg.unregister_mmio(base + j as u64 * step, k);
                }
                return;
            }
        }
        self.ioevents_at = Some(base);
    }

    fn interrupts(&self) -> std::sync::MutexGuard<'_, Interrupts> {
        self.interrupts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reset(&mut self) {
        self.device.reset();
        self.status = 0;
        self.suspended = false;
        self.sync_ioevents();
        for k in &self.kicks {
            // A kick left from before the reset means nothing now.
            let _ = k.read();
        }
        self.driver_features = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.queue_select = 0;
        for q in &mut self.queues {
            *q = QueueRegs {
                size: q.max_size,
                max_size: q.max_size,
                ..Default::default()
            };
        }
        let mut i = self.interrupts();
        i.config_vector = NO_VECTOR;
        i.queue_vectors.iter_mut().for_each(|v| *v = NO_VECTOR);
        i.isr = 0;
        i.broken = false;
        i.intx.set_level(false);
    }

    fn activate(&mut self) {
        let mut queues = Vec::with_capacity(self.queues.len());
        let event_idx = self.driver_features & super::VIRTIO_RING_F_EVENT_IDX != 0;
        for regs in &self.queues {
            // A queue the driver left alone still needs a place.
            let mut q = match Queue::new(regs.max_size) {
                Ok(q) => q,
                Err(_) => return self.mark_broken("a queue size the device cannot take"),
            };
            q.set_size(regs.size);
            q.set_desc_table_address(Some(regs.desc as u32), Some((regs.desc >> 32) as u32));
            q.set_avail_ring_address(Some(regs.driver as u32), Some((regs.driver >> 32) as u32));
            q.set_used_ring_address(Some(regs.device as u32), Some((regs.device >> 32) as u32));
            q.set_event_idx(event_idx);
            q.set_ready(regs.enable);
            if regs.enable && !q.is_valid(&self.mem) {
                return self.mark_broken("a queue outside guest memory");
            }
            queues.push(q);
        }
        let handle = Arc::new(InterruptHandle(self.interrupts.clone()));
        self.device
            .activate(self.mem.clone(), queues, handle, self.kicks.clone());
        if !self.bus_master_seen {
            // A driver that starts the device without bus mastering gets
            // no DMA until it turns it on.
            self.device.bus_master(false);
        }
        self.sync_ioevents();
    }

    /// Where the PCI_CFG window points in BAR 4 and how wide it is: 1, 2
    /// or 4 bytes (as QEMU, other lengths do nothing; only the modern
    /// BAR is reachable).
    fn pci_cfg_window(&self) -> Option<(u64, usize)> {
        let bar = self.config.u8(PCI_CFG_CAP + 4);
        let off = u64::from(self.config.u32(PCI_CFG_CAP + 8));
        let len = self.config.u32(PCI_CFG_CAP + 12) as usize;
        (bar == 4 && matches!(len, 1 | 2 | 4) && off + len as u64 <= BAR4_SIZE)
            .then_some((off, len))
    }

    /// The driver changed the command register: bus mastering on or off
    /// reaches the device (no guest memory access while off) and MSI-X.
    /// Turning it off under a running device takes DRIVER_OK back, as
    /// QEMU's virtio-pci does: the device then waits, its queues as they
    /// were, until the driver sets DRIVER_OK again.
    fn sync_bus_master(&mut self) {
        let on = self.config.u16(config::COMMAND) & config::COMMAND_MASTER != 0;
        if on == self.bus_master_seen {
            return;
        }
        self.bus_master_seen = on;
        let mut i = self.interrupts();
        i.bus_master = on;
        i.flush_pending();
        drop(i);
        if self.status & STATUS_DRIVER_OK != 0 {
            self.device.bus_master(on);
            if !on {
                self.status &= !STATUS_DRIVER_OK;
                self.suspended = true;
                self.sync_ioevents();
            }
        }
    }

    fn mark_broken(&mut self, why: &str) {
        InterruptHandle(self.interrupts.clone()).device_broken(why);
        self.sync_ioevents();
    }

    fn common_read(&mut self, offset: u64) -> u32 {
        let q = self.queues.get(usize::from(self.queue_select)).copied();
        let i = self.interrupts();
        let qv = i.queue_vectors.get(usize::from(self.queue_select)).copied();
        let config_vector = i.config_vector;
        drop(i);
        let features = self.device.features();
        match offset {
            0x00 => self.device_feature_select,
            0x04 => match self.device_feature_select {
                0 => features as u32,
                1 => (features >> 32) as u32,
                _ => 0,
            },
            0x08 => self.driver_feature_select,
            0x0c => match self.driver_feature_select {
                0 => self.driver_features as u32,
                1 => (self.driver_features >> 32) as u32,
                _ => 0,
            },
            0x10 => u32::from(config_vector),
            0x12 => self.queues.len() as u32,
            0x14 => u32::from(self.device_status()),
            0x15 => u32::from(self.interrupts().config_generation),
            0x16 => u32::from(self.queue_select),
            0x18 => q.map_or(0, |q| u32::from(q.size)),
            0x1a => u32::from(qv.unwrap_or(NO_VECTOR)),
            0x1c => q.map_or(0, |q| u32::from(q.enable)),
            0x1e => u32::from(self.queue_select),
            0x20 => q.map_or(0, |q| q.desc as u32),
            0x24 => q.map_or(0, |q| (q.desc >> 32) as u32),
            0x28 => q.map_or(0, |q| q.driver as u32),
            0x2c => q.map_or(0, |q| (q.driver >> 32) as u32),
            0x30 => q.map_or(0, |q| q.device as u32),
            0x34 => q.map_or(0, |q| (q.device >> 32) as u32),
            _ => 0,
        }
    }

    fn common_write(&mut self, offset: u64, value: u32) {
        let sel = usize::from(self.queue_select);
        let set_half = |v: &mut u64, high: bool| {
            if high {
                *v = (*v & 0xffff_ffff) | (u64::from(value) << 32);
            } else {
                *v = (*v & !0xffff_ffff) | u64::from(value);
            }
        };
        // Queue registers change only before the driver is done.
        let live = self.status & STATUS_DRIVER_OK != 0;
        match offset {
            0x00 => self.device_feature_select = value,
            0x08 => self.driver_feature_select = value,
            0x0c if self.status & STATUS_FEATURES_OK == 0 => match self.driver_feature_select {
                0 => {
                    self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value)
                }
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                }
                _ => {}
            },
            0x10 => self.set_config_vector(value),
            0x14 => self.write_status(value as u8),
            0x16 => self.queue_select = value as u16,
            0x18 if !live => {
                if let Some(q) = self.queues.get_mut(sel) {
                    // Split rings: a power of two, at most the maximum.
                    let size = value as u16;
                    if size.is_power_of_two() && size <= q.max_size {
                        q.size = size;
                    }
                }
            }
            0x1a => self.set_queue_vector(value),
            0x1c if !live => {
                if let Some(q) = self.queues.get_mut(sel) {
                    q.enable = value == 1;
                }
            }
            0x20 | 0x24 if !live => {
                if let Some(q) = self.queues.get_mut(sel) {
                    set_half(&mut q.desc, offset == 0x24);
                }
            }
            0x28 | 0x2c if !live => {
                if let Some(q) = self.queues.get_mut(sel) {
                    set_half(&mut q.driver, offset == 0x2c);
                }
            }
            0x30 | 0x34 if !live => {
                if let Some(q) = self.queues.get_mut(sel) {
                    set_half(&mut q.device, offset == 0x34);
                }
            }
            _ => {}
        }
    }

    /// The configuration interrupt's MSI-X vector; one the table does
    /// not have reads back as NO_VECTOR, so the driver sees the failure.
    fn set_config_vector(&mut self, value: u32) {
        let mut i = self.interrupts();
        let n = i.table.len() as u32;
        i.config_vector = if value < n { value as u16 } else { NO_VECTOR };
    }

    /// The selected queue's MSI-X vector, as `set_config_vector`.
    fn set_queue_vector(&mut self, value: u32) {
        let sel = usize::from(self.queue_select);
        let mut i = self.interrupts();
        let n = i.table.len() as u32;
        if let Some(v) = i.queue_vectors.get_mut(sel) {
            *v = if value < n { value as u16 } else { NO_VECTOR };
        }
    }

    /// The status as the driver reads it: NEEDS_RESET while broken.
    fn device_status(&self) -> u8 {
        let needs_reset = if self.broken() { STATUS_NEEDS_RESET } else { 0 };
        self.status | needs_reset
    }

    /// Reading the ISR acknowledges it and lowers INTx.
    fn take_isr(&self) -> u8 {
        let mut i = self.interrupts();
        i.intx.set_level(false);
        std::mem::take(&mut i.isr)
    }

    /// A legacy driver runs the device: one that never negotiated
    /// VERSION_1 (and so never set FEATURES_OK) on a transitional device.
    fn legacy_driver(&self) -> bool {
        self.legacy
            && self.driver_features & super::VIRTIO_F_VERSION_1 == 0
            && self.status & STATUS_FEATURES_OK == 0
    }

    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let was = self.status;
        let mut status = value;
        if value & STATUS_FEATURES_OK != 0 && was & STATUS_FEATURES_OK == 0 {
            let offered = self.device.features();
            // Accepting what was not offered, or a legacy driver: refuse.
            if self.driver_features & !offered != 0
                || self.driver_features & super::VIRTIO_F_VERSION_1 == 0
            {
                status &= !STATUS_FEATURES_OK;
            } else {
                self.device.ack_features(self.driver_features);
            }
        }
        self.status = status & !STATUS_NEEDS_RESET;
        if status & STATUS_DRIVER_OK != 0 && was & STATUS_DRIVER_OK == 0 && self.suspended {
            // Back from a bus-master clear: the same device goes on.
            self.suspended = false;
            if self.bus_master_seen {
                self.device.bus_master(true);
            }
        } else if status & STATUS_DRIVER_OK != 0 && was & STATUS_DRIVER_OK == 0 && !self.broken() {
            if self.legacy_driver() {
                // Legacy drivers have no FEATURES_OK step: what they
                // wrote last is what they use.
                self.device.ack_features(self.driver_features);
            }
            self.activate();
        }
        // A driver that took DRIVER_OK back gets no more kicks through KVM.
        self.sync_ioevents();
    }

    fn msix_read(&self, offset: u64, data: &mut [u8]) {
        let i = self.interrupts();
        let mut value = 0u64;
        if offset >= MSIX_PBA_OFFSET {
            let base = ((offset - MSIX_PBA_OFFSET) * 8) as usize;
            for (bit, p) in i.pending.iter().enumerate().skip(base).take(64) {
                if *p {
                    value |= 1 << (bit - base);
                }
            }
        } else {
            let entry = (offset / 16) as usize;
            if let Some(e) = i.table.get(entry) {
                value = match offset % 16 {
                    0 => e.address & 0xffff_ffff,
                    4 => e.address >> 32,
                    8 => u64::from(e.data),
                    12 => u64::from(e.masked),
                    _ => 0,
                };
            }
        }
        let bytes = value.to_le_bytes();
        for (k, b) in data.iter_mut().enumerate() {
            *b = bytes.get(k).copied().unwrap_or(0);
        }
    }

    fn msix_write(&mut self, offset: u64, data: &[u8]) {
        if offset >= MSIX_PBA_OFFSET {
            return; // read-only
        }
        let mut v = [0u8; 4];
        let n = data.len().min(4);
        v[..n].copy_from_slice(&data[..n]);
        let value = u32::from_le_bytes(v);
        let mut i = self.interrupts();
        let entry = (offset / 16) as usize;
        let Some(e) = i.table.get_mut(entry) else {
            return;
        };
        match offset % 16 {
            0 => e.address = (e.address & !0xffff_ffff) | u64::from(value),
            4 => e.address = (e.address & 0xffff_ffff) | (u64::from(value) << 32),
            8 => e.data = value,
            12 => e.masked = value & 1 != 0,
            _ => {}
        }
        i.flush_pending();
    }

    /// Re-reads the MSI-X enable and mask bits after a config write.
    fn sync_msix_control(&mut self) {
        let control = self.config.u16(MSIX_CAP + 2);
        let mut i = self.interrupts();
        i.msix_enabled = control & MSIX_ENABLE != 0;
        i.function_masked = control & MSIX_FUNCTION_MASK != 0;
        if i.msix_enabled {
            i.intx.set_level(false);
        }
        i.flush_pending();
    }
}

impl PciFunction for VirtioPci {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn config_written(&mut self, offset: usize, len: usize) {
        if offset < MSIX_CAP + 4 && offset + len > MSIX_CAP + 2 {
            self.sync_msix_control();
        }
        if offset < PCI_CFG_DATA + 4 && offset + len > PCI_CFG_DATA {
            if let Some((off, n)) = self.pci_cfg_window() {
                let mut data = [0u8; 4];
                self.config.read(PCI_CFG_DATA, &mut data);
                self.bar_write(4, off, &data[..n]);
            }
        }
        if offset < config::COMMAND + 2 && offset + len > config::COMMAND {
            self.sync_bus_master();
        }
    }

    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        if offset < PCI_CFG_DATA + 4 && offset + data.len() > PCI_CFG_DATA {
            if let Some((off, n)) = self.pci_cfg_window() {
                let mut window = [0u8; 4];
                self.bar_read(4, off, &mut window[..n]);
                for (i, b) in window.iter().enumerate() {
                    self.config.set_u8(PCI_CFG_DATA + i, *b);
                }
            }
        }
        self.config.read(offset, data);
    }

    fn bars_mapped(&mut self, mapped: &[Option<u64>; 6]) {
        self.bar0 = if self.legacy { mapped[0] } else { None };
        self.bar4 = mapped[4];
        self.sync_ioevents();
    }

    fn class_description(&self) -> Option<&'static str> {
        match self.device.device_type() {
            2 => Some("SCSI controller"),
            1 => Some("Ethernet controller"),
            _ => None,
        }
    }

    fn qdev_id(&self) -> &str {
        &self.qdev_id
    }

    fn reset(&mut self) {
        VirtioPci::reset(self);
        self.config = self.initial_config.clone();
        self.sync_msix_control();
        self.bus_master_seen = false;
        self.suspended = false;
        self.interrupts().bus_master = false;
        let mut i = self.interrupts();
        i.table.iter_mut().for_each(|e| {
            *e = MsixEntry {
                masked: true,
                ..Default::default()
            }
        });
        i.pending.iter_mut().for_each(|p| *p = false);
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match (bar, offset) {
            (0, o) if self.legacy => self.legacy_read(o, data),
            (1, o) => self.msix_read(o, data),
            (4, o) if o < ISR_OFFSET => {
                let v = self.common_read(o);
                for (k, b) in data.iter_mut().enumerate() {
                    *b = (v >> (8 * k)) as u8;
                }
            }
            (4, o) if o < DEVICE_OFFSET => {
                let isr = self.take_isr();
                if let Some(b) = data.first_mut() {
                    *b = isr;
                }
            }
            (4, o) if o < NOTIFY_OFFSET => self.device.read_config(o - DEVICE_OFFSET, data),
            _ => {}
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        match (bar, offset) {
            (0, o) if self.legacy => self.legacy_write(o, data),
            (1, o) => self.msix_write(o, data),
            (4, o) if o < ISR_OFFSET => {
                let mut v = [0u8; 4];
                let n = data.len().min(4);
                v[..n].copy_from_slice(&data[..n]);
                self.common_write(o, u32::from_le_bytes(v));
            }
            (4, o) if (DEVICE_OFFSET..NOTIFY_OFFSET).contains(&o) => {
                self.device.write_config(o - DEVICE_OFFSET, data);
            }
            (4, o) if o >= NOTIFY_OFFSET => {
                // Reached only where KVM does not signal the kick itself.
                let index = ((o - NOTIFY_OFFSET) / u64::from(NOTIFY_MULTIPLIER)) as usize;
                if self.broken() || self.status & STATUS_DRIVER_OK == 0 {
                    return;
                }
                match self.kicks.get(index) {
                    Some(k) => {
                        let _ = k.write(1);
                    }
                    None => {
                        self.mark_broken(&format!("notify for queue {index}, which does not exist"))
                    }
                }
            }
            _ => {}
        }
    }
}

impl crate::state::DeviceState for VirtioPci {
    fn state_name(&self) -> &'static str {
        "virtio-pci"
    }

    fn save_state(&self) -> Result<Vec<u8>, crate::state::StateError> {
        Err(crate::state::StateError::NotMigratable(
            "virtio devices cannot be migrated yet (their queue state is not saved)".into(),
        ))
    }

    fn load_state(&mut self, _data: &[u8]) -> Result<(), crate::state::StateError> {
        Err(crate::state::StateError::NotMigratable(
            "virtio devices cannot be migrated yet (their queue state is not restored)".into(),
        ))
    }
}
