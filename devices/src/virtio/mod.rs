//! virtio 1.0 devices and their PCI transport.

pub mod block;
pub mod pci;

use std::sync::Arc;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// Feature bits every modern device offers.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
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
}

/// Why a device stopped processing: the driver broke the rules (bad
/// descriptors, addresses outside RAM, loops). The transport marks the
/// device NEEDS_RESET; the VMM carries on.
#[derive(Debug)]
pub struct DeviceBroken(pub String);

/// A virtio device behind any transport.
pub trait VirtioDevice: Send {
    /// The virtio device ID (2 for block).
    fn device_type(&self) -> u16;
    /// Size of each queue the device has.
    fn queue_max_sizes(&self) -> Vec<u16>;
    fn features(&self) -> u64;
    /// The features the driver accepted.
    fn ack_features(&mut self, features: u64);
    fn read_config(&self, offset: u64, data: &mut [u8]);
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// The driver set DRIVER_OK: the device starts with these queues.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<dyn VirtioInterrupt>,
    );
    /// The driver notified queue `index`.
    fn queue_notify(&mut self, index: u16) -> Result<(), DeviceBroken>;
    /// The VM runs again (`cont`): a device that an error policy
    /// stopped runs the requests it kept.
    fn vm_running(&mut self) -> Result<(), DeviceBroken> {
        Ok(())
    }
    /// Back to the state before activation; the queues are dropped.
    fn reset(&mut self);
}
