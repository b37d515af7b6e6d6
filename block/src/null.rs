//! `null-co` and `null-aio`: a device of a given size that reads
//! zeroes and forgets what is written (QEMU's block/null.c), optionally
//! after a delay per request.

use crate::error::{BlockError, Result};
use crate::node::Driver;
use std::io;
use std::time::Duration;

pub(crate) struct NullDriver {
    aio: bool,
    size: u64,
    latency: Duration,
}

impl NullDriver {
    pub(crate) fn new(aio: bool, size: Option<i64>, latency_ns: Option<u64>) -> NullDriver {
        NullDriver {
            aio,
            // QEMU's default is 1 GiB; a negative size counts as huge.
            size: size.map_or(1 << 30, |s| s as u64),
            latency: Duration::from_nanos(latency_ns.unwrap_or(0)),
        }
    }

    fn delay(&self) {
        if !self.latency.is_zero() {
            std::thread::sleep(self.latency);
        }
    }
}

impl Driver for NullDriver {
    fn name(&self) -> &'static str {
        if self.aio {
            "null-aio"
        } else {
            "null-co"
        }
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, _offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.delay();
        // QEMU 2.11 leaves the buffer as it was; vmm gives zeroes so
        // that no stale memory reaches a guest.
        buf.fill(0);
        Ok(())
    }

    fn write(&self, _offset: u64, _buf: &[u8]) -> io::Result<()> {
        self.delay();
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.delay();
        Ok(())
    }

    fn discard(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn write_zeroes(&self, _offset: u64, _len: u64, _may_unmap: bool) -> io::Result<()> {
        self.delay();
        Ok(())
    }

    fn truncate(&self, _size: u64) -> Result<()> {
        Err(BlockError::generic(
            "Image format driver does not support resize",
        ))
    }

    fn filename(&self) -> String {
        format!("{}://", self.name())
    }
}
