//! Just enough ACPI: RSDP (start_info or a scan of the EBDA and
//! 0xE0000-0xFFFFF), RSDT/XSDT, MADT (CPUs), FADT (sleep registers),
//! and the DSDT's \_S5 package.

use crate::x86::{rd16, rd32, rd64, rd8};

/// Everything below 4 GiB is mapped whatever the page size: refuse to
/// follow pointers above it.
const MAPPED_END: u64 = 0x1_0000_0000;

fn mapped(addr: u64, len: u64) -> bool {
    addr != 0 && addr.checked_add(len).is_some_and(|e| e <= MAPPED_END)
}

fn sum(addr: u64, len: u64) -> u8 {
    (0..len).fold(0u8, |s, i| s.wrapping_add(rd8(addr + i)))
}

fn is_rsdp(a: u64) -> bool {
    rd64(a) == u64::from_le_bytes(*b"RSD PTR ") && sum(a, 20) == 0
}

#[derive(Clone, Copy)]
pub struct Rsdp {
    pub addr: u64,
    /// XSDT if there is one (revision >= 2), else RSDT.
    pub root: u64,
    pub xsdt: bool,
    /// Where it came from: "start_info" or "scan".
    pub source: &'static str,
}

pub fn find_rsdp(hint: u64) -> Option<Rsdp> {
    let (addr, source) = if mapped(hint, 36) && is_rsdp(hint) {
        (hint, "start_info")
    } else {
        (scan_rsdp()?, "scan")
    };
    let xsdt = if rd8(addr + 15) >= 2 {
        rd64(addr + 24)
    } else {
        0
    };
    if xsdt != 0 && mapped(xsdt, 36) {
        Some(Rsdp {
            addr,
            root: xsdt,
            xsdt: true,
            source,
        })
    } else {
        Some(Rsdp {
            addr,
            root: rd32(addr + 16) as u64,
            xsdt: false,
            source,
        })
    }
}

fn scan_rsdp() -> Option<u64> {
    let ebda = (rd16(0x40e) as u64) << 4;
    if (0x80000..0xa0000).contains(&ebda) {
        if let Some(a) = (ebda..ebda + 1024).step_by(16).find(|&a| is_rsdp(a)) {
            return Some(a);
        }
    }
    (0xe0000..0x100000).step_by(16).find(|&a| is_rsdp(a))
}

/// A table's address and length (header included).
#[derive(Clone, Copy)]
pub struct Table {
    pub addr: u64,
    pub len: u64,
    pub checksum_ok: bool,
}

pub fn table_at(addr: u64) -> Option<Table> {
    if !mapped(addr, 36) {
        return None;
    }
    let len = rd32(addr + 4) as u64;
    if len < 36 || !mapped(addr, len) {
        return None;
    }
    Some(Table {
        addr,
        len,
        checksum_ok: sum(addr, len) == 0,
    })
}

/// Finds a table by signature (a bad checksum is reported, not fatal).
pub fn find_table(rsdp: &Rsdp, sig: &[u8; 4]) -> Option<Table> {
    let t = find_table_quiet(rsdp, sig)?;
    if !t.checksum_ok {
        let name = core::str::from_utf8(sig).unwrap_or("????");
        crate::say!(
            "warning: ACPI table {} at {:#x} has a bad checksum",
            name,
            t.addr
        );
    }
    Some(t)
}

fn find_table_quiet(rsdp: &Rsdp, sig: &[u8; 4]) -> Option<Table> {
    let root = table_at(rsdp.root)?;
    let esz = if rsdp.xsdt { 8 } else { 4 };
    let n = (root.len - 36) / esz;
    (0..n)
        .map(|i| {
            let e = root.addr + 36 + i * esz;
            if rsdp.xsdt {
                rd64(e)
            } else {
                rd32(e) as u64
            }
        })
        .filter(|&a| mapped(a, 36) && rd32(a) == u32::from_le_bytes(*sig))
        .find_map(table_at)
}

pub struct Madt {
    pub lapic: u64,
    /// Enabled processors' APIC IDs, in MADT order.
    pub apic_ids: [u32; 256],
    pub count: usize,
    /// Processors skipped: disabled (hot-pluggable) entries or x2APIC IDs
    /// above 254.
    pub skipped: usize,
}

pub fn madt(t: &Table) -> Madt {
    let mut m = Madt {
        lapic: rd32(t.addr + 36) as u64,
        apic_ids: [0; 256],
        count: 0,
        skipped: 0,
    };
    let mut p = t.addr + 44;
    let end = t.addr + t.len;
    while p + 2 <= end {
        let (kind, len) = (rd8(p), rd8(p + 1) as u64);
        if len < 2 || p + len > end {
            break;
        }
        let entry = match kind {
            0 if len >= 8 => Some((rd8(p + 3) as u32, rd32(p + 4))),
            9 if len >= 16 => Some((rd32(p + 4), rd32(p + 8))),
            5 if len >= 12 => {
                m.lapic = rd64(p + 4);
                None
            }
            _ => None,
        };
        if let Some((id, flags)) = entry {
            if flags & 1 == 0 || id >= 255 || m.count == m.apic_ids.len() {
                m.skipped += 1;
            } else if !m.apic_ids[..m.count].contains(&id) {
                m.apic_ids[m.count] = id;
                m.count += 1;
            }
        }
        p += len;
    }
    m
}

/// A Generic Address Structure.
#[derive(Clone, Copy)]
pub struct Gas {
    /// 0: system memory, 1: system I/O.
    pub space: u8,
    pub bit_width: u8,
    pub access_size: u8,
    pub addr: u64,
}

fn gas(a: u64) -> Gas {
    Gas {
        space: rd8(a),
        bit_width: rd8(a + 1),
        access_size: rd8(a + 3),
        addr: rd64(a + 4),
    }
}

pub struct Fadt {
    pub revision: u8,
    pub len: u64,
    pub dsdt: u64,
    /// PM1a control block port (X_PM1a_CNT_BLK if it is an I/O address).
    pub pm1a_cnt: u16,
    pub pm1b_cnt: u16,
    /// ACPI 5+ hardware-reduced sleep control register.
    pub sleep_ctl: Option<Gas>,
    pub hw_reduced: bool,
}

pub fn fadt(t: &Table) -> Fadt {
    let a = t.addr;
    let len = t.len;
    let mut dsdt = rd32(a + 40) as u64;
    if len >= 148 && rd64(a + 140) != 0 {
        dsdt = rd64(a + 140);
    }
    let mut pm1a_cnt = rd32(a + 64) as u64;
    let mut pm1b_cnt = rd32(a + 68) as u64;
    if len >= 184 {
        let x = gas(a + 172);
        if x.space == 1 && x.addr != 0 {
            pm1a_cnt = x.addr;
        }
    }
    if len >= 196 {
        let x = gas(a + 184);
        if x.space == 1 && x.addr != 0 {
            pm1b_cnt = x.addr;
        }
    }
    let flags = rd32(a + 112);
    let sleep_ctl = (len >= 256).then(|| gas(a + 244)).filter(|g| g.addr != 0);
    Fadt {
        revision: rd8(a + 8),
        len,
        dsdt,
        pm1a_cnt: pm1a_cnt as u16,
        pm1b_cnt: pm1b_cnt as u16,
        sleep_ctl,
        hw_reduced: flags & (1 << 20) != 0,
    }
}

/// SLP_TYPa of \_S5 in the DSDT.
pub fn s5_slp_typ(dsdt: &Table) -> Option<u8> {
    sleep_slp_typ(dsdt, b"_S5_")
}

/// SLP_TYPa of a sleep state package (`_S3_`, `_S5_`) in the DSDT: finds
/// `NameOp NAME PackageOp`, skips PkgLength and NumElements, and decodes
/// the first element (Zero, One, Ones, BytePrefix n, WordPrefix n). Enough
/// for the AML that QEMU, firmware and most VMMs generate.
pub fn sleep_slp_typ(dsdt: &Table, name: &[u8; 4]) -> Option<u8> {
    let (start, end) = (dsdt.addr + 36, dsdt.addr + dsdt.len);
    let mut p = start;
    while p + 5 < end {
        if rd32(p) == u32::from_le_bytes(*name) {
            let named = rd8(p - 1) == 0x08 || (rd8(p - 1) == b'\\' && rd8(p - 2) == 0x08);
            if named && rd8(p + 4) == 0x12 {
                let mut q = p + 5;
                let lead = rd8(q);
                q += 1 + (lead >> 6) as u64; // PkgLength
                q += 1; // NumElements
                return match rd8(q) {
                    0x00 => Some(0),
                    0x01 => Some(1),
                    0xff => Some(0xff),
                    0x0a | 0x0b => Some(rd8(q + 1)),
                    _ => None,
                };
            }
        }
        p += 1;
    }
    None
}
