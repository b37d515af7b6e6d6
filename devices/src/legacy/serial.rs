//! A 16550A UART, as at COM1-COM4 of a PC.

use crate::bus::BusDevice;
use crate::platform::InterruptLine;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;

const DATA: u64 = 0;
const IER: u64 = 1;
const IIR_FCR: u64 = 2;
const LCR: u64 = 3;
const MCR: u64 = 4;
const LSR: u64 = 5;
const MSR: u64 = 6;
const SCR: u64 = 7;

const IER_RX: u8 = 0x01;
const IER_THRE: u8 = 0x02;
const IIR_NONE: u8 = 0x01;
const IIR_THRE: u8 = 0x02;
const IIR_RX: u8 = 0x04;
const IIR_FIFO: u8 = 0xc0;
const LCR_DLAB: u8 = 0x80;
const LSR_DR: u8 = 0x01;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;
const MCR_LOOP: u8 = 0x10;
const MCR_OUT2: u8 = 0x08;
/// Receive FIFO depth; input beyond it waits in the backend.
pub const RX_FIFO: usize = 64;

pub struct Serial16550 {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    fcr: u8,
    divisor: u16,
    thre_pending: bool,
    rx: VecDeque<u8>,
    irq: Arc<dyn InterruptLine>,
    out: Option<Box<dyn Write + Send>>,
}

impl Serial16550 {
    pub fn new(irq: Arc<dyn InterruptLine>, out: Option<Box<dyn Write + Send>>) -> Serial16550 {
        Serial16550 {
            ier: 0,
            lcr: 0x03,
            mcr: MCR_OUT2,
            scr: 0,
            fcr: 0,
            divisor: 12, // 9600 baud
            thre_pending: false,
            rx: VecDeque::new(),
            irq,
            out,
        }
    }

    /// Bytes from the backend; returns how many fit in the FIFO.
    pub fn queue_input(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(RX_FIFO - self.rx.len());
        self.rx.extend(&bytes[..n]);
        self.update_irq();
        n
    }

    pub fn reset(&mut self) {
        self.ier = 0;
        self.lcr = 0x03;
        self.mcr = MCR_OUT2;
        self.scr = 0;
        self.fcr = 0;
        self.divisor = 12;
        self.thre_pending = false;
        self.rx.clear();
        self.update_irq();
    }

    fn iir(&self) -> u8 {
        let fifo = if self.fcr & 1 != 0 { IIR_FIFO } else { 0 };
        if self.ier & IER_RX != 0 && !self.rx.is_empty() {
            IIR_RX | fifo
        } else if self.ier & IER_THRE != 0 && self.thre_pending {
            IIR_THRE | fifo
        } else {
            IIR_NONE | fifo
        }
    }

    fn update_irq(&self) {
        self.irq.set_level(self.iir() & IIR_NONE == 0);
    }

    fn transmit(&mut self, byte: u8) {
        if self.mcr & MCR_LOOP != 0 {
            if self.rx.len() < RX_FIFO {
                self.rx.push_back(byte);
            }
        } else if let Some(out) = self.out.as_mut() {
            // A backend that fails drops output rather than stopping the guest.
            if out.write_all(&[byte]).is_err() || (byte == b'\n' && out.flush().is_err()) {
                self.out = None;
            }
        }
        self.thre_pending = true;
        self.update_irq();
    }
}

impl BusDevice for Serial16550 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let Some(first) = data.first_mut() else {
            return;
        };
        *first = match offset {
            DATA if self.lcr & LCR_DLAB != 0 => self.divisor as u8,
            DATA => {
                let b = self.rx.pop_front().unwrap_or(0);
                self.update_irq();
                b
            }
            IER if self.lcr & LCR_DLAB != 0 => (self.divisor >> 8) as u8,
            IER => self.ier,
            IIR_FCR => {
                let v = self.iir();
                if v & 0x0f == IIR_THRE {
                    self.thre_pending = false;
                    self.update_irq();
                }
                v
            }
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => {
                let dr = if self.rx.is_empty() { 0 } else { LSR_DR };
                dr | LSR_THRE | LSR_TEMT
            }
            MSR if self.mcr & MCR_LOOP != 0 => {
                // Loopback wires DTR/RTS/OUT1/OUT2 to DSR/CTS/RI/DCD.
                let m = self.mcr;
                ((m & 0x01) << 5) | ((m & 0x02) << 3) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
            }
            MSR => 0xb0, // DCD, DSR, CTS
            SCR => self.scr,
            _ => 0xff,
        };
        for b in data.iter_mut().skip(1) {
            *b = 0xff;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            DATA if self.lcr & LCR_DLAB != 0 => {
                self.divisor = (self.divisor & 0xff00) | u16::from(v)
            }
            DATA => self.transmit(v),
            IER if self.lcr & LCR_DLAB != 0 => {
                self.divisor = (self.divisor & 0x00ff) | (u16::from(v) << 8)
            }
            IER => {
                let was = self.ier;
                self.ier = v & 0x0f;
                // Enabling the THRE interrupt with an empty THR raises it.
                if self.ier & IER_THRE != 0 && was & IER_THRE == 0 {
                    self.thre_pending = true;
                }
                self.update_irq();
            }
            IIR_FCR => {
                self.fcr = v;
                if v & 0x02 != 0 {
                    self.rx.clear();
                }
                self.update_irq();
            }
            LCR => self.lcr = v,
            MCR => self.mcr = v & 0x1f,
            SCR => self.scr = v,
            _ => {}
        }
    }
}

impl crate::state::DeviceState for Serial16550 {
    fn state_name(&self) -> &'static str {
        "serial"
    }

    fn save_state(&self) -> Result<Vec<u8>, crate::state::StateError> {
        let rx: Vec<u8> = self.rx.iter().copied().collect();
        Ok(crate::state::StateWriter::new(1)
            .u8(self.ier)
            .u8(self.lcr)
            .u8(self.mcr)
            .u8(self.scr)
            .u8(self.fcr)
            .u16(self.divisor)
            .bool(self.thre_pending)
            .bytes(&rx)
            .finish())
    }

    fn load_state(&mut self, data: &[u8]) -> Result<(), crate::state::StateError> {
        let mut r = crate::state::StateReader::new(data, "serial", 1)?;
        self.ier = r.u8()?;
        self.lcr = r.u8()?;
        self.mcr = r.u8()?;
        self.scr = r.u8()?;
        self.fcr = r.u8()?;
        self.divisor = r.u16()?;
        self.thre_pending = r.bool()?;
        self.rx = r.bytes(RX_FIFO)?.iter().copied().collect();
        r.end()?;
        self.update_irq();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::NoInterrupt;
    use std::sync::Mutex;

    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transmits_and_loops_back() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let mut s = Serial16550::new(Arc::new(NoInterrupt), Some(Box::new(Sink(buf.clone()))));
        for b in b"hi\n" {
            s.write(DATA, &[*b]);
        }
        assert_eq!(&*buf.lock().unwrap(), b"hi\n");
        let mut v = [0u8];
        s.read(LSR, &mut v);
        assert_eq!(v[0] & LSR_THRE, LSR_THRE);
        s.write(MCR, &[MCR_LOOP]);
        s.write(DATA, &[0x5a]);
        s.read(LSR, &mut v);
        assert_eq!(v[0] & LSR_DR, LSR_DR);
        s.read(DATA, &mut v);
        assert_eq!(v[0], 0x5a);
    }

    #[test]
    fn divisor_latch() {
        let mut s = Serial16550::new(Arc::new(NoInterrupt), None);
        s.write(LCR, &[LCR_DLAB]);
        s.write(DATA, &[1]);
        s.write(IER, &[0]);
        let mut v = [0u8];
        s.read(DATA, &mut v);
        assert_eq!(v[0], 1);
        s.write(LCR, &[0x03]);
        s.read(IER, &mut v);
        assert_eq!(v[0], 0);
    }
}
