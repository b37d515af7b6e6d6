//! The CMOS RTC and NVRAM at ports 0x70/0x71 (MC146818): the clock runs
//! from host time plus an offset the guest may change, and the NVRAM
//! holds the memory sizes firmware reads.

use crate::bus::BusDevice;
use crate::platform::{InterruptLine, PlatformRequest, RequestSink};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

const SECONDS: usize = 0x00;
const MINUTES: usize = 0x02;
const HOURS: usize = 0x04;
const WEEKDAY: usize = 0x06;
const DAY: usize = 0x07;
const MONTH: usize = 0x08;
const YEAR: usize = 0x09;
const REG_A: usize = 0x0a;
const REG_B: usize = 0x0b;
const REG_C: usize = 0x0c;
const REG_D: usize = 0x0d;
const CENTURY: usize = 0x32;

const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;
const SECONDS_ALARM: usize = 0x01;
const MINUTES_ALARM: usize = 0x03;
const HOURS_ALARM: usize = 0x05;
const B_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The civil date (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub struct Cmos {
    index: usize,
    nmi_disabled: bool,
    nvram: [u8; 128],
    /// Guest time minus host time, in seconds.
    offset: i64,
    /// The guest second the last update-ended flag was raised for.
    last_update: i64,
    sink: Arc<dyn RequestSink>,
    irq: Arc<dyn InterruptLine>,
}

fn host_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Cmos {
    /// `below_4g` and `above_4g` are the RAM sizes in bytes on either side
    /// of the 4 GiB boundary, recorded where PC firmware looks for them.
    pub fn new(
        below_4g: u64,
        above_4g: u64,
        sink: Arc<dyn RequestSink>,
        irq: Arc<dyn InterruptLine>,
    ) -> Cmos {
        let mut nvram = [0u8; 128];
        nvram[REG_A] = 0x26;
        nvram[REG_B] = B_24H;
        nvram[REG_D] = 0x80;
        // Base memory 640 KiB; extended memory in KiB (1-16 MiB) and in
        // 64 KiB units above 16 MiB; memory above 4 GiB in 64 KiB units.
        nvram[0x15] = 0x80;
        nvram[0x16] = 0x02;
        let ext_kib = (below_4g.saturating_sub(1 << 20) / 1024).min(0xfc00);
        nvram[0x17] = ext_kib as u8;
        nvram[0x18] = (ext_kib >> 8) as u8;
        nvram[0x30] = ext_kib as u8;
        nvram[0x31] = (ext_kib >> 8) as u8;
        let above_16m = (below_4g.saturating_sub(16 << 20) >> 16).min(0xffff);
        nvram[0x34] = above_16m as u8;
        nvram[0x35] = (above_16m >> 8) as u8;
        let high = above_4g >> 16;
        nvram[0x5b] = high as u8;
        nvram[0x5c] = (high >> 8) as u8;
        nvram[0x5d] = (high >> 16) as u8;
        Cmos {
            index: 0,
            nmi_disabled: false,
            nvram,
            offset: 0,
            last_update: host_now(),
            sink,
            irq,
        }
    }

    /// The periodic interrupt's period (register A's rate select), if the
    /// guest enabled it.
    pub fn periodic_interval(&self) -> Option<std::time::Duration> {
        let rate = self.nvram[REG_A] & 0x0f;
        if self.nvram[REG_B] & B_PIE == 0 || rate == 0 {
            return None;
        }
        // Rates 1 and 2 mean 256 and 128 Hz on the MC146818; 3..15 are
        // 32768 >> (rate - 1) Hz.
        let hz: u64 = match rate {
            1 => 256,
            2 => 128,
            r => 32768 >> (r - 1),
        };
        Some(std::time::Duration::from_nanos(1_000_000_000 / hz))
    }

    /// Raises the flags of register C that are due (update-ended once per
    /// guest second, alarm when the time matches, periodic when `periodic`),
    /// and the interrupt when an enabled one is among them. Called by the
    /// machine's RTC timer.
    pub fn tick(&mut self, periodic: bool) {
        let now = host_now() + self.offset;
        let mut flags = 0;
        if periodic {
            flags |= C_PF;
        }
        if now != self.last_update && self.nvram[REG_B] & B_SET == 0 {
            self.last_update = now;
            flags |= C_UF;
            self.refresh();
            // An alarm byte with its top two bits set matches any value.
            let matches = |alarm: usize, reg: usize| {
                self.nvram[alarm] & 0xc0 == 0xc0 || self.nvram[alarm] == self.nvram[reg]
            };
            if matches(SECONDS_ALARM, SECONDS)
                && matches(MINUTES_ALARM, MINUTES)
                && matches(HOURS_ALARM, HOURS)
            {
                flags |= C_AF;
            }
        }
        if flags == 0 {
            return;
        }
        self.nvram[REG_C] |= flags;
        let enabled = self.nvram[REG_B] & (B_PIE | B_AIE | B_UIE);
        // PF, AF and UF sit at the bits of PIE, AIE and UIE.
        if self.nvram[REG_C] & enabled != 0 && self.nvram[REG_C] & C_IRQF == 0 {
            self.nvram[REG_C] |= C_IRQF;
            self.irq.set_level(true);
        }
    }

    pub fn nmi_disabled(&self) -> bool {
        self.nmi_disabled
    }

    fn encode(&self, v: u32) -> u8 {
        if self.nvram[REG_B] & B_BINARY != 0 {
            v as u8
        } else {
            (((v / 10) << 4) | (v % 10)) as u8
        }
    }

    fn decode(&self, v: u8) -> u32 {
        if self.nvram[REG_B] & B_BINARY != 0 {
            u32::from(v)
        } else {
            u32::from(v >> 4) * 10 + u32::from(v & 0x0f)
        }
    }

    /// Latches the current guest time into the time registers.
    fn refresh(&mut self) {
        let t = host_now() + self.offset;
        let days = t.div_euclid(86400);
        let secs = t.rem_euclid(86400) as u32;
        let (y, m, d) = civil_from_days(days);
        let hour = secs / 3600;
        self.nvram[SECONDS] = self.encode(secs % 60);
        self.nvram[MINUTES] = self.encode((secs / 60) % 60);
        self.nvram[HOURS] = if self.nvram[REG_B] & B_24H != 0 {
            self.encode(hour)
        } else {
            let h12 = if hour.is_multiple_of(12) {
                12
            } else {
                hour % 12
            };
            self.encode(h12) | if hour >= 12 { 0x80 } else { 0 }
        };
        // 1970-01-01 was a Thursday; the RTC counts Sunday as 1.
        self.nvram[WEEKDAY] = self.encode(((days + 4).rem_euclid(7) + 1) as u32);
        self.nvram[DAY] = self.encode(d);
        self.nvram[MONTH] = self.encode(m);
        self.nvram[YEAR] = self.encode((y.rem_euclid(100)) as u32);
        self.nvram[CENTURY] = self.encode((y / 100) as u32);
    }

    /// The guest time the time registers hold now.
    fn registers_time(&self) -> i64 {
        let hour_reg = self.nvram[HOURS];
        let mut hour = self.decode(hour_reg & 0x7f);
        if self.nvram[REG_B] & B_24H == 0 {
            hour %= 12;
            if hour_reg & 0x80 != 0 {
                hour += 12;
            }
        }
        let year = i64::from(self.decode(self.nvram[CENTURY])) * 100
            + i64::from(self.decode(self.nvram[YEAR]));
        let month = self.decode(self.nvram[MONTH]).clamp(1, 12);
        let day = self.decode(self.nvram[DAY]).clamp(1, 31);
        days_from_civil(year, month, day) * 86400
            + i64::from(hour) * 3600
            + i64::from(self.decode(self.nvram[MINUTES])) * 60
            + i64::from(self.decode(self.nvram[SECONDS]))
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            0 => 0xff,
            _ => match self.index {
                SECONDS | MINUTES | HOURS | WEEKDAY | DAY | MONTH | YEAR | CENTURY => {
                    if self.nvram[REG_B] & B_SET == 0 {
                        self.refresh();
                    }
                    self.nvram[self.index]
                }
                REG_C => {
                    // Reading C acknowledges every flag and the interrupt.
                    self.irq.set_level(false);
                    std::mem::take(&mut self.nvram[REG_C])
                }
                i => self.nvram[i],
            },
        };
        data.fill(v);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            0 => {
                self.index = usize::from(v & 0x7f);
                self.nmi_disabled = v & 0x80 != 0;
            }
            _ => match self.index {
                REG_B => {
                    let was_set = self.nvram[REG_B] & B_SET != 0;
                    if v & B_SET != 0 && !was_set {
                        self.refresh();
                    }
                    self.nvram[REG_B] = v;
                    if was_set && v & B_SET == 0 {
                        let new_offset = self.registers_time() - host_now();
                        if new_offset != self.offset {
                            self.offset = new_offset;
                            self.sink.request(PlatformRequest::RtcChange(new_offset));
                        }
                    }
                }
                REG_A => self.nvram[REG_A] = v & 0x7f,
                REG_C | REG_D => {}
                i => self.nvram[i] = v,
            },
        }
    }
}

impl crate::state::DeviceState for Cmos {
    fn state_name(&self) -> &'static str {
        "mc146818rtc"
    }

    fn save_state(&self) -> Result<Vec<u8>, crate::state::StateError> {
        Ok(crate::state::StateWriter::new(1)
            .u8(self.index as u8)
            .bool(self.nmi_disabled)
            .bytes(&self.nvram)
            .i64(self.offset)
            .finish())
    }

    fn load_state(&mut self, data: &[u8]) -> Result<(), crate::state::StateError> {
        let mut r = crate::state::StateReader::new(data, "mc146818rtc", 1)?;
        self.index = usize::from(r.u8()? & 0x7f);
        self.nmi_disabled = r.bool()?;
        let nvram = r.bytes(128)?;
        if nvram.len() != 128 {
            return Err(crate::state::StateError::Malformed(
                "mc146818rtc: NVRAM size".into(),
            ));
        }
        self.nvram.copy_from_slice(nvram);
        self.offset = r.i64()?;
        r.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Record(Mutex<Vec<PlatformRequest>>);
    impl RequestSink for Record {
        fn request(&self, r: PlatformRequest) {
            self.0.lock().unwrap().push(r);
        }
    }

    #[test]
    fn dates_round_trip() {
        for days in [-1000, 0, 11016, 20000, 60000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
    }

    struct Level(std::sync::atomic::AtomicBool);
    impl InterruptLine for Level {
        fn set_level(&self, high: bool) {
            self.0.store(high, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn update_interrupt_raises_irq8_until_register_c_is_read() {
        let rec = Arc::new(Record(Mutex::new(Vec::new())));
        let line = Arc::new(Level(std::sync::atomic::AtomicBool::new(false)));
        let mut c = Cmos::new(128 << 20, 0, rec, line.clone());
        c.write(0, &[0x0b]);
        c.write(1, &[B_24H | B_UIE]);
        c.last_update -= 1;
        c.tick(false);
        assert!(line.0.load(std::sync::atomic::Ordering::SeqCst));
        c.write(0, &[0x0c]);
        let mut v = [0u8];
        c.read(1, &mut v);
        assert_eq!(v[0] & (C_IRQF | C_UF), C_IRQF | C_UF);
        assert!(!line.0.load(std::sync::atomic::Ordering::SeqCst));
        // Periodic interrupts only when enabled, at register A's rate.
        assert_eq!(c.periodic_interval(), None);
        c.write(0, &[0x0b]);
        c.write(1, &[B_24H | B_PIE]);
        assert_eq!(
            c.periodic_interval(),
            Some(std::time::Duration::from_nanos(1_000_000_000 / 1024))
        );
    }

    #[test]
    fn setting_the_clock_reports_the_new_offset() {
        let rec = Arc::new(Record(Mutex::new(Vec::new())));
        let mut c = Cmos::new(
            128 << 20,
            0,
            rec.clone(),
            Arc::new(crate::platform::NoInterrupt),
        );
        let rd = |c: &mut Cmos, i: u8| {
            c.write(0, &[i]);
            let mut v = [0u8];
            c.read(1, &mut v);
            v[0]
        };
        let wr = |c: &mut Cmos, i: u8, v: u8| {
            c.write(0, &[i]);
            c.write(1, &[v]);
        };
        assert_eq!(rd(&mut c, 0x0b) & B_24H, B_24H);
        let year = rd(&mut c, 0x09);
        wr(&mut c, 0x0b, B_SET | B_24H);
        // Ten years later (BCD).
        let later = ((year >> 4) * 10 + (year & 0x0f) + 10) % 100;
        wr(&mut c, 0x09, ((later / 10) << 4) | (later % 10));
        wr(&mut c, 0x0b, B_24H);
        let reqs = rec.0.lock().unwrap();
        match reqs.as_slice() {
            [PlatformRequest::RtcChange(off)] => assert!(*off > 9 * 365 * 86400, "{off}"),
            other => panic!("{other:?}"),
        }
    }
}
