//! The reset control register at 0xcf9 (PIIX): bit 2 resets the machine.
//! The FADT names it as the ACPI reset register.

use crate::bus::BusDevice;
use crate::platform::{PlatformRequest, RequestSink};
use std::sync::Arc;

pub struct ResetControl {
    value: u8,
    sink: Arc<dyn RequestSink>,
}

impl ResetControl {
    pub fn new(sink: Arc<dyn RequestSink>) -> ResetControl {
        ResetControl { value: 0, sink }
    }
}

impl BusDevice for ResetControl {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(self.value);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        if v & 0x04 != 0 {
            self.value = 0;
            self.sink.request(PlatformRequest::Reset);
        } else {
            self.value = v & 0x02;
        }
    }
}

impl crate::state::DeviceState for ResetControl {
    fn state_name(&self) -> &'static str {
        "reset-control"
    }

    fn save_state(&self) -> Result<Vec<u8>, crate::state::StateError> {
        Ok(crate::state::StateWriter::new(1).u8(self.value).finish())
    }

    fn load_state(&mut self, data: &[u8]) -> Result<(), crate::state::StateError> {
        let mut r = crate::state::StateReader::new(data, "reset-control", 1)?;
        self.value = r.u8()? & 0x02;
        r.end()
    }
}
