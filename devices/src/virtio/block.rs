//! virtio-blk: read, write, flush, get-id, discard and write-zeroes on a
//! block backend, one request queue per `num-queues`.

use super::{
    DeviceBroken, VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};
use qmp::qapi::BlockErrorAction;
use std::io::{self, Read, Write};
use std::sync::Arc;
use virtio_queue::{Queue, QueueOwnedT, QueueT, Reader, Writer};
use vm_memory::GuestMemoryMmap;

/// What a virtio-blk device reads and writes; the block layer provides it.
/// Calls come from vCPU threads.
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
}

pub const VIRTIO_ID_BLOCK: u16 = 2;
const SECTOR: u64 = 512;

const F_SEG_MAX: u64 = 1 << 2;
const F_RO: u64 = 1 << 5;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;
const F_TOPOLOGY: u64 = 1 << 10;
const F_CONFIG_WCE: u64 = 1 << 11;
const F_MQ: u64 = 1 << 12;
const F_DISCARD: u64 = 1 << 13;
const F_WRITE_ZEROES: u64 = 1 << 14;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const T_DISCARD: u32 = 11;
const T_WRITE_ZEROES: u32 = 13;

const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

/// How a request ended: a status and the bytes written into the
/// driver's buffers, or stopped by an error policy (it stays in the
/// queue and runs again when the VM continues).
enum Outcome {
    Done(u8, u32),
    Stop,
}

/// The largest transfer one request may ask for; a bigger one fails with
/// an I/O error instead of making the VMM allocate what the guest asks.
const MAX_REQUEST_BYTES: usize = 32 << 20;
const SEG_MAX: u32 = 126;
const QUEUE_SIZE: u16 = 256;

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
}

impl Default for BlockConfig {
    fn default() -> Self {
        BlockConfig {
            num_queues: 1,
            logical_block_size: 512,
            physical_block_size: 512,
            serial: String::new(),
            config_wce: true,
        }
    }
}

struct Active {
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    interrupt: Arc<dyn VirtioInterrupt>,
}

pub struct VirtioBlk {
    backend: Arc<dyn BlockBackend>,
    config: BlockConfig,
    acked: u64,
    /// The writeback cache flag the driver may toggle (config `wce`).
    writeback: u8,
    active: Option<Active>,
    /// Reused for every request's data, so that I/O does not allocate.
    buffer: Vec<u8>,
    /// A request failed with the `stop` policy: the queues wait (the
    /// request is back in its queue) until the VM runs again.
    stopped: bool,
}

/// The fixed part of every request.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct RequestHeader {
    kind: u32,
    _reserved: u32,
    sector: u64,
}

// SAFETY: plain integers without padding; any bit pattern is valid.
unsafe impl vm_memory::ByteValued for RequestHeader {}

/// One discard / write-zeroes range.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct DiscardRange {
    sector: u64,
    num_sectors: u32,
    flags: u32,
}

// SAFETY: plain integers without padding; any bit pattern is valid.
unsafe impl vm_memory::ByteValued for DiscardRange {}

impl VirtioBlk {
    pub fn new(backend: Arc<dyn BlockBackend>, config: BlockConfig) -> VirtioBlk {
        VirtioBlk {
            backend,
            config,
            acked: 0,
            writeback: 1,
            active: None,
            buffer: Vec::new(),
            stopped: false,
        }
    }

    fn config_bytes(&self) -> Vec<u8> {
        let mut c = vec![0u8; 60];
        let capacity = self.backend.size() / SECTOR;
        c[0..8].copy_from_slice(&capacity.to_le_bytes());
        c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes()); // seg_max
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

    fn in_range(&self, sector: u64, len: u64) -> bool {
        sector
            .checked_mul(SECTOR)
            .and_then(|o| o.checked_add(len))
            .is_some_and(|end| end <= self.backend.size())
    }

    /// Serves one request; returns the bytes written into the driver's
    /// buffers, or None when an error policy stopped it.
    fn serve(&mut self, mut reader: Reader<'_>, mut writer: Writer<'_>) -> Option<u32> {
        let Ok(header) = reader.read_obj::<RequestHeader>() else {
            return Some(0);
        };
        let writable = writer.available_bytes();
        if writable == 0 {
            return Some(0);
        }
        // The last writable byte is the status.
        let Ok(mut status_writer) = writer.split_at(writable - 1) else {
            return Some(0);
        };
        let Outcome::Done(status, written) = self.execute(header, &mut reader, &mut writer) else {
            return None;
        };
        let _ = status_writer.write_all(&[status]);
        Some(written + 1)
    }

    /// A request failed in the host: the backend's policy decides
    /// (QEMU's virtio_blk_handle_rw_error). An ignored error completes
    /// as a success of `len` bytes.
    fn failed(&self, is_read: bool, e: &io::Error, len: u32) -> Outcome {
        let errno = e.raw_os_error().unwrap_or(libc::EIO);
        let action = self.backend.error_action(is_read, errno);
        self.backend.report_error(action, is_read, errno);
        match action {
            BlockErrorAction::Stop => Outcome::Stop,
            BlockErrorAction::Report => Outcome::Done(S_IOERR, 0),
            BlockErrorAction::Ignore => Outcome::Done(S_OK, len),
        }
    }

    fn execute(
        &mut self,
        header: RequestHeader,
        reader: &mut Reader<'_>,
        writer: &mut Writer<'_>,
    ) -> Outcome {
        const IOERR: Outcome = Outcome::Done(S_IOERR, 0);
        match header.kind {
            T_IN => {
                let len = writer.available_bytes();
                if len > MAX_REQUEST_BYTES || !self.in_range(header.sector, len as u64) {
                    return IOERR;
                }
                self.buffer.resize(len, 0);
                if let Err(e) = self
                    .backend
                    .read_at(header.sector * SECTOR, &mut self.buffer[..len])
                {
                    return self.failed(true, &e, len as u32);
                }
                match writer.write_all(&self.buffer[..len]) {
                    Ok(()) => Outcome::Done(S_OK, len as u32),
                    Err(_) => IOERR,
                }
            }
            T_OUT => {
                if self.backend.read_only() {
                    return IOERR;
                }
                let len = reader.available_bytes();
                if len > MAX_REQUEST_BYTES || !self.in_range(header.sector, len as u64) {
                    return IOERR;
                }
                self.buffer.resize(len, 0);
                if reader.read_exact(&mut self.buffer[..len]).is_err() {
                    return IOERR;
                }
                match self
                    .backend
                    .write_at(header.sector * SECTOR, &self.buffer[..len])
                {
                    Ok(()) => Outcome::Done(S_OK, 0),
                    Err(e) => self.failed(false, &e, 0),
                }
            }
            T_FLUSH => match self.backend.flush() {
                Ok(()) => Outcome::Done(S_OK, 0),
                Err(e) => self.failed(false, &e, 0),
            },
            T_GET_ID => {
                let mut id = [0u8; 20];
                let serial = self.config.serial.as_bytes();
                let n = serial.len().min(20);
                id[..n].copy_from_slice(&serial[..n]);
                let n = writer.available_bytes().min(20);
                match writer.write_all(&id[..n]) {
                    Ok(()) => Outcome::Done(S_OK, n as u32),
                    Err(_) => IOERR,
                }
            }
            T_DISCARD | T_WRITE_ZEROES => {
                if self.backend.read_only() {
                    return IOERR;
                }
                let Ok(range) = reader.read_obj::<DiscardRange>() else {
                    return IOERR;
                };
                let len = u64::from(range.num_sectors) * SECTOR;
                if !self.in_range(range.sector, len) {
                    return IOERR;
                }
                let r = if header.kind == T_DISCARD {
                    self.backend.discard(range.sector * SECTOR, len)
                } else {
                    self.backend.write_zeroes(range.sector * SECTOR, len)
                };
                match r {
                    Ok(()) => Outcome::Done(S_OK, 0),
                    // Both count as writes, as in later QEMU.
                    Err(e) => self.failed(false, &e, 0),
                }
            }
            _ => Outcome::Done(S_UNSUPP, 0),
        }
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
        let mut f = VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_EVENT_IDX
            | F_SEG_MAX
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
    ) {
        self.active = Some(Active {
            mem,
            queues,
            interrupt,
        });
    }

    fn queue_notify(&mut self, index: u16) -> Result<(), DeviceBroken> {
        if self.stopped {
            // The queues wait for the VM to continue.
            return Ok(());
        }
        let Some(mut active) = self.active.take() else {
            return Ok(());
        };
        let result = self.process(&mut active, index);
        self.active = Some(active);
        result
    }

    fn vm_running(&mut self) -> Result<(), DeviceBroken> {
        if !std::mem::take(&mut self.stopped) {
            return Ok(());
        }
        let Some(mut active) = self.active.take() else {
            return Ok(());
        };
        let mut result = Ok(());
        for index in 0..active.queues.len() as u16 {
            result = self.process(&mut active, index);
            if result.is_err() || self.stopped {
                break;
            }
        }
        self.active = Some(active);
        result
    }

    fn reset(&mut self) {
        // Requests that waited for the VM to continue are dropped.
        self.stopped = false;
        self.active = None;
        self.acked = 0;
        self.writeback = 1;
    }
}

impl VirtioBlk {
    fn process(&mut self, active: &mut Active, index: u16) -> Result<(), DeviceBroken> {
        let mem = &active.mem;
        let Some(queue) = active.queues.get_mut(usize::from(index)) else {
            return Err(DeviceBroken(format!(
                "notify for queue {index}, which does not exist"
            )));
        };
        if !queue.ready() {
            return Ok(());
        }
        let mut used_any = false;
        'ring: loop {
            let chains: Vec<_> = queue
                .iter(mem)
                .map_err(|e| DeviceBroken(format!("queue {index}: {e}")))?
                .collect();
            if chains.is_empty() {
                break;
            }
            let taken = chains.len() as u16;
            for (n, chain) in chains.into_iter().enumerate() {
                let head = chain.head_index();
                // The iterator stops at the queue size or an index out of
                // range; a last descriptor that still says "next" means the
                // chain loops, is too long, or points nowhere.
                if chain.clone().last().is_none_or(|d| d.has_next()) {
                    return Err(DeviceBroken(format!(
                        "queue {index}: descriptor chain {head} loops or leaves the table"
                    )));
                }
                let reader = Reader::new(mem, chain.clone());
                let writer = Writer::new(mem, chain);
                let served = match (reader, writer) {
                    (Ok(r), Ok(w)) => self.serve(r, w),
                    _ => {
                        return Err(DeviceBroken(format!(
                            "queue {index}: descriptor outside guest memory"
                        )))
                    }
                };
                let Some(len) = served else {
                    // An error policy stopped the VM: this request and
                    // the ones after it go back to the ring, to run when
                    // the VM continues (QEMU keeps them and resubmits).
                    let back = taken - n as u16;
                    queue.set_next_avail(queue.next_avail().wrapping_sub(back));
                    self.stopped = true;
                    break 'ring;
                };
                queue
                    .add_used(mem, head, len)
                    .map_err(|e| DeviceBroken(format!("queue {index}: {e}")))?;
                used_any = true;
            }
            // With EVENT_IDX, re-check after enabling notifications so
            // that a request that raced with us is not left waiting.
            match queue.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => return Err(DeviceBroken(format!("queue {index}: {e}"))),
            }
        }
        if used_any
            && queue
                .needs_notification(mem)
                .map_err(|e| DeviceBroken(format!("queue {index}: {e}")))?
        {
            active.interrupt.notify_queue(index);
        }
        Ok(())
    }
}
