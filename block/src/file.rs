//! The `file` and `host_device` protocol drivers (QEMU's file-posix):
//! positional I/O on a host file or device, O_DIRECT through aligned
//! bounce buffers where a request is not aligned, and QEMU's image
//! locks (OFD byte locks) so that two processes cannot both write one
//! image.
//!
//! `aio=native` is accepted and checked as QEMU checks it. Devices reach
//! the file asynchronously through its `HostExtent` (virtio-blk's I/O
//! thread submits to io_uring with `aio=native`, to worker threads with
//! `aio=threads`, as QEMU's linux-aio and thread pool); the positional I/O
//! here serves the synchronous path (qemu-io, flushes, discards, image
//! probing, requests the asynchronous path gave back).

use crate::error::{strerror, BlockError, Result};
use crate::node::Driver;
use crate::perm;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// QEMU's lock bytes: one byte per permission at 100 + bit ("I use
/// it") and at 200 + bit ("I do not let others use it").
const LOCK_BASE_PERM: i64 = 100;
const LOCK_BASE_SHARED: i64 = 200;
const LOCK_HINT: &str = "Is another process using the image?";

/// How to open a file node.
#[derive(Clone, Debug)]
pub struct FileOptions {
    pub filename: String,
    pub read_only: bool,
    pub direct: bool,
    /// `locking` resolved: on or auto take locks, off does not.
    pub locking: bool,
    pub host_device: bool,
    /// `aio=native`: devices submit to io_uring; `aio=threads` (QEMU's
    /// default): to a pool of worker threads.
    pub native_aio: bool,
}

pub(crate) struct FileDriver {
    /// Shared with asynchronous requests in flight (HostExtent).
    file: Arc<File>,
    filename: String,
    host_device: bool,
    regular: bool,
    size: AtomicU64,
    /// O_DIRECT alignment of offsets, lengths and buffers (1 without).
    align: u64,
    /// Serialises read-modify-write cycles of unaligned O_DIRECT writes.
    rmw: Mutex<()>,
    locking: bool,
    /// The locks held now: (perm, shared).
    held: Mutex<(u64, u64)>,
    native_aio: bool,
    /// Opened with O_DIRECT (a reopen keeps it).
    direct: bool,
}

fn open_error(filename: &str, e: &io::Error) -> BlockError {
    BlockError::generic(format!("Could not open '{filename}': {}", strerror(e)))
}

impl FileDriver {
    pub(crate) fn open(o: &FileOptions) -> Result<FileDriver> {
        let mut flags = libc::O_CLOEXEC;
        if o.direct {
            flags |= libc::O_DIRECT;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!o.read_only)
            .custom_flags(flags)
            .open(&o.filename)
            .map_err(|e| open_error(&o.filename, &e))?;
        let meta = file.metadata().map_err(|e| open_error(&o.filename, &e))?;
        let ft = meta.file_type();
        let device = ft.is_block_device() || ft.is_char_device();
        if o.host_device && !device {
            return Err(BlockError::generic(
                "'host_device' driver expects either a character or block device",
            ));
        }
        let size = Self::probe_size(&file, &meta).map_err(|e| open_error(&o.filename, &e))?;
        let align = if o.direct {
            probe_alignment(&file, ft.is_block_device())
        } else {
            1
        };
        Ok(FileDriver {
            file: Arc::new(file),
            filename: o.filename.clone(),
            host_device: o.host_device,
            regular: ft.is_file(),
            size: AtomicU64::new(size),
            align,
            rmw: Mutex::new(()),
            locking: o.locking,
            held: Mutex::new((0, perm::ALL)),
            native_aio: o.native_aio,
            direct: o.direct,
        })
    }

    fn probe_size(file: &File, meta: &std::fs::Metadata) -> io::Result<u64> {
        if meta.file_type().is_file() {
            return Ok(meta.len());
        }
        // SAFETY: lseek on a descriptor we own.
        let end = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
        if end < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(end as u64)
    }

    fn aligned(&self, offset: u64, len: usize, addr: usize) -> bool {
        self.align <= 1
            || (offset.is_multiple_of(self.align)
                && (len as u64).is_multiple_of(self.align)
                && (addr as u64).is_multiple_of(self.align))
    }

    /// Reads with zeroes past the end of the file.
    fn pread_full(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    return Ok(());
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn pwrite_full(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    /// The aligned extent around a request, in a bounce buffer.
    fn bounce(&self, offset: u64, len: usize) -> io::Result<(u64, AlignedBuf)> {
        let start = offset - offset % self.align;
        let end = (offset + len as u64).div_ceil(self.align) * self.align;
        let buf = AlignedBuf::new((end - start) as usize, self.align as usize)?;
        Ok((start, buf))
    }

    fn lock_byte(&self, cmd: libc::c_int, kind: libc::c_short, byte: i64) -> io::Result<bool> {
        // SAFETY: a zeroed flock is a valid value; OFD locks need l_pid 0.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = kind;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = byte;
        fl.l_len = 1;
        // SAFETY: fcntl with a valid flock on a descriptor we own.
        let r = unsafe { libc::fcntl(self.file.as_raw_fd(), cmd, &mut fl) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // For F_OFD_GETLK: whether someone else holds a conflicting lock.
        Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
    }

    fn someone_holds(&self, byte: i64) -> bool {
        // An error here means the lock cannot be probed; QEMU treats a
        // failed probe as a conflict.
        self.lock_byte(libc::F_OFD_GETLK, libc::F_WRLCK as libc::c_short, byte)
            .unwrap_or(true)
    }
}

/// The O_DIRECT alignment: the device's logical block size, or for a
/// file the smallest of 512 and 4096 that a direct read accepts.
fn probe_alignment(file: &File, block_device: bool) -> u64 {
    if block_device {
        let mut size: libc::c_int = 0;
        // SAFETY: BLKSSZGET writes one int.
        if unsafe { libc::ioctl(file.as_raw_fd(), BLKSSZGET, &mut size) } == 0 && size > 0 {
            return (size as u64).max(512);
        }
        return 4096;
    }
    if let Ok(buf) = AlignedBuf::new(8192, 4096) {
        // A buffer aligned to 512 but not to 4096.
        // SAFETY: 512..1024 lies inside the 8192-byte buffer.
        let slice = unsafe { std::slice::from_raw_parts_mut(buf.ptr.add(512), 512) };
        if file.read_at(slice, 0).is_ok() {
            return 512;
        }
    }
    4096
}

const BLKSSZGET: libc::c_ulong = 0x1268;
const BLKDISCARD: libc::c_ulong = 0x1277;
const BLKZEROOUT: libc::c_ulong = 0x127f;

/// A zeroed buffer with the alignment O_DIRECT needs.
pub(crate) struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: the buffer is plain memory owned by this value.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    pub(crate) fn new(len: usize, align: usize) -> io::Result<AlignedBuf> {
        let layout = Layout::from_size_align(len.max(1), align.max(1))
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        Ok(AlignedBuf { ptr, layout })
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr points at layout.size() initialised bytes we own.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `new`.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

impl Driver for FileDriver {
    fn name(&self) -> &'static str {
        if self.host_device {
            "host_device"
        } else {
            "file"
        }
    }

    fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.aligned(offset, buf.len(), buf.as_ptr() as usize) {
            return self.pread_full(offset, buf);
        }
        let (start, mut b) = self.bounce(offset, buf.len())?;
        let inner = b.as_mut_slice();
        self.pread_full(start, inner)?;
        let skip = (offset - start) as usize;
        buf.copy_from_slice(&inner[skip..skip + buf.len()]);
        Ok(())
    }

    fn write(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if self.aligned(offset, buf.len(), buf.as_ptr() as usize) {
            return self.pwrite_full(offset, buf);
        }
        let (start, mut b) = self.bounce(offset, buf.len())?;
        let skip = (offset - start) as usize;
        let _guard = self.rmw.lock().unwrap_or_else(|e| e.into_inner());
        let inner = b.as_mut_slice();
        let partial = skip != 0 || inner.len() != buf.len();
        if partial {
            self.pread_full(start, inner)?;
        }
        inner[skip..skip + buf.len()].copy_from_slice(buf);
        let before = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        self.pwrite_full(start, inner)?;
        // The aligned write may have run past the end of a file whose
        // size is not aligned: put the end back where it belongs.
        let end = (offset + buf.len() as u64).max(before);
        if self.regular && start + inner.len() as u64 > end {
            self.file.set_len(end)?;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn host_extent(&self) -> Option<crate::node::HostExtent> {
        Some(crate::node::HostExtent {
            file: self.file.clone(),
            base: 0,
            align: self.align.max(1),
            native_aio: self.native_aio,
            nodes: Vec::new(),
        })
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        let r = if self.regular {
            // SAFETY: fallocate on a descriptor we own.
            unsafe {
                libc::fallocate(
                    fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    offset as i64,
                    len as i64,
                )
            }
        } else {
            let range = [offset, len];
            // SAFETY: BLKDISCARD reads two u64.
            unsafe { libc::ioctl(fd, BLKDISCARD, range.as_ptr()) }
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            // A discard is advice: where the host cannot, nothing happens.
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) | Some(libc::EINVAL)
            ) {
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        let r = if self.regular {
            let mode = if may_unmap {
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
            } else {
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
            };
            // SAFETY: fallocate on a descriptor we own.
            unsafe { libc::fallocate(fd, mode, offset as i64, len as i64) }
        } else {
            let range = [offset, len];
            // SAFETY: BLKZEROOUT reads two u64.
            unsafe { libc::ioctl(fd, BLKZEROOUT, range.as_ptr()) }
        };
        if r == 0 {
            return Ok(());
        }
        // Fall back to writing zeroes, a bounded chunk at a time.
        let chunk = (1u64 << 20).min(len.max(1)) as usize;
        let align = self.align.max(1) as usize;
        let mut zeroes = AlignedBuf::new(chunk.div_ceil(align) * align, align)?;
        let z = zeroes.as_mut_slice();
        let mut done = 0;
        while done < len {
            let n = (len - done).min(chunk as u64) as usize;
            self.write(offset + done, &z[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    fn truncate(&self, size: u64) -> Result<()> {
        let meta = self.file.metadata().map_err(|e| {
            BlockError::generic(format!("Failed to resize the file: {}", strerror(&e)))
        })?;
        let ft = meta.file_type();
        if ft.is_file() {
            self.file.set_len(size).map_err(|e| {
                BlockError::generic(format!("Failed to resize the file: {}", strerror(&e)))
            })?;
            self.size.store(size, Ordering::Relaxed);
            Ok(())
        } else if ft.is_block_device() || ft.is_char_device() {
            let now = Self::probe_size(&self.file, &meta).unwrap_or(self.size());
            if size > now {
                return Err(BlockError::generic("Cannot grow device files"));
            }
            self.size.store(now, Ordering::Relaxed);
            Ok(())
        } else {
            Err(BlockError::generic("Resizing this file is not supported"))
        }
    }

    fn filename(&self) -> String {
        self.filename.clone()
    }

    fn actual_size(&self) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        self.file.metadata().ok().map(|m| m.blocks() * 512)
    }

    fn check_perm(&self, perm_: u64, shared: u64) -> Result<()> {
        if !self.locking {
            return Ok(());
        }
        for (i, name) in perm::NAMES.iter().enumerate() {
            let bit = 1u64 << i;
            if perm_ & bit != 0 && self.someone_holds(LOCK_BASE_SHARED + i as i64) {
                return Err(BlockError::Locked {
                    message: format!("Failed to get \"{name}\" lock"),
                    hint: LOCK_HINT,
                });
            }
        }
        for (i, name) in perm::NAMES.iter().enumerate() {
            let bit = 1u64 << i;
            if shared & bit == 0 && self.someone_holds(LOCK_BASE_PERM + i as i64) {
                return Err(BlockError::Locked {
                    message: format!("Failed to get shared \"{name}\" lock"),
                    hint: LOCK_HINT,
                });
            }
        }
        Ok(())
    }

    /// The file again on the same descriptor (dup3 over it), so that
    /// requests and extents holding the descriptor see the new mode; the
    /// locks follow: the write lock is taken (after checking nobody
    /// forbids writing) for a read-write reopen and dropped again after.
    fn reopen_file(&self, read_only: bool) -> io::Result<()> {
        let (perm_, shared) = *self.held.lock().unwrap_or_else(|e| e.into_inner());
        let want = if read_only {
            perm_ & !perm::WRITE
        } else {
            perm_ | perm::WRITE
        };
        if !read_only && self.check_perm(want, shared).is_err() {
            return Err(io::Error::from_raw_os_error(libc::EACCES));
        }
        let mut flags = libc::O_CLOEXEC;
        if self.direct {
            flags |= libc::O_DIRECT;
        }
        let new = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .custom_flags(flags)
            .open(&self.filename)?;
        // SAFETY: both descriptors are ours; dup3 atomically makes the
        // old number refer to the new open file description.
        if unsafe { libc::dup3(new.as_raw_fd(), self.file.as_raw_fd(), libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        drop(new);
        // The old description and its locks are gone: take them anew.
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = (0, perm::ALL);
        self.set_perm(want, shared);
        Ok(())
    }

    fn set_perm(&self, perm_: u64, shared: u64) {
        if !self.locking {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..perm::NAMES.len() {
            let bit = 1u64 << i;
            let kind = |on: bool| {
                if on {
                    libc::F_RDLCK as libc::c_short
                } else {
                    libc::F_UNLCK as libc::c_short
                }
            };
            if (held.0 ^ perm_) & bit != 0 {
                let _ = self.lock_byte(
                    libc::F_OFD_SETLK,
                    kind(perm_ & bit != 0),
                    LOCK_BASE_PERM + i as i64,
                );
            }
            if (held.1 ^ shared) & bit != 0 {
                let _ = self.lock_byte(
                    libc::F_OFD_SETLK,
                    kind(shared & bit == 0),
                    LOCK_BASE_SHARED + i as i64,
                );
            }
        }
        *held = (perm_, shared);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str, len: u64) -> String {
        let dir = std::env::temp_dir().join(format!("block-file-{tag}-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let p = dir.join("img");
        let f = File::create(&p).unwrap();
        f.set_len(len).unwrap();
        p.to_string_lossy().into_owned()
    }

    fn opts(filename: &str, direct: bool) -> FileOptions {
        FileOptions {
            filename: filename.to_string(),
            read_only: false,
            direct,
            locking: true,
            host_device: false,
            native_aio: false,
        }
    }

    #[test]
    fn missing_file_has_qemus_text() {
        let e = FileDriver::open(&opts("/nonexistent/x.img", false))
            .err()
            .unwrap();
        assert_eq!(
            e.message(),
            "Could not open '/nonexistent/x.img': No such file or directory"
        );
    }

    #[test]
    fn direct_unaligned_io_goes_through_bounce_buffers() {
        let path = temp("direct", 10000);
        let d = FileDriver::open(&opts(&path, true)).unwrap();
        assert!(d.align >= 512);
        let data: Vec<u8> = (0..700).map(|i| (i % 251) as u8).collect();
        d.write(100, &data).unwrap();
        let mut back = vec![0u8; 700];
        d.read(100, &mut back).unwrap();
        assert_eq!(back, data);
        // Near the unaligned end: the file keeps its size.
        d.write(9990, &[7u8; 10]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 10000);
        let mut tail = [0u8; 10];
        d.read(9990, &mut tail).unwrap();
        assert_eq!(tail, [7u8; 10]);
        d.write_zeroes(100, 700, false).unwrap();
        d.read(100, &mut back).unwrap();
        assert!(back.iter().all(|b| *b == 0));
    }

    #[test]
    fn locks_conflict_between_open_file_descriptions() {
        let path = temp("lock", 4096);
        let a = FileDriver::open(&opts(&path, false)).unwrap();
        let b = FileDriver::open(&opts(&path, false)).unwrap();
        a.set_perm(perm::CONSISTENT_READ | perm::WRITE, perm::CONSISTENT_READ);
        let e = b
            .check_perm(perm::CONSISTENT_READ | perm::WRITE, perm::ALL)
            .unwrap_err();
        assert_eq!(e.message(), "Failed to get \"write\" lock");
        assert_eq!(e.hint(), Some(LOCK_HINT));
        let e = b
            .check_perm(perm::CONSISTENT_READ, perm::CONSISTENT_READ)
            .unwrap_err();
        assert_eq!(e.message(), "Failed to get shared \"write\" lock");
        assert!(b.check_perm(perm::CONSISTENT_READ, perm::ALL).is_ok());
        a.set_perm(0, perm::ALL);
        assert!(b.check_perm(perm::WRITE, perm::CONSISTENT_READ).is_ok());
    }
}
