//! The legacy interface of a transitional device (virtio 1.0 spec,
//! 4.1.4.8): a register block in I/O BAR 0, guest-endian (little endian
//! on x86), where each queue is one page frame number and its rings lie
//! in the legacy layout (2.4.2). The same device serves it and the modern
//! interface; a legacy driver never negotiates VERSION_1, and the device
//! starts when it sets DRIVER_OK.

use super::{QueueRegs, VirtioPci, STATUS_DRIVER_OK, STATUS_FEATURES_OK};
use crate::pci::config;
use crate::virtio::{
    STATUS_ACKNOWLEDGE, STATUS_DRIVER, VIRTIO_F_ANY_LAYOUT, VIRTIO_F_BAD_FEATURE,
    VIRTIO_F_NOTIFY_ON_EMPTY,
};

/// Register offsets in BAR 0.
const HOST_FEATURES: u64 = 0;
const GUEST_FEATURES: u64 = 4;
const QUEUE_PFN: u64 = 8;
const QUEUE_NUM: u64 = 12;
const QUEUE_SEL: u64 = 14;
const QUEUE_NOTIFY: u64 = 16;
const STATUS: u64 = 18;
const ISR: u64 = 19;
/// These two exist only while MSI-X is enabled.
const CONFIG_VECTOR: u64 = 20;
const QUEUE_VECTOR: u64 = 22;
/// Where the device configuration starts, with MSI-X enabled and without.
pub(super) const CONFIG_OFFSET_MSIX: u64 = 24;
const CONFIG_OFFSET: u64 = 20;

/// A queue PFN counts 4 KiB pages; the used ring starts at the first
/// 4 KiB boundary after the available ring.
const PAGE_SHIFT: u32 = 12;
const RING_ALIGN: u64 = 4096;
/// QEMU's limit on queue numbers: a selector at or past it is ignored.
const QUEUE_MAX: u32 = 1024;

/// The rings of a legacy queue of `size` entries at page `pfn`:
/// (descriptor table, available ring, used ring).
fn legacy_ring_addresses(pfn: u32, size: u16) -> (u64, u64, u64) {
    let size = u64::from(size);
    let desc = u64::from(pfn) << PAGE_SHIFT;
    let avail = desc + 16 * size;
    // Flags, index and the ring; used_event fits before the boundary.
    let used = (avail + 4 + 2 * size).next_multiple_of(RING_ALIGN);
    (desc, avail, used)
}

impl VirtioPci {
    /// What a legacy driver is offered: the device's low 32 feature bits
    /// and the transport bits QEMU adds for every device.
    fn legacy_features(&self) -> u32 {
        let f = self.device.features()
            | VIRTIO_F_NOTIFY_ON_EMPTY
            | VIRTIO_F_ANY_LAYOUT
            | VIRTIO_F_BAD_FEATURE;
        f as u32
    }

    /// The device configuration follows the vector registers, which
    /// exist only while MSI-X is on.
    fn legacy_config_offset(&self) -> u64 {
        if self.interrupts().msix_enabled {
            CONFIG_OFFSET_MSIX
        } else {
            CONFIG_OFFSET
        }
    }

    pub(super) fn legacy_read(&mut self, offset: u64, data: &mut [u8]) {
        let config = self.legacy_config_offset();
        if offset >= config {
            self.device.read_config(offset - config, data);
            return;
        }
        let value = self.legacy_register(offset).to_le_bytes();
        for (b, v) in data.iter_mut().zip(value) {
            *b = v;
        }
    }

    /// The register that starts at `offset`; anything else reads as all
    /// ones, as in QEMU.
    fn legacy_register(&mut self, offset: u64) -> u32 {
        let sel = usize::from(self.queue_select);
        let queue = self.queues.get(sel).copied();
        match offset {
            HOST_FEATURES => self.legacy_features(),
            GUEST_FEATURES => self.driver_features as u32,
            QUEUE_PFN => queue.map_or(0, |q| (q.desc >> PAGE_SHIFT) as u32),
            // A queue that does not exist has size 0: how a legacy
            // driver counts them.
            QUEUE_NUM => queue.map_or(0, |q| u32::from(q.size)),
            QUEUE_SEL => u32::from(self.queue_select),
            STATUS => u32::from(self.device_status()),
            ISR => u32::from(self.take_isr()),
            CONFIG_VECTOR => u32::from(self.interrupts().config_vector),
            QUEUE_VECTOR => {
                let i = self.interrupts();
                u32::from(
                    i.queue_vectors
                        .get(sel)
                        .copied()
                        .unwrap_or(super::NO_VECTOR),
                )
            }
            _ => u32::MAX,
        }
    }

    pub(super) fn legacy_write(&mut self, offset: u64, data: &[u8]) {
        let config = self.legacy_config_offset();
        if offset >= config {
            self.device.write_config(offset - config, data);
            return;
        }
        let mut v = [0u8; 4];
        let n = data.len().min(4);
        v[..n].copy_from_slice(&data[..n]);
        let value = u32::from_le_bytes(v);
        match offset {
            GUEST_FEATURES => self.set_legacy_driver_features(value),
            QUEUE_PFN => self.set_queue_pfn(value),
            QUEUE_SEL if value < QUEUE_MAX => self.queue_select = value as u16,
            QUEUE_NOTIFY => self.legacy_notify(value),
            STATUS => self.write_legacy_status(value as u8),
            CONFIG_VECTOR => self.set_config_vector(value),
            QUEUE_VECTOR => self.set_queue_vector(value),
            // Host features, queue size and ISR are read-only.
            _ => {}
        }
    }

    /// The features a legacy driver accepts, all at once (32 bits).
    fn set_legacy_driver_features(&mut self, value: u32) {
        if self.status & (STATUS_DRIVER_OK | STATUS_FEATURES_OK) != 0 {
            return;
        }
        let value = u64::from(value);
        // A driver that acks the bad feature acks blindly: it gets none.
        self.driver_features = if value & VIRTIO_F_BAD_FEATURE != 0 {
            0
        } else {
            value & u64::from(self.legacy_features())
        };
    }

    /// The selected queue at page `pfn`, at the device's full size (a
    /// legacy driver cannot choose it). PFN 0 resets the device, as in
    /// QEMU (legacy drivers release their queues that way).
    fn set_queue_pfn(&mut self, pfn: u32) {
        if pfn == 0 {
            self.reset();
            return;
        }
        // The device took its queues at DRIVER_OK.
        if self.status & STATUS_DRIVER_OK != 0 {
            return;
        }
        let Some(q) = self.queues.get_mut(usize::from(self.queue_select)) else {
            return;
        };
        let (desc, driver, device) = legacy_ring_addresses(pfn, q.max_size);
        *q = QueueRegs {
            size: q.max_size,
            max_size: q.max_size,
            enable: true,
            desc,
            driver,
            device,
        };
    }

    /// A write to the notify register that KVM did not turn into a kick
    /// itself; a queue that does not exist is ignored, as in QEMU.
    fn legacy_notify(&mut self, queue: u32) {
        if !self.running() {
            return;
        }
        if let Some(k) = usize::try_from(queue).ok().and_then(|q| self.kicks.get(q)) {
            let _ = k.write(1);
        }
    }

    fn write_legacy_status(&mut self, value: u8) {
        self.write_status(value);
        // Linux before 2.6.34 drove legacy devices without enabling bus
        // mastering; QEMU turns it on for them at this step.
        if value == STATUS_ACKNOWLEDGE | STATUS_DRIVER {
            let command = self.config.u16(config::COMMAND);
            self.config
                .set_u16(config::COMMAND, command | config::COMMAND_MASTER);
        }
    }

    /// Has KVM signal queue `i`'s kick on a 16-bit write of `i` to the
    /// notify port while the device runs and BAR 0 is mapped.
    pub(super) fn sync_legacy_ioevents(&mut self) {
        let want = match self.bar0 {
            Some(base) if self.running() => u16::try_from(base + QUEUE_NOTIFY).ok(),
            _ => None,
        };
        if want == self.legacy_ioevents_at {
            return;
        }
        let Some(reg) = self.ioevents.clone() else {
            return;
        };
        if let Some(old) = self.legacy_ioevents_at.take() {
            for (i, k) in self.kicks.iter().enumerate() {
                // The VM the kicks were registered with may be gone.
                let _ = reg.unregister_pio(old, i as u16, k);
            }
        }
        let Some(port) = want else {
            return;
        };
        for (i, k) in self.kicks.iter().enumerate() {
            if reg.register_pio(port, i as u16, k).is_err() {
                for (j, k) in self.kicks.iter().enumerate().take(i) {
                    let _ = reg.unregister_pio(port, j as u16, k);
                }
                return;
            }
        }
        self.legacy_ioevents_at = Some(port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::PciFunction;
    use crate::platform::{MsiSink, NoInterrupt};
    use crate::virtio::pci::VirtioBars;
    use crate::virtio::{VirtioDevice, VirtioInterrupt, STATUS_NEEDS_RESET};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;
    use virtio_queue::Queue;
    use vm_memory::{GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::EventFd;

    /// Counts activations and keeps the features acked.
    #[derive(Default)]
    struct Probe {
        activations: AtomicUsize,
        acked: AtomicU64,
    }

    struct FakeBlk(Arc<Probe>);

    impl VirtioDevice for FakeBlk {
        fn device_type(&self) -> u16 {
            2
        }
        fn queue_max_sizes(&self) -> Vec<u16> {
            vec![256]
        }
        fn features(&self) -> u64 {
            crate::virtio::VIRTIO_F_VERSION_1 | (1 << 9)
        }
        fn ack_features(&mut self, features: u64) {
            self.0.acked.store(features, Ordering::SeqCst);
        }
        fn config_size(&self) -> u64 {
            60
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = offset as u8 + i as u8;
            }
        }
        fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
        fn activate(
            &mut self,
            _mem: GuestMemoryMmap,
            _queues: Vec<Queue>,
            _interrupt: Arc<dyn VirtioInterrupt>,
            _kicks: Vec<Arc<EventFd>>,
        ) {
            self.0.activations.fetch_add(1, Ordering::SeqCst);
        }
        fn reset(&mut self) {}
    }

    struct NoMsi;

    impl MsiSink for NoMsi {
        fn send_msi(&self, _address: u64, _data: u32) {}
    }

    /// A transitional device over 1 MiB of RAM, BAR 0 at 0xc000.
    fn transitional() -> (VirtioPci, Arc<Probe>) {
        let probe = Arc::new(Probe::default());
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).expect("memory");
        let bars = VirtioBars {
            modern: 0xe000_0000,
            msix: 0xe000_4000,
            legacy: Some(0xc000),
        };
        let dev = VirtioPci::new(
            Box::new(FakeBlk(probe.clone())),
            mem,
            Arc::new(NoMsi),
            Arc::new(NoInterrupt),
            10,
            bars,
            String::new(),
            None,
        )
        .expect("transport");
        (dev, probe)
    }

    fn read32(dev: &mut VirtioPci, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        dev.bar_read(0, offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn write(dev: &mut VirtioPci, offset: u64, value: u32, len: usize) {
        dev.bar_write(0, offset, &value.to_le_bytes()[..len]);
    }

    #[test]
    fn transitional_identity_and_bar_0() {
        let (dev, _) = transitional();
        let c = dev.config();
        assert_eq!(c.u16(config::DEVICE_ID), 0x1001);
        assert_eq!(c.u8(config::REVISION), 0);
        assert_eq!(c.u16(config::SUBSYSTEM_VENDOR_ID), 0x1af4);
        assert_eq!(c.u16(config::SUBSYSTEM_ID), 2);
        let bar = c.bar(0).expect("BAR 0");
        assert_eq!(bar.kind, crate::pci::BarKind::Io);
        // 24 bytes of registers and 60 of configuration, rounded up.
        assert_eq!(bar.size, 128);
        assert_eq!(c.bar_address(0), Some(0xc000));
    }

    #[test]
    fn a_legacy_driver_sets_up_a_queue_and_starts_the_device() {
        let (mut dev, probe) = transitional();
        // No VERSION_1; the transport's bits are there.
        let offered = read32(&mut dev, HOST_FEATURES);
        assert_eq!(offered, (1 << 9) | (1 << 24) | (1 << 27) | (1 << 30));
        write(&mut dev, STATUS, 1 | 2, 1);
        // Bits not offered are dropped.
        write(&mut dev, GUEST_FEATURES, (1 << 9) | (1 << 3), 4);
        assert_eq!(read32(&mut dev, GUEST_FEATURES), 1 << 9);
        write(&mut dev, QUEUE_SEL, 0, 2);
        assert_eq!(read32(&mut dev, QUEUE_NUM) & 0xffff, 256);
        write(&mut dev, QUEUE_PFN, 0x10, 4);
        assert_eq!(read32(&mut dev, QUEUE_PFN), 0x10);
        let q = dev.queues[0];
        assert_eq!((q.desc, q.driver, q.device), (0x10000, 0x11000, 0x12000));
        // A queue that does not exist has size 0.
        write(&mut dev, QUEUE_SEL, 1, 2);
        assert_eq!(read32(&mut dev, QUEUE_NUM) & 0xffff, 0);
        write(&mut dev, STATUS, 1 | 2 | 4, 1);
        assert_eq!(probe.activations.load(Ordering::SeqCst), 1);
        assert_eq!(probe.acked.load(Ordering::SeqCst), 1 << 9);
        assert_eq!(read32(&mut dev, STATUS) & 0xff, 7);
        // The configuration follows the registers (MSI-X off).
        assert_eq!(read32(&mut dev, CONFIG_OFFSET), 0x0302_0100);
        // Status 0 resets.
        write(&mut dev, STATUS, 0, 1);
        assert_eq!(read32(&mut dev, STATUS) & 0xff, 0);
        assert_eq!(read32(&mut dev, QUEUE_PFN), 0);
    }

    #[test]
    fn hostile_legacy_writes_leave_the_device_broken_not_the_vmm() {
        let (mut dev, probe) = transitional();
        write(&mut dev, STATUS, 1 | 2, 1);
        // A queue far outside RAM: the device needs a reset.
        write(&mut dev, QUEUE_PFN, 0xffff_ffff, 4);
        write(&mut dev, STATUS, 1 | 2 | 4, 1);
        assert_eq!(probe.activations.load(Ordering::SeqCst), 0);
        assert_ne!(read32(&mut dev, STATUS) & u32::from(STATUS_NEEDS_RESET), 0);
        // Notifies of any queue, odd sizes and offsets, the bad feature.
        for (offset, len) in [
            (QUEUE_NOTIFY, 2),
            (QUEUE_NOTIFY, 4),
            (1, 1),
            (23, 1),
            (127, 1),
        ] {
            write(&mut dev, offset, 0xffff_ffff, len);
            let mut b = [0u8; 4];
            dev.bar_read(0, offset, &mut b[..len]);
        }
        write(&mut dev, QUEUE_SEL, 5000, 2);
        write(&mut dev, QUEUE_PFN, 7, 4);
        write(&mut dev, STATUS, 0, 1);
        write(&mut dev, GUEST_FEATURES, u32::MAX, 4);
        assert_eq!(read32(&mut dev, GUEST_FEATURES), 0);
        // Unknown registers read as all ones.
        assert_eq!(read32(&mut dev, 1), u32::MAX);
    }

    #[test]
    fn legacy_rings_follow_the_descriptor_table() {
        // 256 entries: 4 KiB of descriptors, the available ring on the
        // next page, the used ring on the page after.
        assert_eq!(
            legacy_ring_addresses(0x600, 256),
            (0x60_0000, 0x60_1000, 0x60_2000)
        );
        // 16 entries: everything but the used ring in the first page.
        assert_eq!(legacy_ring_addresses(1, 16), (0x1000, 0x1100, 0x2000));
    }
}
