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

impl crate::state::DeviceState for DebugExit {
    fn state_name(&self) -> &'static str {
        "isa-debug-exit"
    }

    /// The device holds no state.
    fn save_state(&self) -> Result<Vec<u8>, crate::state::StateError> {
        Ok(crate::state::StateWriter::new(1).finish())
    }

    fn load_state(&mut self, data: &[u8]) -> Result<(), crate::state::StateError> {
        crate::state::StateReader::new(data, "isa-debug-exit", 1)?.end()
    }
}
