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
