//! virtio-blk: read, write, flush, get-id, discard and write-zeroes on a
//! block backend, one request queue per `num-queues`, served by the
//! device's I/O thread (block_io).

use super::block_io::{Worker, WorkerSetup};
use super::{
    VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
};
use qmp::qapi::BlockErrorAction;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Instant;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Where a disk's bytes lie in one host file: reads and writes may go
/// there directly (asynchronous, zero-copy from guest memory).
#[derive(Clone)]
pub struct HostFile {
    /// Open for as long as `done` lives.
    pub fd: RawFd,
    /// The file offset of the disk's byte 0.
    pub base: u64,
    /// O_DIRECT alignment of offsets, lengths and buffer addresses.
    pub align: u64,
    /// `aio=native`: io_uring; otherwise worker threads.
    pub native_aio: bool,
    pub done: Arc<dyn HostIoDone>,
}

/// Counts a read or write done in the host file directly, as the block
/// layer counts its own (query-blockstats).
pub trait HostIoDone: Send + Sync {
    /// `requests` guest requests, merged into one transfer of `len`
    /// bytes at `offset` when more than one.
    fn done(&self, write: bool, offset: u64, len: u64, requests: u32, started: Instant);
}

/// What a virtio-blk device reads and writes; the block layer provides it.
/// Calls come from the device's I/O thread.
pub trait BlockBackend: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    fn read_only(&self) -> bool;
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    fn flush(&self) -> io::Result<()>;
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Calls `notify` after the backend's size changed (block_resize).
    fn on_resize(&self, _notify: Box<dyn Fn() + Send + Sync>) {}
    /// What to do about a request that failed with host error `errno`
    /// (the backend's `rerror`/`werror`).
    fn error_action(&self, _is_read: bool, _errno: i32) -> BlockErrorAction {
        BlockErrorAction::Report
    }
    /// Tells the management a request failed and what the device does
    /// about it (BLOCK_IO_ERROR); `Stop` also stops the VM (`io-error`).
    fn report_error(&self, _action: BlockErrorAction, _is_read: bool, _errno: i32) {}
    /// The host file requests may go to directly, if the graph allows it
    /// now (looked up again for every batch of requests).
    fn host_file(&self) -> Option<HostFile> {
        None
    }
}

pub const VIRTIO_ID_BLOCK: u16 = 2;
const SECTOR: u64 = 512;

const F_SEG_MAX: u64 = 1 << 2;
const F_GEOMETRY: u64 = 1 << 4;
const F_RO: u64 = 1 << 5;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;
const F_TOPOLOGY: u64 = 1 << 10;
const F_CONFIG_WCE: u64 = 1 << 11;
const F_MQ: u64 = 1 << 12;
const F_DISCARD: u64 = 1 << 13;
const F_WRITE_ZEROES: u64 = 1 << 14;

const SEG_MAX: u32 = 126;
/// struct virtio_blk_config up to write_zeroes_may_unmap and its padding.
const CONFIG_SIZE: usize = 60;
/// QEMU 2.11's virtio-blk queue size (fixed: it has no `queue-size` property).
const QUEUE_SIZE: u16 = 128;

/// Options of `-device virtio-blk-pci`.
#[derive(Clone, Debug)]
pub struct BlockConfig {
    pub num_queues: u16,
    pub logical_block_size: u32,
    pub physical_block_size: u32,
    /// `serial`, answered to GET_ID (20 bytes at most).
    pub serial: String,
    /// Offer CONFIG_WCE (`config-wce`).
    pub config_wce: bool,
    /// Merge adjacent requests of one batch (`request-merging`).
    pub request_merging: bool,
    /// `cyls`/`heads`/`secs`, or QEMU's guess for the disk.
    pub geometry: Geometry,
    /// `iothread=`: the thread the device's I/O loop runs on (None: a
    /// thread of its own).
    pub iothread: Option<crate::platform::IoThreadHandle>,
}

/// A disk's geometry as the configuration reports it (legacy drivers and
/// firmware use it for CHS addressing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Geometry {
    pub cylinders: u32,
    pub heads: u32,
    pub sectors: u32,
}

impl Geometry {
    /// QEMU's guess for a disk of `size` bytes whose first sector is
    /// `mbr` (None: unreadable), with no geometry given: the one its
    /// partitions were made with when they end on a cylinder boundary
    /// with at most 16 heads, else 16 heads and 63 sectors per track with
    /// the cylinders the size makes (2 to 16383).
    pub fn guess(size: u64, mbr: Option<&[u8; 512]>) -> Geometry {
        let sectors = size / SECTOR;
        let standard = Geometry {
            cylinders: (sectors / (16 * 63)).clamp(2, 16383) as u32,
            heads: 16,
            sectors: 63,
        };
        match mbr.and_then(|m| Self::from_partition_table(m, sectors)) {
            Some(g) if g.heads <= 16 => g,
            _ => standard,
        }
    }

    /// The geometry the first usable partition entry implies.
    fn from_partition_table(mbr: &[u8; 512], disk_sectors: u64) -> Option<Geometry> {
        if mbr[510..512] != [0x55, 0xaa] {
            return None;
        }
        mbr[0x1be..0x1fe].chunks(16).find_map(|p| {
            let size = u32::from_le_bytes([p[12], p[13], p[14], p[15]]);
            let (end_head, end_sector) = (u32::from(p[5]), u32::from(p[6]) & 63);
            if size == 0 || end_head == 0 || end_sector == 0 {
                return None;
            }
            let heads = end_head + 1;
            let cylinders = disk_sectors / u64::from(heads * end_sector);
            (1..=16383).contains(&cylinders).then_some(Geometry {
                cylinders: cylinders as u32,
                heads,
                sectors: end_sector,
            })
        })
    }
}

impl Default for BlockConfig {
    fn default() -> Self {
        BlockConfig {
            num_queues: 1,
            logical_block_size: 512,
            physical_block_size: 512,
            serial: String::new(),
            config_wce: true,
            request_merging: true,
            geometry: Geometry::default(),
            iothread: None,
        }
    }
}

pub struct VirtioBlk {
    backend: Arc<dyn BlockBackend>,
    config: BlockConfig,
    acked: u64,
    /// The driver took the transport's NOTIFY_ON_EMPTY (legacy drivers).
    notify_on_empty: bool,
    /// The writeback cache flag the driver may toggle (config `wce`).
    writeback: u8,
    /// The I/O thread, while the driver has the device running.
    worker: Option<Worker>,
}

impl VirtioBlk {
    pub fn new(backend: Arc<dyn BlockBackend>, config: BlockConfig) -> VirtioBlk {
        VirtioBlk {
            backend,
            config,
            acked: 0,
            notify_on_empty: false,
            writeback: 1,
            worker: None,
        }
    }

    fn config_bytes(&self) -> Vec<u8> {
        let mut c = vec![0u8; CONFIG_SIZE];
        let capacity = self.backend.size() / SECTOR;
        c[0..8].copy_from_slice(&capacity.to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes()); // seg_max
        let g = self.config.geometry;
        c[16..18].copy_from_slice(&(g.cylinders as u16).to_le_bytes());
        c[18] = g.heads as u8;
        c[19] = g.sectors as u8;
        c[20..24].copy_from_slice(&self.config.logical_block_size.to_le_bytes());
        // Topology: physical block exponent.
        let ratio =
            (self.config.physical_block_size / self.config.logical_block_size.max(1)).max(1);
        c[24] = ratio.trailing_zeros() as u8;
        c[32] = self.writeback;
        c[34..36].copy_from_slice(&self.config.num_queues.to_le_bytes());
        // max_discard_sectors, max_discard_seg, discard_sector_alignment
        c[36..40].copy_from_slice(&(u32::MAX / 512).to_le_bytes());
        c[40..44].copy_from_slice(&1u32.to_le_bytes());
        c[44..48].copy_from_slice(&(self.config.logical_block_size / 512).max(1).to_le_bytes());
        // max_write_zeroes_sectors, max_write_zeroes_seg, may_unmap
        c[48..52].copy_from_slice(&(u32::MAX / 512).to_le_bytes());
        c[52..56].copy_from_slice(&1u32.to_le_bytes());
        c
    }
}

impl VirtioDevice for VirtioBlk {
    fn device_type(&self) -> u16 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; usize::from(self.config.num_queues.max(1))]
    }

    fn features(&self) -> u64 {
        // Indirect descriptors, as QEMU's `indirect_desc=on` default.
        let mut f = VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_INDIRECT_DESC
            | VIRTIO_RING_F_EVENT_IDX
            | F_SEG_MAX
            | F_GEOMETRY
            | F_BLK_SIZE
            | F_FLUSH
            | F_TOPOLOGY
            | F_DISCARD
            | F_WRITE_ZEROES;
        if self.config.config_wce {
            f |= F_CONFIG_WCE;
        }
        if self.config.num_queues > 1 {
            f |= F_MQ;
        }
        if self.backend.read_only() {
            f |= F_RO;
        }
        f
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features & self.features();
        self.notify_on_empty = features & super::VIRTIO_F_NOTIFY_ON_EMPTY != 0;
    }

    fn config_size(&self) -> u64 {
        CONFIG_SIZE as u64
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let c = self.config_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| c.get(o + i))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only the writeback flag is writable, with CONFIG_WCE.
        if offset == 32 && self.acked & F_CONFIG_WCE != 0 {
            if let Some(&v) = data.first() {
                self.writeback = v & 1;
            }
        }
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        queues: Vec<Queue>,
        interrupt: Arc<dyn VirtioInterrupt>,
        kicks: Vec<Arc<EventFd>>,
    ) {
        self.worker = None;
        let setup = WorkerSetup {
            backend: self.backend.clone(),
            serial: self.config.serial.clone(),
            merging: self.config.request_merging,
            notify_on_empty: self.notify_on_empty,
            mem,
            queues,
            interrupt: interrupt.clone(),
            kicks,
            host: self.config.iothread.clone(),
        };
        match Worker::spawn(setup) {
            Ok(w) => self.worker = Some(w),
            // The device cannot serve its queues: the driver hears it
            // as a device that needs a reset.
            Err(e) => interrupt.device_broken(&format!("virtio-blk I/O thread: {e}")),
        }
    }

    fn vm_running(&mut self) {
        if let Some(w) = &self.worker {
            w.resume();
        }
    }

    fn vm_stopped(&mut self) {
        if let Some(w) = &self.worker {
            w.pause();
        }
    }

    fn bus_master(&mut self, on: bool) {
        if let Some(w) = &self.worker {
            w.bus_master(on);
        }
    }

    fn reset(&mut self) {
        // The I/O thread finishes what is in flight and ends; requests an
        // error policy kept are dropped.
        self.worker = None;
        self.acked = 0;
        self.notify_on_empty = false;
        self.writeback = 1;
    }
}

#[cfg(test)]
mod tests {
    use super::Geometry;

    fn chs(g: Geometry) -> (u32, u32, u32) {
        (g.cylinders, g.heads, g.sectors)
    }

    #[test]
    fn a_blank_disk_gets_16_heads_63_sectors_and_its_size_in_cylinders() {
        assert_eq!(chs(Geometry::guess(1 << 20, Some(&[0; 512]))), (2, 16, 63));
        // 1 GiB: 2097152 sectors / 1008.
        assert_eq!(chs(Geometry::guess(1 << 30, None)), (2080, 16, 63));
    }

    #[test]
    fn an_mbr_partition_ending_on_a_cylinder_gives_its_geometry() {
        let mut mbr = [0u8; 512];
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        // One partition ending at head 7, sector 32 (8 heads, 32 sectors).
        let p = 0x1be;
        mbr[p + 5] = 7;
        mbr[p + 6] = 32;
        mbr[p + 12..p + 16].copy_from_slice(&1000u32.to_le_bytes());
        // 8 MiB = 16384 sectors / (8 * 32) = 64 cylinders.
        assert_eq!(chs(Geometry::guess(8 << 20, Some(&mbr))), (64, 8, 32));
        // More than 16 heads means BIOS translation: the standard guess.
        mbr[p + 5] = 254;
        mbr[p + 6] = 63;
        assert_eq!(chs(Geometry::guess(8 << 20, Some(&mbr))), (16, 16, 63));
    }
}
