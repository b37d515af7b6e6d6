//! A polled virtio PCI driver for virtio-blk: finds the device on bus 0,
//! sets up one split queue in low memory and runs requests to completion
//! by polling the used ring (interrupts stay off). `probe` drives it
//! through the virtio 1.0 capabilities (VERSION_1), `probe_legacy`
//! through a transitional device's legacy registers in I/O BAR 0.

use crate::x86::{
    inb, inl, inw, mmio_rd32, mmio_wr16, mmio_wr32, mmio_wr64, mmio_wr8, outb, outl, outw, rd16,
    rd32, rd8,
};
use core::sync::atomic::{fence, Ordering};

/// Where the queue and buffers live (inside the RAM the guest requires).
const RING_BASE: u64 = 0x600000;
const DESC: u64 = RING_BASE;
const AVAIL: u64 = RING_BASE + 0x1000;
const USED: u64 = RING_BASE + 0x2000;
const HEADER: u64 = RING_BASE + 0x3000;
const STATUS: u64 = RING_BASE + 0x3100;
/// An indirect descriptor table (three entries) for `request_indirect`.
const INDIRECT_TABLE: u64 = RING_BASE + 0x3200;
const F_INDIRECT_DESC: u32 = 1 << 28;
pub const DATA: u64 = RING_BASE + 0x4000;
pub const DATA_MAX: usize = 0x10000;
const QUEUE_SIZE: u16 = 16;

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;

fn cfg_addr(slot: u32, reg: u32) -> u32 {
    0x8000_0000 | slot << 11 | (reg & 0xfc)
}

fn cfg_read(slot: u32, reg: u32) -> u32 {
    outl(0xcf8, cfg_addr(slot, reg));
    inl(0xcfc)
}

fn cfg_write(slot: u32, reg: u32, v: u32) {
    outl(0xcf8, cfg_addr(slot, reg));
    outl(0xcfc, v);
}

/// Device IDs: modern-only, and transitional (legacy ID 0x1000 + 2 - 1).
const ID_MODERN: u32 = 0x1042_1af4;
const ID_TRANSITIONAL: u32 = 0x1001_1af4;

/// Legacy register block (I/O BAR 0), MSI-X off.
const L_HOST_FEATURES: u16 = 0;
const L_GUEST_FEATURES: u16 = 4;
const L_QUEUE_PFN: u16 = 8;
const L_QUEUE_NUM: u16 = 12;
const L_QUEUE_SEL: u16 = 14;
const L_QUEUE_NOTIFY: u16 = 16;
const L_STATUS: u16 = 18;
const L_CONFIG: u16 = 20;

/// How the driver reaches the device.
enum Iface {
    /// Common and device configuration, and queue 0's notify address
    /// (MMIO in BAR 4).
    Modern {
        common: u64,
        device: u64,
        notify: u64,
    },
    /// The legacy registers' first I/O port.
    Legacy { io: u16 },
}

pub struct Blk {
    iface: Iface,
    pub capacity: u64,
    /// Size of queue 0 (16 for `probe`, up to 256 for `probe_sized`, the
    /// device's own for `probe_legacy`).
    pub(crate) qsize: u16,
    /// Queue 0's available and used rings (the descriptors are at DESC).
    avail: u64,
    used: u64,
    avail_idx: u16,
    used_seen: u16,
    /// The device offered indirect descriptors and the driver took them.
    pub indirect: bool,
    /// The function's slot on bus 0.
    slot: u32,
}

/// MSI-X of a probed device: the table and pending bits, mapped.
pub struct Msix {
    table: u64,
    pba: u64,
}

impl Msix {
    /// Entry `n` masked or not.
    pub fn set_masked(&self, n: u64, masked: bool) {
        crate::x86::mmio_wr32(self.table + 16 * n + 12, u32::from(masked));
    }

    /// Whether entry `n`'s pending bit is set.
    pub fn pending(&self, n: u64) -> bool {
        crate::x86::mmio_rd32(self.pba + 4 * (n / 32)) & (1 << (n % 32)) != 0
    }
}

/// The split queue's rings (queue 0), for drivers that run their own
/// requests on it (the `virtio-blk-bench` workload).
pub const RING_DESC: u64 = DESC;
pub const RING_AVAIL: u64 = AVAIL;
pub const RING_USED: u64 = USED;

fn mmio_rd8(pa: u64) -> u8 {
    unsafe { core::ptr::read_volatile(pa as *const u8) }
}

fn mmio_rd16(pa: u64) -> u16 {
    unsafe { core::ptr::read_volatile(pa as *const u16) }
}

/// The slot of the first virtio-blk-pci on bus 0, modern-only or
/// transitional, with I/O and memory decoding and bus mastering on (as
/// firmware leaves them).
fn find_blk() -> Result<u32, &'static str> {
    let slot = (0..32u32)
        .find(|s| matches!(cfg_read(*s, 0), ID_MODERN | ID_TRANSITIONAL))
        .ok_or("no virtio-blk-pci (1af4:1042 or 1af4:1001) on bus 0")?;
    let cmd = cfg_read(slot, 4);
    cfg_write(slot, 4, (cmd & 0xffff) | 0x7);
    Ok(slot)
}

impl Blk {
    /// Finds and initialises the first virtio-blk on bus 0 through its
    /// virtio 1.0 capabilities.
    pub fn probe() -> Result<Blk, &'static str> {
        Self::probe_sized(QUEUE_SIZE)
    }

    /// As `probe`, with queue 0 of `want` entries (a power of two up to
    /// 256), or the device's maximum if that is smaller.
    pub fn probe_sized(want: u16) -> Result<Blk, &'static str> {
        let slot = find_blk()?;
        let bar = |i: u32| -> u64 {
            let lo = cfg_read(slot, 0x10 + 4 * i);
            let hi = if lo & 0x4 != 0 {
                cfg_read(slot, 0x14 + 4 * i)
            } else {
                0
            };
            u64::from(lo & !0xf) | (u64::from(hi) << 32)
        };
        let (mut common, mut device, mut notify, mut mult) = (0, 0, 0, 0);
        let mut cap = cfg_read(slot, 0x34) & 0xfc;
        let mut guard = 0;
        while cap != 0 && guard < 48 {
            let head = cfg_read(slot, cap);
            if head & 0xff == 0x09 {
                let kind = (head >> 24) & 0xff;
                let bar_index = cfg_read(slot, cap + 4) & 0xff;
                let addr = bar(bar_index) + u64::from(cfg_read(slot, cap + 8));
                match kind {
                    1 => common = addr,
                    2 => {
                        notify = addr;
                        mult = cfg_read(slot, cap + 16);
                    }
                    4 => device = addr,
                    _ => {}
                }
            }
            cap = (head >> 8) & 0xfc;
            guard += 1;
        }
        if common == 0 || notify == 0 || device == 0 {
            return Err("virtio capabilities missing");
        }
        // Reset, acknowledge, driver.
        mmio_wr8(common + 0x14, 0);
        mmio_wr8(common + 0x14, 1 | 2);
        mmio_wr32(common + 0x00, 1);
        let features_hi = mmio_rd32(common + 0x04);
        if features_hi & 1 == 0 {
            return Err("device does not offer VERSION_1");
        }
        mmio_wr32(common + 0x00, 0);
        let indirect = mmio_rd32(common + 0x04) & F_INDIRECT_DESC != 0;
        mmio_wr32(common + 0x08, 0);
        mmio_wr32(common + 0x0c, if indirect { F_INDIRECT_DESC } else { 0 });
        mmio_wr32(common + 0x08, 1);
        mmio_wr32(common + 0x0c, 1); // VERSION_1
        mmio_wr8(common + 0x14, 1 | 2 | 8);
        if mmio_rd8(common + 0x14) & 8 == 0 {
            return Err("FEATURES_OK not accepted");
        }
        // Queue 0.
        mmio_wr16(common + 0x16, 0);
        let max = mmio_rd16(common + 0x18);
        if max < QUEUE_SIZE {
            return Err("queue too small");
        }
        let mut qsize = want.clamp(QUEUE_SIZE, 256);
        while qsize > max {
            qsize /= 2;
        }
        mmio_wr16(common + 0x18, qsize);
        let notify_off = u64::from(mmio_rd16(common + 0x1e));
        unsafe {
            core::ptr::write_bytes(RING_BASE as *mut u8, 0, 0x3000);
        }
        mmio_wr64(common + 0x20, DESC);
        mmio_wr64(common + 0x28, AVAIL);
        mmio_wr64(common + 0x30, USED);
        mmio_wr16(common + 0x1c, 1);
        mmio_wr8(common + 0x14, 1 | 2 | 8 | 4);
        let capacity = u64::from(mmio_rd32(device)) | (u64::from(mmio_rd32(device + 4)) << 32);
        Ok(Blk {
            iface: Iface::Modern {
                common,
                device,
                notify: notify + notify_off * u64::from(mult),
            },
            capacity,
            qsize,
            avail: AVAIL,
            used: USED,
            avail_idx: 0,
            used_seen: 0,
            indirect,
            slot,
        })
    }

    /// Finds the first transitional virtio-blk (1af4:1001, subsystem
    /// 0002) on bus 0 and initialises it as a legacy driver would: no
    /// VERSION_1 (features: `accept` & what the device offers), queue 0
    /// at the device's size in the legacy layout at DESC, MSI-X off.
    /// Returns the driver and the features the device offered.
    pub fn probe_legacy(accept: u32) -> Result<(Blk, u32), &'static str> {
        let slot = find_blk()?;
        if cfg_read(slot, 0) != ID_TRANSITIONAL || cfg_read(slot, 0x2c) >> 16 != 2 {
            return Err("virtio-blk-pci has no legacy interface");
        }
        let bar0 = cfg_read(slot, 0x10);
        if bar0 & 1 == 0 || bar0 & !3 == 0 || bar0 > 0xffff {
            return Err("BAR 0 is not an I/O BAR in use");
        }
        let io = (bar0 & !3) as u16;
        // Reset, acknowledge, driver.
        outb(io + L_STATUS, 0);
        outb(io + L_STATUS, 1);
        outb(io + L_STATUS, 1 | 2);
        let offered = inl(io + L_HOST_FEATURES);
        outl(io + L_GUEST_FEATURES, offered & accept);
        // Queue 0: its size is the device's; the rings must fit below
        // HEADER.
        outw(io + L_QUEUE_SEL, 0);
        let qsize = inw(io + L_QUEUE_NUM);
        if qsize == 0 || qsize > 256 || !qsize.is_power_of_two() {
            return Err("legacy queue 0 size is not a power of two up to 256");
        }
        unsafe {
            core::ptr::write_bytes(RING_BASE as *mut u8, 0, 0x3000);
        }
        outl(io + L_QUEUE_PFN, (DESC >> 12) as u32);
        let avail = DESC + 16 * u64::from(qsize);
        let used = (avail + 4 + 2 * u64::from(qsize)).next_multiple_of(4096);
        outb(io + L_STATUS, 1 | 2 | 4);
        let mut blk = Blk {
            iface: Iface::Legacy { io },
            capacity: 0,
            qsize,
            avail,
            used,
            avail_idx: 0,
            used_seen: 0,
            indirect: false,
            slot,
        };
        blk.capacity = blk.read_capacity();
        Ok((blk, offered))
    }

    /// Turns MSI-X on with entry 0 aimed at APIC 0, `vector`, masked, and
    /// queue 0's interrupt on entry 0 (a device probed as modern).
    pub fn msix_setup(&mut self, vector: u8) -> Result<Msix, &'static str> {
        let Iface::Modern { common, .. } = self.iface else {
            return Err("MSI-X setup needs the modern interface");
        };
        let mut cap = cfg_read(self.slot, 0x34) & 0xfc;
        let mut guard = 0;
        while cap != 0 && cfg_read(self.slot, cap) & 0xff != 0x11 {
            cap = (cfg_read(self.slot, cap) >> 8) & 0xfc;
            guard += 1;
            if guard > 48 {
                return Err("PCI capability list loops");
            }
        }
        if cap == 0 {
            return Err("no MSI-X capability");
        }
        let bar = |bir: u32| -> u64 {
            let lo = cfg_read(self.slot, 0x10 + 4 * bir);
            let mut a = u64::from(lo & !0xf);
            if lo & 0x6 == 0x4 {
                a |= u64::from(cfg_read(self.slot, 0x14 + 4 * bir)) << 32;
            }
            a
        };
        let t = cfg_read(self.slot, cap + 4);
        let p = cfg_read(self.slot, cap + 8);
        let msix = Msix {
            table: bar(t & 7) + u64::from(t & !7),
            pba: bar(p & 7) + u64::from(p & !7),
        };
        // Entry 0: fixed delivery to APIC 0, masked until the test says.
        crate::x86::mmio_wr32(msix.table, 0xfee0_0000);
        crate::x86::mmio_wr32(msix.table + 4, 0);
        crate::x86::mmio_wr32(msix.table + 8, u32::from(vector));
        msix.set_masked(0, true);
        let control = cfg_read(self.slot, cap);
        cfg_write(self.slot, cap, control | (1 << 31));
        mmio_wr16(common + 0x10, 0xffff); // no configuration interrupt
        mmio_wr16(common + 0x16, 0);
        mmio_wr16(common + 0x1a, 0); // queue 0 -> entry 0
        Ok(msix)
    }

    /// The legacy registers' I/O port, for a device probed as legacy.
    pub fn legacy_port(&self) -> Option<u16> {
        match self.iface {
            Iface::Legacy { io } => Some(io),
            Iface::Modern { .. } => None,
        }
    }

    /// Asks the device for no interrupts on queue 0 (avail flags:
    /// VRING_AVAIL_F_NO_INTERRUPT).
    pub fn suppress_interrupts(&self) {
        unsafe { core::ptr::write_volatile(self.avail as *mut u16, 1) };
        fence(Ordering::SeqCst);
    }

    /// Reads (and so clears) the legacy ISR status.
    pub fn legacy_isr(&self) -> u8 {
        match self.iface {
            Iface::Legacy { io } => inb(io + 19),
            Iface::Modern { .. } => 0,
        }
    }

    /// The features the driver wrote (legacy: what the device kept).
    pub fn legacy_guest_features(&self) -> u32 {
        match self.iface {
            Iface::Legacy { io } => inl(io + L_GUEST_FEATURES),
            Iface::Modern { .. } => 0,
        }
    }

    /// Queue 0's page frame number as the device reads it back (legacy).
    pub fn legacy_queue_pfn(&self) -> u32 {
        match self.iface {
            Iface::Legacy { io } => {
                outw(io + L_QUEUE_SEL, 0);
                inl(io + L_QUEUE_PFN)
            }
            Iface::Modern { .. } => 0,
        }
    }

    /// Writes the device status (0 resets the device).
    pub fn set_device_status(&self, v: u8) {
        match self.iface {
            Iface::Modern { common, .. } => mmio_wr8(common + 0x14, v),
            Iface::Legacy { io } => outb(io + L_STATUS, v),
        }
    }

    /// The configuration generation (legacy devices have none: 0).
    pub fn config_generation(&self) -> u8 {
        match self.iface {
            Iface::Modern { common, .. } => mmio_rd8(common + 0x15),
            Iface::Legacy { .. } => 0,
        }
    }

    /// The capacity (sectors) as the device configuration says now.
    pub fn read_capacity(&self) -> u64 {
        u64::from(self.config_u32(0)) | (u64::from(self.config_u32(4)) << 32)
    }

    pub fn device_status(&self) -> u8 {
        match self.iface {
            Iface::Modern { common, .. } => mmio_rd8(common + 0x14),
            Iface::Legacy { io } => inb(io + L_STATUS),
        }
    }

    pub fn config_u32(&self, off: u64) -> u32 {
        match self.iface {
            Iface::Modern { device, .. } => mmio_rd32(device + off),
            Iface::Legacy { io } => inl(io + L_CONFIG + off as u16),
        }
    }

    /// Notifies queue 0.
    pub fn kick(&self) {
        match self.iface {
            Iface::Modern { notify, .. } => mmio_wr16(notify, 0),
            Iface::Legacy { io } => outw(io + L_QUEUE_NOTIFY, 0),
        }
    }

    fn desc(i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        Self::desc_in(DESC, i, addr, len, flags, next)
    }

    fn desc_in(table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = table + u64::from(i) * 16;
        unsafe {
            core::ptr::write_volatile(d as *mut u64, addr);
            core::ptr::write_volatile((d + 8) as *mut u32, len);
            core::ptr::write_volatile((d + 12) as *mut u16, flags);
            core::ptr::write_volatile((d + 14) as *mut u16, next);
        }
    }

    /// Submits a chain the device must refuse and returns without waiting:
    /// `outside` puts the data buffer far outside RAM, otherwise the chain
    /// loops back on itself.
    pub fn submit_hostile(&mut self, outside: bool) {
        const NEXT: u16 = 1;
        const WRITE: u16 = 2;
        Self::desc(0, HEADER, 16, NEXT, 1);
        if outside {
            Self::desc(1, 0x7fff_ffff_0000, 4096, NEXT | WRITE, 2);
            Self::desc(2, STATUS, 1, WRITE, 0);
        } else {
            Self::desc(1, DATA, 512, NEXT | WRITE, 0);
        }
        unsafe {
            core::ptr::write_volatile(HEADER as *mut u32, T_IN);
        }
        self.publish_head0();
        self.kick();
    }

    /// Makes descriptor 0's chain available to the device.
    fn publish_head0(&mut self) {
        let slot = u64::from(self.avail_idx % self.qsize);
        unsafe {
            core::ptr::write_volatile((self.avail + 4 + 2 * slot) as *mut u16, 0);
        }
        self.avail_idx = self.avail_idx.wrapping_add(1);
        fence(Ordering::SeqCst);
        unsafe {
            core::ptr::write_volatile((self.avail + 2) as *mut u16, self.avail_idx);
        }
        fence(Ordering::SeqCst);
    }

    /// Runs one request: `len` bytes of data at DATA (device-writable for
    /// IN and GET_ID). Returns the status byte.
    pub fn request(&mut self, kind: u32, sector: u64, len: u32) -> Result<u8, &'static str> {
        self.request_in(DESC, kind, sector, len)
    }

    /// The same request through an indirect descriptor table (the ring
    /// holds one descriptor pointing at it).
    pub fn request_indirect(
        &mut self,
        kind: u32,
        sector: u64,
        len: u32,
    ) -> Result<u8, &'static str> {
        const INDIRECT: u16 = 4;
        Self::desc(0, INDIRECT_TABLE, 3 * 16, INDIRECT, 0);
        self.request_in(INDIRECT_TABLE, kind, sector, len)
    }

    /// Writes the chain header -> [data ->] status into `table` at 0..3
    /// and runs it (from descriptor 0 of the ring).
    fn request_in(
        &mut self,
        table: u64,
        kind: u32,
        sector: u64,
        len: u32,
    ) -> Result<u8, &'static str> {
        unsafe {
            core::ptr::write_volatile(HEADER as *mut u32, kind);
            core::ptr::write_volatile((HEADER + 4) as *mut u32, 0);
            core::ptr::write_volatile((HEADER + 8) as *mut u64, sector);
            core::ptr::write_volatile(STATUS as *mut u8, 0xff);
        }
        const NEXT: u16 = 1;
        const WRITE: u16 = 2;
        let device_writes = kind == T_IN || kind == T_GET_ID;
        // header -> [data ->] status
        Self::desc_in(table, 0, HEADER, 16, NEXT, if len > 0 { 1 } else { 2 });
        if len > 0 {
            Self::desc_in(
                table,
                1,
                DATA,
                len,
                NEXT | if device_writes { WRITE } else { 0 },
                2,
            );
        }
        Self::desc_in(table, 2, STATUS, 1, WRITE, 0);
        self.publish_head0();
        self.kick();
        self.wait_completion()
    }

    /// Whether the device has put the last request in the used ring.
    pub fn completed(&self) -> bool {
        rd16(self.used + 2) != self.used_seen
    }

    /// Waits for the request in flight; returns its status byte.
    pub fn wait_completion(&mut self) -> Result<u8, &'static str> {
        let target = self.used_seen.wrapping_add(1);
        let mut spins: u64 = 0;
        while rd16(self.used + 2) != target {
            spins += 1;
            if spins > 2_000_000_000 {
                return Err("request never completed");
            }
            core::hint::spin_loop();
        }
        self.used_seen = target;
        fence(Ordering::SeqCst);
        let _ = rd32(self.used + 4);
        Ok(rd8(STATUS))
    }

    /// Starts a read of `len` bytes at `sector` into DATA without waiting.
    pub fn start_read(&mut self, sector: u64, len: u32) {
        const NEXT: u16 = 1;
        const WRITE: u16 = 2;
        unsafe {
            core::ptr::write_volatile(HEADER as *mut u32, T_IN);
            core::ptr::write_volatile((HEADER + 4) as *mut u32, 0);
            core::ptr::write_volatile((HEADER + 8) as *mut u64, sector);
            core::ptr::write_volatile(STATUS as *mut u8, 0xff);
        }
        Self::desc(0, HEADER, 16, NEXT, 1);
        Self::desc(1, DATA, len, NEXT | WRITE, 2);
        Self::desc(2, STATUS, 1, WRITE, 0);
        self.publish_head0();
        self.kick();
    }

    /// The VIRTIO_PCI_CAP_PCI_CFG capability's offset in configuration
    /// space, if the function has one.
    pub fn pci_cfg_cap(&self) -> Option<u32> {
        let mut cap = cfg_read(self.slot, 0x34) & 0xfc;
        for _ in 0..48 {
            if cap == 0 {
                return None;
            }
            let head = cfg_read(self.slot, cap);
            if head & 0xff == 0x09 && (head >> 24) & 0xff == 5 {
                return Some(cap);
            }
            cap = (head >> 8) & 0xfc;
        }
        None
    }

    /// Points the PCI_CFG window at `len` bytes at `offset` of BAR 4.
    pub fn pci_cfg_point(&self, cap: u32, offset: u32, len: u32) {
        let bar_dword = cfg_read(self.slot, cap + 4);
        cfg_write(self.slot, cap + 4, (bar_dword & !0xff) | 4);
        cfg_write(self.slot, cap + 8, offset);
        cfg_write(self.slot, cap + 12, len);
    }

    pub fn pci_cfg_read(&self, cap: u32) -> u32 {
        cfg_read(self.slot, cap + 16)
    }

    pub fn pci_cfg_write(&self, cap: u32, v: u32) {
        cfg_write(self.slot, cap + 16, v);
    }

    /// A 16-bit register of the modern common configuration, by MMIO.
    pub fn common_rd16(&self, off: u64) -> u16 {
        match self.iface {
            Iface::Modern { common, .. } => mmio_rd16(common + off),
            Iface::Legacy { .. } => 0,
        }
    }

    /// Turns the function's bus mastering on or off (PCI command bit 2).
    pub fn set_bus_master(&self, on: bool) {
        let cmd = cfg_read(self.slot, 4) & 0xffff;
        let cmd = if on { cmd | 4 } else { cmd & !4 };
        cfg_write(self.slot, 4, cmd);
    }
}
