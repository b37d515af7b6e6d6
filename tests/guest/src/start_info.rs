//! PVH `hvm_start_info` (Xen's arch-x86/hvm/start_info.h), copied into the
//! image at start so that nothing the loader put in low memory is needed
//! later.

use crate::layout::Racy;
use crate::x86::{rd32, rd64};

pub const MAGIC: u32 = 0x336e_c578;
const MAX_CMDLINE: usize = 1024;
const MAX_MEMMAP: usize = 128;

#[derive(Clone, Copy)]
pub struct MemEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

pub struct StartInfo {
    pub valid: bool,
    pub paddr: u64,
    pub version: u32,
    pub rsdp: u64,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    pub memmap: [MemEntry; MAX_MEMMAP],
    pub memmap_len: usize,
}

static INFO: Racy<StartInfo> = Racy::new(StartInfo {
    valid: false,
    paddr: 0,
    version: 0,
    rsdp: 0,
    cmdline: [0; MAX_CMDLINE],
    cmdline_len: 0,
    memmap: [MemEntry {
        addr: 0,
        size: 0,
        kind: 0,
    }; MAX_MEMMAP],
    memmap_len: 0,
});

/// Reads the structure at `pa` (BSP, once, before anything else).
pub fn init(pa: u64) {
    let si = unsafe { INFO.get() };
    si.paddr = pa;
    if pa == 0 || pa >= 0x1_0000_0000 || rd32(pa) != MAGIC {
        return;
    }
    si.valid = true;
    si.version = rd32(pa + 4);
    let cmdline = rd64(pa + 24);
    si.rsdp = rd64(pa + 32);
    if cmdline != 0 && cmdline < 0x1_0000_0000 {
        let mut n = 0;
        while n < MAX_CMDLINE {
            let c = crate::x86::rd8(cmdline + n as u64);
            if c == 0 {
                break;
            }
            // Keep it printable ASCII so it is a valid &str.
            si.cmdline[n] = if (0x20..0x7f).contains(&c) { c } else { b' ' };
            n += 1;
        }
        si.cmdline_len = n;
    }
    if si.version >= 1 {
        let map = rd64(pa + 40);
        let n = (rd32(pa + 48) as usize).min(MAX_MEMMAP);
        if map != 0 && map < 0x1_0000_0000 {
            for i in 0..n {
                let e = map + 24 * i as u64;
                si.memmap[i] = MemEntry {
                    addr: rd64(e),
                    size: rd64(e + 8),
                    kind: rd32(e + 16),
                };
            }
            si.memmap_len = n;
        }
    }
}

pub fn get() -> &'static StartInfo {
    unsafe { INFO.get() }
}

impl StartInfo {
    pub fn cmdline(&self) -> &str {
        unsafe { core::str::from_utf8_unchecked(&self.cmdline[..self.cmdline_len]) }
    }

    pub fn memmap(&self) -> &[MemEntry] {
        &self.memmap[..self.memmap_len]
    }

    /// Total RAM (type 1) in the memory map, 0 if there is none.
    pub fn ram_bytes(&self) -> u64 {
        self.memmap()
            .iter()
            .filter(|e| e.kind == 1)
            .map(|e| e.size)
            .sum()
    }

    /// Whether [start, end) is RAM according to the memory map; `None`
    /// without a map.
    pub fn is_ram(&self, start: u64, end: u64) -> Option<bool> {
        if self.memmap_len == 0 {
            return None;
        }
        // Entries may be split: walk forward from `start`.
        let mut at = start;
        'outer: while at < end {
            for e in self.memmap() {
                if e.kind == 1 && e.addr <= at && at < e.addr.saturating_add(e.size) {
                    at = e.addr + e.size;
                    continue 'outer;
                }
            }
            return Some(false);
        }
        Some(true)
    }

    /// Value of `key=` on the command line (first occurrence).
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.cmdline().split_ascii_whitespace().find_map(|w| {
            let (k, v) = w.split_once('=')?;
            (k == key).then_some(v)
        })
    }
}
