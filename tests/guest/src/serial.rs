//! Polled 16550 on COM1 (0x3f8). Every output line is
//! `vmm-guest: <text>\n`, written whole under a spinlock (several CPUs
//! print). With the FIFO on, up to 16 bytes go out per THRE poll, so a
//! line costs about one port exit per byte.

use crate::x86::{inb, outb, pause};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const COM1: u16 = 0x3f8;
const THR: u16 = COM1;
const IER: u16 = COM1 + 1;
const DLL: u16 = COM1;
const DLM: u16 = COM1 + 1;
const FCR: u16 = COM1 + 2;
const IIR: u16 = COM1 + 2;
const LCR: u16 = COM1 + 3;
const MCR: u16 = COM1 + 4;
const LSR: u16 = COM1 + 5;
const LSR_THRE: u8 = 0x20;
const LSR_DR: u8 = 0x01;
const LSR_BI: u8 = 0x10;
const RBR: u16 = COM1;

pub const PREFIX: &str = "vmm-guest: ";

static LOCK: AtomicBool = AtomicBool::new(false);
static BURST: AtomicUsize = AtomicUsize::new(1);

pub fn init() {
    outb(IER, 0x00); // no interrupts
    outb(LCR, 0x80); // DLAB
    outb(DLL, 0x01); // 115200 baud
    outb(DLM, 0x00);
    outb(LCR, 0x03); // 8N1
    outb(FCR, 0x07); // FIFO on, both cleared
    outb(MCR, 0x03); // DTR, RTS
    let fifo = inb(IIR) & 0xc0 == 0xc0;
    BURST.store(if fifo { 16 } else { 1 }, Ordering::Relaxed);
    // Firmware may have left a partial line ("Booting from ROM.."): start
    // on a fresh one so every guest line begins with PREFIX.
    write_raw(b"\n");
}

/// Writes raw bytes (no locking).
fn write_raw(bytes: &[u8]) {
    let burst = BURST.load(Ordering::Relaxed);
    for chunk in bytes.chunks(burst) {
        // An absent UART reads 0xff: THRE set, never blocks.
        let mut spins = 0u32;
        while inb(LSR) & LSR_THRE == 0 && spins < 1_000_000 {
            pause();
            spins += 1;
        }
        for &b in chunk {
            outb(THR, b);
        }
    }
}

/// A received byte, if one waits (polled, no interrupts), and whether
/// a break was seen (LSR BI, cleared by this read of LSR).
pub fn read_byte() -> (Option<u8>, bool) {
    let lsr = inb(LSR);
    let byte = if lsr & LSR_DR != 0 {
        Some(inb(RBR))
    } else {
        None
    };
    (byte, lsr & LSR_BI != 0)
}

/// Formats into a fixed buffer (truncating), so the lock is held only
/// while bytes go out.
pub struct LineBuf {
    buf: [u8; 512],
    len: usize,
}

impl LineBuf {
    pub const fn new() -> Self {
        LineBuf {
            buf: [0; 512],
            len: 0,
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

fn format_line(args: fmt::Arguments) -> LineBuf {
    let mut b = LineBuf::new();
    let _ = b.write_str(PREFIX);
    let _ = b.write_fmt(args);
    if b.len == b.buf.len() {
        b.len -= 1;
    }
    b.buf[b.len] = b'\n';
    b.len += 1;
    b
}

pub struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        LOCK.store(false, Ordering::Release);
    }
}

pub fn lock() -> Guard {
    while LOCK.swap(true, Ordering::Acquire) {
        while LOCK.load(Ordering::Relaxed) {
            pause();
        }
    }
    Guard
}

/// Prints `vmm-guest: <args>\n`.
pub fn line(args: fmt::Arguments) {
    let b = format_line(args);
    let _g = lock();
    write_raw(b.as_bytes());
}

/// For the fault path: takes the lock if it can, prints anyway if not
/// (the faulting CPU may hold it).
pub fn line_force(args: fmt::Arguments) {
    let b = format_line(args);
    let mut tries = 0;
    let got = loop {
        if !LOCK.swap(true, Ordering::Acquire) {
            break true;
        }
        tries += 1;
        if tries > 10_000 {
            break false;
        }
        pause();
    };
    write_raw(b.as_bytes());
    if got {
        LOCK.store(false, Ordering::Release);
    }
}

#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::serial::line(format_args!($($arg)*)) };
}
