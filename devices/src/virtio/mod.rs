//! virtio devices and their PCI transport (virtio 1.0, and the legacy
//! interface of transitional devices).

pub mod block;
mod block_io;
pub mod pci;

use std::sync::Arc;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Feature bits every modern device offers.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Transport feature bits QEMU offers every device, seen by legacy
/// drivers (modern ones take them as implied).
pub const VIRTIO_F_NOTIFY_ON_EMPTY: u64 = 1 << 24;
pub const VIRTIO_F_ANY_LAYOUT: u64 = 1 << 27;
/// Offered so that a legacy driver that acks everything is caught: one
/// that acks it gets no features at all.
pub const VIRTIO_F_BAD_FEATURE: u64 = 1 << 30;
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;

/// Device status bits.
pub const STATUS_ACKNOWLEDGE: u8 = 1;
pub const STATUS_DRIVER: u8 = 2;
pub const STATUS_DRIVER_OK: u8 = 4;
pub const STATUS_FEATURES_OK: u8 = 8;
pub const STATUS_NEEDS_RESET: u8 = 0x40;
pub const STATUS_FAILED: u8 = 0x80;

/// How a device tells the driver a queue has used buffers (or its
/// configuration changed).
pub trait VirtioInterrupt: Send + Sync {
    fn notify_queue(&self, queue: u16);
    fn notify_config(&self);
    /// The driver broke the rules (a device thread found it): the
    /// transport sets NEEDS_RESET and raises the configuration interrupt.
    fn device_broken(&self, why: &str);
}

/// A virtio device behind any transport.
pub trait VirtioDevice: Send {
    /// The virtio device ID (2 for block).
    fn device_type(&self) -> u16;
    /// Size of each queue the device has.
    fn queue_max_sizes(&self) -> Vec<u16>;
    fn features(&self) -> u64;
    /// The features the driver accepted.
    fn ack_features(&mut self, features: u64);
    /// Bytes of device configuration (the legacy I/O BAR must hold them).
    fn config_size(&self) -> u64;
    fn read_config(&self, offset: u64, data: &mut [u8]);
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// The driver set DRIVER_OK: the device starts with these queues.
    /// `kicks[i]` is signalled whenever the driver notifies queue `i`
    /// (by KVM itself where ioeventfd is set up, else by the transport).
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<dyn VirtioInterrupt>,
        kicks: Vec<Arc<EventFd>>,
    );
    /// The VM runs again (`cont`): a device that an error policy
    /// stopped runs the requests it kept.
    fn vm_running(&mut self) {}
    /// The VM stopped: requests in flight finish before this returns
    /// and no new one starts until `vm_running` (QEMU drains the block
    /// layer on a stop).
    fn vm_stopped(&mut self) {}
    /// The driver turned the function's bus mastering off or on: while
    /// it is off the device must not touch guest memory (requests in
    /// flight finish first).
    fn bus_master(&mut self, _on: bool) {}
    /// Back to the state before activation; the queues are dropped.
    fn reset(&mut self);
}
