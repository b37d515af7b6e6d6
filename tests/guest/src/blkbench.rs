//! `virtio-blk-bench`: a throughput workload on the first virtio-blk
//! device. Keeps QD requests in flight on queue 0 (one descriptor chain per
//! slot: header, data, status), refills each slot as its completion shows
//! up in the used ring (polled; interrupts suppressed), notifies once per
//! batch of refills unless the device asked for no notifications, and
//! prints ops, bytes and elapsed nanoseconds by the TSC.
//!
//! Command line: `blk-bench=JOB[,JOB...]` with JOB = `PATTERN:BS:QD:LIMIT`
//! (PATTERN read, write, randread or randwrite; BS bytes with an optional
//! k/m suffix, a multiple of 512; QD 1..=64; LIMIT `Ns` or `Nms` for a
//! duration, or a plain count of requests), and `blk-region=SIZE` (bytes,
//! k/m/g suffix; default: the whole disk): the part of the disk at its
//! start that the requests fall in. Default job: `randread:4k:1:1000`.

use crate::tests::timeout;
use crate::virtio::{Blk, RING_AVAIL, RING_DESC, RING_USED, T_IN, T_OUT};
use crate::x86::{rd16, rd32, rd8, rdtsc};
use crate::{exit, say, start_info, time, EXIT_FAIL};
use core::ptr::write_volatile;
use core::sync::atomic::{fence, Ordering};

const T: &str = "virtio-blk-bench";
/// Request headers (16 bytes per slot) and status bytes.
const HEADERS: u64 = 0x700000;
const STATUSES: u64 = 0x701000;
/// Data buffers, `bs` bytes per slot, contiguous.
const BUFFERS: u64 = 0x1000000;
const BUFFERS_MAX: u64 = 64 << 20;
const MAX_QD: u16 = 64;

#[derive(Clone, Copy, PartialEq)]
enum Pattern {
    Read,
    Write,
    RandRead,
    RandWrite,
}

impl Pattern {
    fn name(self) -> &'static str {
        match self {
            Pattern::Read => "read",
            Pattern::Write => "write",
            Pattern::RandRead => "randread",
            Pattern::RandWrite => "randwrite",
        }
    }
    fn writes(self) -> bool {
        matches!(self, Pattern::Write | Pattern::RandWrite)
    }
    fn random(self) -> bool {
        matches!(self, Pattern::RandRead | Pattern::RandWrite)
    }
}

#[derive(Clone, Copy)]
enum Limit {
    Ops(u64),
    Ms(u64),
}

struct Job {
    pattern: Pattern,
    bs: u64,
    qd: u16,
    limit: Limit,
}

fn fail(why: core::fmt::Arguments) -> ! {
    say!("fail {} {}", T, why);
    exit(EXIT_FAIL)
}

/// `123`, `4k`, `1M`, `2g` (binary multiples).
fn parse_size(s: &str) -> Option<u64> {
    let (num, shift) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 10),
        b'm' | b'M' => (&s[..s.len() - 1], 20),
        b'g' | b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    num.parse::<u64>().ok()?.checked_mul(1 << shift)
}

fn parse_job(spec: &str) -> Option<Job> {
    let mut it = spec.split(':');
    let pattern = match it.next()? {
        "read" => Pattern::Read,
        "write" => Pattern::Write,
        "randread" => Pattern::RandRead,
        "randwrite" => Pattern::RandWrite,
        _ => return None,
    };
    let bs = parse_size(it.next()?)?;
    let qd: u16 = it.next()?.parse().ok()?;
    let l = it.next()?;
    let limit = if let Some(ms) = l.strip_suffix("ms") {
        Limit::Ms(ms.parse().ok()?)
    } else if let Some(s) = l.strip_suffix('s') {
        Limit::Ms(s.parse::<u64>().ok()?.checked_mul(1000)?)
    } else {
        Limit::Ops(l.parse().ok()?)
    };
    if it.next().is_some() || bs == 0 || bs % 512 != 0 || qd == 0 || qd > MAX_QD {
        return None;
    }
    if u64::from(qd) * bs > BUFFERS_MAX {
        return None;
    }
    Some(Job {
        pattern,
        bs,
        qd,
        limit,
    })
}

/// xorshift64*: the random offsets, the same sequence in every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

pub fn run() {
    let si = start_info::get();
    let specs = si.arg("blk-bench").unwrap_or("randread:4k:1:1000");
    let mut jobs = 0;
    for spec in specs.split(',') {
        if parse_job(spec).is_none() {
            fail(format_args!(
                "bad job {:?} (PATTERN:BS:QD:LIMIT, QD 1-{}, QD*BS <= 64M)",
                spec, MAX_QD
            ));
        }
    }
    let (hz, clock) = time::tsc_hz_measured();
    let mut blk = match Blk::probe_sized(256) {
        Ok(b) => b,
        Err(e) => fail(format_args!("{}", e)),
    };
    let disk = blk.capacity * 512;
    let region = match si.arg("blk-region") {
        None => disk,
        Some(s) => match parse_size(s) {
            Some(r) if r <= disk => r,
            _ => fail(format_args!("bad blk-region={} (disk: {} bytes)", s, disk)),
        },
    };
    let need = BUFFERS + BUFFERS_MAX;
    if si.ram_bytes() != 0 && si.ram_bytes() < need {
        fail(format_args!("needs {} MiB of RAM", need >> 20));
    }
    say!(
        "{} clock={} tsc_hz={} capacity={} region={} queue={}",
        T,
        clock,
        hz,
        blk.capacity,
        region,
        blk.qsize
    );
    for (i, spec) in specs.split(',').enumerate() {
        let job = parse_job(spec).unwrap_or_else(|| fail(format_args!("bad job")));
        if job.bs > region {
            fail(format_args!(
                "bs {} larger than the region {}",
                job.bs, region
            ));
        }
        if 3 * job.qd > blk.qsize {
            fail(format_args!(
                "qd {} needs {} descriptors, queue has {}",
                job.qd,
                3 * job.qd,
                blk.qsize
            ));
        }
        run_job(&mut blk, &job, region, hz, i as u64);
        jobs += 1;
    }
    say!("ok {} jobs={}", T, jobs);
}

fn run_job(blk: &mut Blk, job: &Job, region: u64, hz: u64, seed: u64) {
    const NEXT: u16 = 1;
    const WRITE: u16 = 2;
    let qsize = blk.qsize;
    let qd = job.qd;
    let blocks = region / job.bs;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (seed + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9));
    let mut seq = 0u64;
    let mut next_offset = || -> u64 {
        if job.pattern.random() {
            rng.next() % blocks * job.bs
        } else {
            let o = seq % blocks * job.bs;
            seq += 1;
            o
        }
    };
    let kind = if job.pattern.writes() { T_OUT } else { T_IN };
    let data_flags = NEXT | if job.pattern.writes() { 0 } else { WRITE };
    if job.pattern.writes() {
        // Something other than zeroes, so a write is never a no-op for
        // a host that detects zeroes.
        let buf = unsafe {
            core::slice::from_raw_parts_mut(BUFFERS as *mut u8, (u64::from(qd) * job.bs) as usize)
        };
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7).wrapping_add(3);
        }
    }
    let desc = |i: u16, addr: u64, len: u32, flags: u16, next: u16| {
        let d = RING_DESC + u64::from(i) * 16;
        unsafe {
            write_volatile(d as *mut u64, addr);
            write_volatile((d + 8) as *mut u32, len);
            write_volatile((d + 12) as *mut u16, flags);
            write_volatile((d + 14) as *mut u16, next);
        }
    };
    for s in 0..qd {
        let h = 3 * s;
        desc(h, HEADERS + 16 * u64::from(s), 16, NEXT, h + 1);
        desc(
            h + 1,
            BUFFERS + u64::from(s) * job.bs,
            job.bs as u32,
            data_flags,
            h + 2,
        );
        desc(h + 2, STATUSES + u64::from(s), 1, WRITE, 0);
    }
    let mut avail_idx = rd16(RING_AVAIL + 2);
    let mut used_seen = rd16(RING_USED + 2);
    // No interrupts: the driver polls the used ring.
    unsafe { write_volatile(RING_AVAIL as *mut u16, 1) };
    let prepare = |s: u16, offset: u64| unsafe {
        let h = HEADERS + 16 * u64::from(s);
        write_volatile(h as *mut u32, kind);
        write_volatile((h + 4) as *mut u32, 0);
        write_volatile((h + 8) as *mut u64, offset / 512);
        write_volatile((STATUSES + u64::from(s)) as *mut u8, 0xff);
    };
    let push = |avail_idx: &mut u16, s: u16| {
        unsafe {
            write_volatile(
                (RING_AVAIL + 4 + 2 * u64::from(*avail_idx % qsize)) as *mut u16,
                3 * s,
            );
        }
        *avail_idx = avail_idx.wrapping_add(1);
    };
    let publish = |avail_idx: u16| {
        fence(Ordering::SeqCst);
        unsafe { write_volatile((RING_AVAIL + 2) as *mut u16, avail_idx) };
        fence(Ordering::SeqCst);
        if rd16(RING_USED) & 1 == 0 {
            blk.kick();
        }
    };
    let (max_ops, end_cycles) = match job.limit {
        Limit::Ops(n) => (n, u64::MAX),
        Limit::Ms(ms) => (u64::MAX, hz / 1000 * ms),
    };
    let stall = hz.saturating_mul(timeout().max(1));
    let mut submitted = 0u64;
    let mut done = 0u64;
    let t0 = rdtsc();
    for s in 0..qd {
        if submitted == max_ops {
            break;
        }
        prepare(s, next_offset());
        push(&mut avail_idx, s);
        submitted += 1;
    }
    publish(avail_idx);
    let mut last_progress = t0;
    let mut t_end = t0;
    let mut stop = false;
    while done < submitted {
        let used = rd16(RING_USED + 2);
        if used == used_seen {
            let now = rdtsc();
            if now - last_progress > stall {
                fail(format_args!(
                    "{} qd={}: no completion for {} s ({} of {} done)",
                    job.pattern.name(),
                    qd,
                    timeout(),
                    done,
                    submitted
                ));
            }
            core::hint::spin_loop();
            continue;
        }
        fence(Ordering::SeqCst);
        let now = rdtsc();
        last_progress = now;
        t_end = now;
        if !stop && now - t0 >= end_cycles {
            stop = true;
        }
        let mut refilled = false;
        while used_seen != used {
            let e = RING_USED + 4 + 8 * u64::from(used_seen % qsize);
            let id = rd32(e);
            used_seen = used_seen.wrapping_add(1);
            if !id.is_multiple_of(3) || id / 3 >= u32::from(qd) {
                fail(format_args!("used ring names descriptor {}", id));
            }
            let s = (id / 3) as u16;
            let st = rd8(STATUSES + u64::from(s));
            if st != 0 {
                let sector = unsafe {
                    core::ptr::read_volatile((HEADERS + 16 * u64::from(s) + 8) as *const u64)
                };
                fail(format_args!(
                    "{} at sector {}: status {}",
                    job.pattern.name(),
                    sector,
                    st
                ));
            }
            done += 1;
            if !stop && submitted < max_ops {
                prepare(s, next_offset());
                push(&mut avail_idx, s);
                submitted += 1;
                refilled = true;
            }
        }
        if refilled {
            publish(avail_idx);
        }
    }
    let ns = (u128::from(t_end - t0) * 1_000_000_000 / u128::from(hz.max(1))) as u64;
    let bytes = done * job.bs;
    let iops = if ns > 0 {
        u128::from(done) * 1_000_000_000 / u128::from(ns)
    } else {
        0
    };
    let kib_s = if ns > 0 {
        u128::from(bytes) * 1_000_000_000 / 1024 / u128::from(ns)
    } else {
        0
    };
    say!(
        "{} {} bs={} qd={} ops={} bytes={} ns={} iops={} kib_s={}",
        T,
        job.pattern.name(),
        job.bs,
        qd,
        done,
        bytes,
        ns,
        iops,
        kib_s
    );
}
