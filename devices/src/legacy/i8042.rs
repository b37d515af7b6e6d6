//! The i8042 keyboard controller, as far as firmware and kernels probe it,
//! with its CPU reset line (command 0xfe, or output port bit 0 cleared).

use crate::bus::BusDevice;
use crate::platform::{InterruptLine, PlatformRequest, RequestSink};
use std::collections::VecDeque;
use std::sync::Arc;

const STATUS_OBF: u8 = 0x01;
const STATUS_SYS: u8 = 0x04;
const STATUS_CMD: u8 = 0x08;
const CCB_KBD_INT: u8 = 0x01;

pub struct I8042 {
    status: u8,
    ccb: u8,
    output: VecDeque<u8>,
    /// The command whose data byte comes next through port 0x60.
    pending: Option<u8>,
    sink: Arc<dyn RequestSink>,
    kbd_irq: Arc<dyn InterruptLine>,
}

impl I8042 {
    pub fn new(sink: Arc<dyn RequestSink>, kbd_irq: Arc<dyn InterruptLine>) -> I8042 {
        I8042 {
            status: STATUS_SYS,
            ccb: 0x45,
            output: VecDeque::new(),
            pending: None,
            sink,
            kbd_irq,
        }
    }

    fn push(&mut self, byte: u8) {
        if self.output.len() < 16 {
            self.output.push_back(byte);
        }
        if self.ccb & CCB_KBD_INT != 0 {
            self.kbd_irq.pulse();
        }
    }

    fn command(&mut self, cmd: u8) {
        self.status |= STATUS_CMD;
        match cmd {
            0x20 => self.push(self.ccb),
            0x60 | 0xd1 | 0xd2 | 0xd3 | 0xd4 => self.pending = Some(cmd),
            0xaa => self.push(0x55),        // self-test passed
            0xa9 | 0xab => self.push(0x00), // port tests passed
            0xad => self.ccb |= 0x10,
            0xae => self.ccb &= !0x10,
            0xa7 => self.ccb |= 0x20,
            0xa8 => self.ccb &= !0x20,
            0xd0 => self.push(0x01 | 0x02),
            // Pulse output port bits; bit 0 is the CPU reset line.
            0xf0..=0xff if cmd & 0x01 == 0 => self.sink.request(PlatformRequest::Reset),
            _ => {}
        }
    }

    fn data(&mut self, byte: u8) {
        self.status &= !STATUS_CMD;
        match self.pending.take() {
            Some(0x60) => self.ccb = byte,
            Some(0xd1) if byte & 0x01 == 0 => self.sink.request(PlatformRequest::Reset),
            Some(0xd1) => {}
            Some(0xd2) => self.push(byte),
            Some(_) => {}
            // Keyboard commands: acknowledge; reset answers self-test ok.
            None => match byte {
                0xff => {
                    self.push(0xfa);
                    self.push(0xaa);
                }
                0xf2 => {
                    self.push(0xfa);
                    self.push(0xab);
                    self.push(0x83);
                }
                _ => self.push(0xfa),
            },
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            0 => self.output.pop_front().unwrap_or(0),
            4 => {
                let obf = if self.output.is_empty() {
                    0
                } else {
                    STATUS_OBF
                };
                self.status | obf
            }
            _ => 0xff,
        };
        data.fill(v);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            0 => self.data(v),
            4 => self.command(v),
            _ => {}
        }
    }
}

impl crate::state::DeviceState for I8042 {
    fn state_name(&self) -> &'static str {
        "pckbd"
    }

    fn save_state(&self) -> Result<Vec<u8>, crate::state::StateError> {
        let out: Vec<u8> = self.output.iter().copied().collect();
        Ok(crate::state::StateWriter::new(1)
            .u8(self.status)
            .u8(self.ccb)
            .bool(self.pending.is_some())
            .u8(self.pending.unwrap_or(0))
            .bytes(&out)
            .finish())
    }

    fn load_state(&mut self, data: &[u8]) -> Result<(), crate::state::StateError> {
        let mut r = crate::state::StateReader::new(data, "pckbd", 1)?;
        self.status = r.u8()?;
        self.ccb = r.u8()?;
        let has_pending = r.bool()?;
        let pending = r.u8()?;
        self.pending = has_pending.then_some(pending);
        self.output = r.bytes(16)?.iter().copied().collect();
        r.end()
    }
}
