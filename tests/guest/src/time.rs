//! Coarse timeouts. The TSC frequency comes from CPUID when the CPU or the
//! hypervisor tells it (leaf 0x40000010, 0x15, 0x16); otherwise the RTC
//! seconds register is the clock (polled every ~2^21 TSC cycles); without
//! an RTC a 3 GHz TSC is assumed.

use crate::x86::{cpuid, pause, rdtsc};
use core::sync::atomic::{AtomicU64, Ordering};

const ASSUMED_HZ: u64 = 3_000_000_000;
static TSC_HZ: AtomicU64 = AtomicU64::new(u64::MAX); // MAX: not yet probed; 0: unknown

pub fn tsc_hz() -> Option<u64> {
    let mut hz = TSC_HZ.load(Ordering::Relaxed);
    if hz == u64::MAX {
        hz = probe().unwrap_or(0);
        TSC_HZ.store(hz, Ordering::Relaxed);
    }
    (hz != 0).then_some(hz)
}

fn probe() -> Option<u64> {
    if cpuid(1, 0).ecx & (1 << 31) != 0 {
        let max = cpuid(0x4000_0000, 0).eax;
        if (0x4000_0010..0x4000_0100).contains(&max) {
            let khz = cpuid(0x4000_0010, 0).eax as u64;
            if khz != 0 {
                return Some(khz * 1000);
            }
        }
    }
    let max = cpuid(0, 0).eax;
    if max >= 0x15 {
        let l = cpuid(0x15, 0);
        if l.eax != 0 && l.ebx != 0 && l.ecx != 0 {
            return Some(l.ecx as u64 * l.ebx as u64 / l.eax as u64);
        }
    }
    if max >= 0x16 {
        let mhz = cpuid(0x16, 0).eax as u64 & 0xffff;
        if mhz != 0 {
            return Some(mhz * 1_000_000);
        }
    }
    None
}

/// Busy-waits about `us` microseconds (TSC; 3 GHz assumed if unknown).
pub fn delay_us(us: u64) {
    let hz = tsc_hz().unwrap_or(ASSUMED_HZ);
    let end = rdtsc() + hz / 1_000_000 * us;
    while rdtsc() < end {
        pause();
    }
}

/// Polls `done` until it returns true (-> true) or about `secs` seconds
/// pass (-> false).
pub fn wait_until(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    if let Some(hz) = tsc_hz() {
        return wait_tsc(secs * hz, done);
    }
    let mut last = crate::rtc::read(0);
    if last == 0xff {
        return wait_tsc(secs * ASSUMED_HZ, done);
    }
    // Counting `secs + 1` changes of the seconds register waits between
    // `secs` and `secs + 1` seconds.
    let mut ticks = 0;
    let mut next = rdtsc();
    loop {
        if done() {
            return true;
        }
        let now = rdtsc();
        if now >= next {
            let s = crate::rtc::read(0);
            if s != last {
                last = s;
                ticks += 1;
                if ticks > secs {
                    return false;
                }
            }
            next = now + (1 << 21);
        }
        pause();
    }
}

fn wait_tsc(cycles: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = rdtsc().saturating_add(cycles);
    loop {
        if done() {
            return true;
        }
        if rdtsc() >= end {
            return false;
        }
        pause();
    }
}

/// The TSC frequency for measurements, and where it came from: CPUID
/// (`cpuid`) when the CPU or hypervisor gives it, else calibrated against
/// PIT channel 0 (`pit`, about 45 ms; KVM's in-kernel PIT, as vmm and QEMU
/// have), else 3 GHz (`assumed`).
pub fn tsc_hz_measured() -> (u64, &'static str) {
    if let Some(hz) = tsc_hz() {
        return (hz, "cpuid");
    }
    match pit_calibrate() {
        Some(hz) => (hz, "pit"),
        None => (ASSUMED_HZ, "assumed"),
    }
}

const PIT_HZ: u64 = 1_193_182;

/// Counts TSC cycles over ~54000 ticks of PIT channel 0 (mode 0, counting
/// down from 0xffff). Each sample latches and reads the counter between two
/// TSC reads and takes their midpoint, so the few port-I/O exits around a
/// sample (tens of microseconds each on a nested host) cost well under 0.1%.
fn pit_calibrate() -> Option<u64> {
    use crate::x86::{inb, outb};
    fn read() -> u16 {
        outb(0x43, 0x00); // latch channel 0
        let lo = inb(0x40);
        let hi = inb(0x40);
        u16::from(lo) | u16::from(hi) << 8
    }
    fn sample() -> (u64, u16) {
        let a = rdtsc();
        let c = read();
        let b = rdtsc();
        (a + (b - a) / 2, c)
    }
    outb(0x43, 0x30); // channel 0, lobyte/hibyte, mode 0, binary
    outb(0x40, 0xff);
    outb(0x40, 0xff);
    let (t0, c0) = sample();
    if c0 < 60000 {
        return None; // no PIT here (0xffff reads), or it did not load the count
    }
    let mut last = c0;
    let mut same = 0u32;
    loop {
        let (t1, c1) = sample();
        if c1 > last {
            return None; // wrapped or not a counter
        }
        if c1 == last {
            same += 1;
            if same > 10_000 {
                return None; // stuck
            }
        } else {
            same = 0;
        }
        last = c1;
        let ticks = u64::from(c0 - c1);
        if ticks >= 54_000 {
            return Some((t1 - t0) * PIT_HZ / ticks);
        }
    }
}
