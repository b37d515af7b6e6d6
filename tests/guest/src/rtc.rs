//! MC146818 CMOS RTC through ports 0x70/0x71. The index is written with
//! bit 7 clear: NMIs stay enabled.

use crate::x86::{inb, outb};

pub fn read(reg: u8) -> u8 {
    outb(0x70, reg & 0x7f);
    inb(0x71)
}

pub fn write(reg: u8, value: u8) {
    outb(0x70, reg & 0x7f);
    outb(0x71, value);
}

#[derive(PartialEq, Eq, Clone, Copy)]
pub struct Raw {
    pub sec: u8,
    pub min: u8,
    pub hour: u8,
    pub day: u8,
    pub mon: u8,
    pub year: u8,
    pub century: u8,
}

fn read_raw() -> Raw {
    Raw {
        sec: read(0x00),
        min: read(0x02),
        hour: read(0x04),
        day: read(0x07),
        mon: read(0x08),
        year: read(0x09),
        century: read(0x32),
    }
}

pub struct DateTime {
    pub year: u32,
    pub mon: u8,
    pub day: u8,
    pub hour: u8,
    pub min: u8,
    pub sec: u8,
    pub status_b: u8,
    pub century_reg: u8,
}

fn bcd(v: u8) -> u8 {
    (v >> 4) * 10 + (v & 0xf)
}

/// Reads the date and time, consistently: waits for no update in
/// progress, then reads until two snapshots agree.
pub fn now() -> DateTime {
    let mut prev: Option<Raw> = None;
    let mut raw = read_raw();
    for _ in 0..100 {
        let mut spins = 0;
        while read(0x0a) & 0x80 != 0 && spins < 100_000 {
            spins += 1;
        }
        raw = read_raw();
        if prev == Some(raw) {
            break;
        }
        prev = Some(raw);
    }
    let b = read(0x0b);
    let binary = b & 0x04 != 0;
    let h24 = b & 0x02 != 0;
    let conv = |v: u8| if binary { v } else { bcd(v) };
    let pm = raw.hour & 0x80 != 0;
    let mut hour = conv(raw.hour & 0x7f);
    if !h24 {
        hour %= 12;
        if pm {
            hour += 12;
        }
    }
    let cent = conv(raw.century);
    let year = if (19..=21).contains(&cent) {
        cent as u32 * 100 + conv(raw.year) as u32
    } else {
        2000 + conv(raw.year) as u32
    };
    DateTime {
        year,
        mon: conv(raw.mon),
        day: conv(raw.day),
        hour,
        min: conv(raw.min),
        sec: conv(raw.sec),
        status_b: b,
        century_reg: raw.century,
    }
}

impl DateTime {
    pub fn valid(&self) -> bool {
        (1..=12).contains(&self.mon)
            && (1..=31).contains(&self.day)
            && self.hour < 24
            && self.min < 60
            && self.sec < 60
    }
}
