//! `isa-debug-exit`: a write ends the VMM with status `(value << 1) | 1`,
//! as QEMU's device does; tests use it to report their result.

use crate::bus::BusDevice;
use crate::platform::{PlatformRequest, RequestSink};
use std::sync::Arc;

pub struct DebugExit {
    sink: Arc<dyn RequestSink>,
}

impl DebugExit {
    pub fn new(sink: Arc<dyn RequestSink>) -> DebugExit {
        DebugExit { sink }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let mut v = [0u8; 4];
        let n = data.len().min(4);
        v[..n].copy_from_slice(&data[..n]);
        self.sink
            .request(PlatformRequest::DebugExit(u32::from_le_bytes(v)));
    }
}
