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
