//! A 16550A UART, as at COM1-COM4 of a PC, on a chardev.
//!
//! Output goes to the chardev as the guest writes it; when the chardev
//! cannot take more (a slow socket or pty reader), the bytes wait in the
//! transmit FIFO (16 bytes, 1 without FIFO) and the guest sees THRE clear
//! until the chardev has room again, so nothing the guest waited for is
//! lost. Input is pulled from the chardev as the receive FIFO has room.

use crate::bus::BusDevice;
use crate::chardev::{Chardev, Frontend};
use crate::platform::InterruptLine;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

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
const IER_RLS: u8 = 0x04;
const IIR_NONE: u8 = 0x01;
const IIR_THRE: u8 = 0x02;
const IIR_RX: u8 = 0x04;
const IIR_RLS: u8 = 0x06;
const IIR_FIFO: u8 = 0xc0;
const LCR_DLAB: u8 = 0x80;
const LSR_DR: u8 = 0x01;
const LSR_BI: u8 = 0x10;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;
const MCR_LOOP: u8 = 0x10;
const MCR_OUT2: u8 = 0x08;
/// Receive FIFO depth; input beyond it waits in the backend.
pub const RX_FIFO: usize = 64;
/// Transmit FIFO depth with the FIFOs enabled.
pub const TX_FIFO: usize = 16;

pub struct Serial16550 {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    fcr: u8,
    divisor: u16,
    thre_pending: bool,
    /// A break was received; cleared by reading LSR.
    break_seen: bool,
    rx: VecDeque<u8>,
    /// Bytes the chardev has not taken yet.
    tx: VecDeque<u8>,
    irq: Arc<dyn InterruptLine>,
    /// The level last given to `irq`.
    irq_level: bool,
    chardev: Option<Chardev>,
}

/// The UART as its chardev's frontend.
struct UartFrontend(Weak<Mutex<Serial16550>>);

impl UartFrontend {
    fn with(&self, f: impl FnOnce(&mut Serial16550)) {
        if let Some(u) = self.0.upgrade() {
            f(&mut u.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }
}

impl Frontend for UartFrontend {
    fn input_ready(&self) {
        self.with(|u| {
            u.pull_input();
            u.update_irq();
        });
    }

    fn output_ready(&self) {
        self.with(Serial16550::flush_tx);
    }

    fn send_break(&self) {
        self.with(Serial16550::receive_break);
    }
}

impl Serial16550 {
    /// A UART writing to `chardev` (None: output discarded, no input).
    /// Call [`Serial16550::attach`] once it is shared, for input.
    pub fn new(irq: Arc<dyn InterruptLine>, chardev: Option<Chardev>) -> Serial16550 {
        Serial16550 {
            ier: 0,
            lcr: 0x03,
            mcr: MCR_OUT2,
            scr: 0,
            fcr: 0,
            divisor: 12, // 9600 baud
            thre_pending: false,
            break_seen: false,
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            irq,
            irq_level: false,
            chardev,
        }
    }

    /// Makes the UART its chardev's frontend: input, room for output
    /// and breaks reach it from then on. Fails if another device uses
    /// the chardev.
    pub fn attach(uart: &Arc<Mutex<Serial16550>>) -> Result<(), String> {
        let chardev = uart
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .chardev
            .clone();
        if let Some(c) = chardev {
            // On a mux the handle names this frontend: use it from now on.
            let handle = c.attach(Arc::new(UartFrontend(Arc::downgrade(uart))), true)?;
            uart.lock().unwrap_or_else(|e| e.into_inner()).chardev = Some(handle);
        }
        Ok(())
    }

    /// The chardev behind the UART.
    pub fn chardev(&self) -> Option<&Chardev> {
        self.chardev.as_ref()
    }

    /// Bytes from the backend; returns how many fit in the FIFO.
    pub fn queue_input(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(RX_FIFO - self.rx.len());
        self.rx.extend(&bytes[..n]);
        self.update_irq();
        n
    }

    fn pull_input(&mut self) {
        let room = RX_FIFO.saturating_sub(self.rx.len());
        if room == 0 {
            return;
        }
        if let Some(c) = &self.chardev {
            let bytes = c.read_input(room);
            self.rx.extend(bytes);
        }
    }

    /// A break on the line: a NUL byte with LSR BI set.
    pub fn receive_break(&mut self) {
        if self.rx.len() < RX_FIFO {
            self.rx.push_back(0);
        }
        self.break_seen = true;
        self.update_irq();
    }

    /// Hands waiting output to the chardev; THRE when all of it went.
    fn flush_tx(&mut self) {
        if self.tx.is_empty() {
            return;
        }
        while !self.tx.is_empty() {
            let n = match &self.chardev {
                Some(c) => c.write(self.tx.as_slices().0),
                None => self.tx.len(),
            };
            self.tx.drain(..n);
            if n == 0 {
                break;
            }
        }
        if self.tx.is_empty() {
            self.thre_pending = true;
            self.update_irq();
        }
    }

    pub fn reset(&mut self) {
        self.ier = 0;
        self.lcr = 0x03;
        self.mcr = MCR_OUT2;
        self.scr = 0;
        self.fcr = 0;
        self.divisor = 12;
        self.thre_pending = false;
        self.break_seen = false;
        self.rx.clear();
        self.tx.clear();
        self.update_irq();
    }

    fn iir(&self) -> u8 {
        let fifo = if self.fcr & 1 != 0 { IIR_FIFO } else { 0 };
        if self.ier & IER_RLS != 0 && self.break_seen {
            IIR_RLS | fifo
        } else if self.ier & IER_RX != 0 && !self.rx.is_empty() {
            IIR_RX | fifo
        } else if self.ier & IER_THRE != 0 && self.thre_pending {
            IIR_THRE | fifo
        } else {
            IIR_NONE | fifo
        }
    }

    fn update_irq(&mut self) {
        // Each change of the line is an ioctl: only tell it changes.
        let level = self.iir() & IIR_NONE == 0;
        if level != self.irq_level {
            self.irq_level = level;
            self.irq.set_level(level);
        }
    }

    fn transmit(&mut self, byte: u8) {
        if self.mcr & MCR_LOOP != 0 {
            if self.rx.len() < RX_FIFO {
                self.rx.push_back(byte);
            }
            self.thre_pending = true;
            self.update_irq();
            return;
        }
        let depth = if self.fcr & 1 != 0 { TX_FIFO } else { 1 };
        // A byte written while the FIFO is full is lost, as on hardware.
        if self.tx.len() < depth {
            self.tx.push_back(byte);
        }
        self.thre_pending = false;
        self.flush_tx();
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
                self.pull_input();
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
                let thre = if self.tx.is_empty() {
                    LSR_THRE | LSR_TEMT
                } else {
                    0
                };
                let bi = if self.break_seen { LSR_BI } else { 0 };
                if self.break_seen {
                    self.break_seen = false;
                    self.update_irq();
                }
                dr | thre | bi
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
        let tx: Vec<u8> = self.tx.iter().copied().collect();
        Ok(crate::state::StateWriter::new(2)
            .u8(self.ier)
            .u8(self.lcr)
            .u8(self.mcr)
            .u8(self.scr)
            .u8(self.fcr)
            .u16(self.divisor)
            .bool(self.thre_pending)
            .bool(self.break_seen)
            .bytes(&rx)
            .bytes(&tx)
            .finish())
    }

    fn load_state(&mut self, data: &[u8]) -> Result<(), crate::state::StateError> {
        let mut r = crate::state::StateReader::new(data, "serial", 2)?;
        self.ier = r.u8()?;
        self.lcr = r.u8()?;
        self.mcr = r.u8()?;
        self.scr = r.u8()?;
        self.fcr = r.u8()?;
        self.divisor = r.u16()?;
        self.thre_pending = r.bool()?;
        self.break_seen = r.bool()?;
        self.rx = r.bytes(RX_FIFO)?.iter().copied().collect();
        // Unsent output travels with the UART, to go out on the destination.
        self.tx = r.bytes(TX_FIFO)?.iter().copied().collect();
        r.end()?;
        self.update_irq();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chardev::Registry;
    use crate::platform::NoInterrupt;
    use qmp::qapi::{ChardevBackend, ChardevFile, ChardevRingbuf};

    fn ring(reg: &mut Registry, id: &str) -> Chardev {
        let b = ChardevBackend::Ringbuf(ChardevRingbuf {
            logfile: None,
            logappend: None,
            size: Some(64),
        });
        reg.add(id, &b).unwrap().0
    }

    #[test]
    fn transmits_and_loops_back() {
        let mut reg = Registry::new();
        let c = ring(&mut reg, "r");
        let mut s = Serial16550::new(Arc::new(NoInterrupt), Some(c));
        for b in b"hi\n" {
            s.write(DATA, &[*b]);
        }
        assert_eq!(reg.ringbuf_read("r", 10, None).unwrap(), "hi\n");
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

    #[test]
    fn break_sets_bi_once() {
        let mut reg = Registry::new();
        let c = ring(&mut reg, "r");
        let uart = Arc::new(Mutex::new(Serial16550::new(Arc::new(NoInterrupt), Some(c))));
        Serial16550::attach(&uart).unwrap();
        reg.send_break("r").unwrap();
        let mut u = uart.lock().unwrap();
        let mut v = [0u8];
        u.read(LSR, &mut v);
        assert_eq!(v[0] & (LSR_BI | LSR_DR), LSR_BI | LSR_DR);
        u.read(LSR, &mut v);
        assert_eq!(v[0] & LSR_BI, 0);
        u.read(DATA, &mut v);
        assert_eq!(v[0], 0);
    }

    #[test]
    fn input_from_file_reaches_the_fifo() {
        let dir = std::env::temp_dir().join(format!("serial-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("in");
        std::fs::write(&input, vec![b'x'; 100]).unwrap();
        let mut reg = Registry::new();
        let b = ChardevBackend::File(ChardevFile {
            logfile: None,
            logappend: None,
            r#in: Some(input.display().to_string()),
            out: dir.join("out").display().to_string(),
            append: None,
        });
        let (c, _) = reg.add("f", &b).unwrap();
        let uart = Arc::new(Mutex::new(Serial16550::new(Arc::new(NoInterrupt), Some(c))));
        Serial16550::attach(&uart).unwrap();
        let mut got = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got < 100 && std::time::Instant::now() < deadline {
            let mut u = uart.lock().unwrap();
            let mut v = [0u8];
            u.read(LSR, &mut v);
            if v[0] & LSR_DR != 0 {
                u.read(DATA, &mut v);
                assert_eq!(v[0], b'x');
                got += 1;
            } else {
                drop(u);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        assert_eq!(got, 100);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
