//! The `raw` format: the child's bytes, optionally a window of them
//! (`offset`, `size`), as QEMU's raw-format.

use crate::error::{BlockError, Result};
use crate::node::{Driver, Node};
use qmp::qapi::BlkdebugEvent;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const SECTOR: u64 = 512;

pub(crate) struct RawDriver {
    file: Arc<Node>,
    offset: u64,
    /// `size` given: the window is fixed.
    fixed: bool,
    size: AtomicU64,
}

impl RawDriver {
    /// Checks `offset` and `size` against the child as QEMU does.
    pub(crate) fn open(
        file: Arc<Node>,
        offset: Option<i64>,
        size: Option<i64>,
    ) -> Result<RawDriver> {
        // QEMU reads both as unsigned sizes: a negative one is huge.
        let offset = offset.map_or(0, |o| o as u64);
        let real = file.size();
        if offset > real {
            return Err(BlockError::generic(format!(
                "Offset ({offset}) cannot be greater than size of the containing file ({real})"
            )));
        }
        let fixed = size.is_some();
        let size_v = match size {
            Some(s) => {
                let s = s as u64;
                if real - offset < s {
                    return Err(BlockError::generic(format!(
                        "The sum of offset ({offset}) and size ({s}) has to be smaller or equal to the  actual size of the containing file ({real})"
                    )));
                }
                if !s.is_multiple_of(SECTOR) {
                    return Err(BlockError::generic(format!(
                        "Specified size is not multiple of {SECTOR}"
                    )));
                }
                s
            }
            None => real - offset,
        };
        Ok(RawDriver {
            file,
            offset,
            fixed,
            size: AtomicU64::new(size_v),
        })
    }

    fn current_size(&self) -> u64 {
        if self.fixed {
            self.size.load(Ordering::Relaxed)
        } else {
            self.file.size().saturating_sub(self.offset)
        }
    }
}

impl Driver for RawDriver {
    fn reopen_file(&self, read_only: bool) -> io::Result<()> {
        self.file.driver.reopen_file(read_only)
    }

    fn name(&self) -> &'static str {
        "raw"
    }

    fn size(&self) -> u64 {
        self.current_size()
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.debug_event(BlkdebugEvent::ReadAio);
        self.file.read(self.offset + offset, buf)
    }

    fn write(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.debug_event(BlkdebugEvent::WriteAio);
        self.file.write(self.offset + offset, buf)
    }

    fn flush(&self) -> io::Result<()> {
        self.file.flush()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.file.discard(self.offset + offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> io::Result<()> {
        self.file.write_zeroes(self.offset + offset, len, may_unmap)
    }

    fn host_extent(&self) -> Option<crate::node::HostExtent> {
        Some(self.file.host_extent()?.shifted(self.offset))
    }

    fn truncate(&self, size: u64) -> Result<()> {
        if self.fixed {
            return Err(BlockError::generic("Cannot resize fixed-size raw disks"));
        }
        if i64::MAX as u64 - size < self.offset {
            return Err(BlockError::generic(
                "Disk size too large for the chosen offset",
            ));
        }
        self.file.driver.truncate(self.offset + size)
    }

    fn filename(&self) -> String {
        self.file.driver.filename()
    }

    fn actual_size(&self) -> Option<u64> {
        self.file.driver.actual_size()
    }
}
