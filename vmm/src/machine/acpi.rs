//! ACPI tables for the PC machine: RSDP, RSDT/XSDT, FADT (with the PM
//! block, power button and reset register), FACS, MADT (every CPU, the
//! IOAPIC, QEMU's interrupt overrides), a DSDT with \_S3 and \_S5, and
//! with `-numa` an SRAT (and a SLIT when distances were given).

use super::boot::ACPI_ADDR;
use devices::acpi_pm::{
    PM1_CNT_OFFSET, PM1_EVT_OFFSET, PM_BASE, PM_TMR_OFFSET, SCI_IRQ, SLP_TYP_S3, SLP_TYP_S5,
};

pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
const OEM_ID: &[u8; 6] = b"VMM   ";
const OEM_TABLE_ID: &[u8; 8] = b"VMMPC   ";

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// A table with the standard 36-byte header; length and checksum are
/// filled in by `finish`.
struct Table(Vec<u8>);

impl Table {
    fn new(signature: &[u8; 4], revision: u8) -> Table {
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(signature);
        b.extend_from_slice(&0u32.to_le_bytes());
        b.push(revision);
        b.push(0);
        b.extend_from_slice(OEM_ID);
        b.extend_from_slice(OEM_TABLE_ID);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(b"VMM ");
        b.extend_from_slice(&1u32.to_le_bytes());
        Table(b)
    }

    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    /// A Generic Address Structure in system I/O space.
    fn gas_io(&mut self, bits: u8, port: u64) -> &mut Self {
        let access = match bits {
            0 => 0,
            8 => 1,
            16 => 2,
            _ => 3,
        };
        self.u8(if bits == 0 { 0 } else { 1 })
            .u8(bits)
            .u8(0)
            .u8(access)
            .u64(if bits == 0 { 0 } else { port })
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[4..8].copy_from_slice(&len.to_le_bytes());
        self.0[9] = 0;
        self.0[9] = checksum(&self.0);
        self.0
    }
}

fn dsdt(s3: bool) -> Vec<u8> {
    let mut t = Table::new(b"DSDT", 2);
    // Name (_S3_, Package (4) {1, 1, 0, 0}); Name (_S5_, Package (4) {0, 0, 0, 0})
    // (no \_S3 with PIIX4_PM.disable_s3, as QEMU's tables).
    let states: &[(&[u8; 4], u16)] = if s3 {
        &[(b"_S3_", SLP_TYP_S3), (b"_S5_", SLP_TYP_S5)]
    } else {
        &[(b"_S5_", SLP_TYP_S5)]
    };
    for &(name, typ) in states {
        let v = |x: u16| if x == 0 { 0x00 } else { 0x01 };
        t.u8(0x08).bytes(name).u8(0x12).u8(0x06).u8(0x04);
        t.u8(v(typ)).u8(v(typ)).u8(0).u8(0);
    }
    t.finish()
}

fn facs() -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(b"FACS");
    b.extend_from_slice(&64u32.to_le_bytes());
    b.resize(64, 0);
    b[32] = 1; // version
    b
}

fn fadt(facs: u32, dsdt: u32) -> Vec<u8> {
    let pm = PM_BASE;
    let mut t = Table::new(b"FACP", 3);
    t.u32(facs).u32(dsdt).u8(0).u8(0); // reserved, PM profile unspecified
    t.u16(SCI_IRQ as u16).u32(0); // SCI, no SMI command port: always ACPI mode
    t.u8(0).u8(0).u8(0).u8(0);
    t.u32((pm + PM1_EVT_OFFSET) as u32).u32(0);
    t.u32((pm + PM1_CNT_OFFSET) as u32).u32(0).u32(0);
    t.u32((pm + PM_TMR_OFFSET) as u32).u32(0).u32(0);
    t.u8(4).u8(2).u8(0).u8(4).u8(0).u8(0).u8(0).u8(0);
    t.u16(0xfff).u16(0xfff); // no C2, C3
    t.u16(0).u16(0).u8(0).u8(0).u8(0).u8(0).u8(0x32); // century register
    t.u16(0x0003).u8(0); // legacy devices and an 8042
                         // WBINVD, PROC_C1, SLP_BUTTON (none), RESET_REG_SUP.
    t.u32((1 << 0) | (1 << 2) | (1 << 5) | (1 << 10));
    t.gas_io(8, 0xcf9).u8(0x06); // reset register and value
    t.u16(0).u8(0);
    t.u64(u64::from(facs)).u64(u64::from(dsdt));
    t.gas_io(32, pm + PM1_EVT_OFFSET).gas_io(0, 0);
    t.gas_io(16, pm + PM1_CNT_OFFSET).gas_io(0, 0);
    t.gas_io(0, 0);
    t.gas_io(32, pm + PM_TMR_OFFSET);
    t.gas_io(0, 0).gas_io(0, 0);
    t.finish()
}

fn madt(apic_ids: &[u32]) -> Vec<u8> {
    let mut t = Table::new(b"APIC", 1);
    t.u32(LAPIC_ADDR).u32(1); // PCAT_COMPAT: there are 8259s too
    for (index, id) in apic_ids.iter().enumerate() {
        t.u8(0).u8(8).u8(index as u8).u8(*id as u8).u32(1);
    }
    // The IOAPIC's ID follows the CPUs', as QEMU numbers it.
    let ioapic_id = apic_ids.iter().max().map_or(0, |m| m + 1) as u8;
    t.u8(1).u8(12).u8(ioapic_id).u8(0).u32(IOAPIC_ADDR).u32(0);
    // IRQ0 -> GSI2 (the PIT); the SCI level-triggered, active high.
    t.u8(2).u8(10).u8(0).u8(0).u32(2).u16(0);
    t.u8(2)
        .u8(10)
        .u8(0)
        .u8(SCI_IRQ as u8)
        .u32(SCI_IRQ)
        .u16(0x000d);
    // LINT1 of every CPU is the NMI line.
    t.u8(4).u8(6).u8(0xff).u16(0).u8(1);
    t.finish()
}

/// What the SRAT and SLIT describe.
pub struct NumaTables<'a> {
    /// (APIC ID, node) of every possible CPU.
    pub cpus: Vec<(u32, u16)>,
    /// Bytes of RAM in each node, laid end to end from address 0.
    pub node_mem: &'a [u64],
    /// Where RAM stops below 4 GiB (the rest continues at 4 GiB).
    pub below_4g: u64,
    /// The distance table, when `-numa dist` gave one.
    pub distances: Option<&'a [Vec<u8>]>,
}

const HOLE_640K_START: u64 = 0xa0000;
const HOLE_640K_END: u64 = 0x100000;
const MEM_AFFINITY_ENABLED: u32 = 1;

fn srat_memory(t: &mut Table, base: u64, len: u64, node: u32, flags: u32) {
    t.u8(1).u8(40).u32(node).u16(0);
    t.u64(base).u64(len).u32(0).u32(flags).u64(0);
}

/// The System Resource Affinity Table: each CPU's node, then each
/// node's memory with the 640 KiB-1 MiB and PCI holes cut out (QEMU's
/// layout: node after node from address 0), then disabled entries so
/// that there are at least as many memory entries as nodes plus two.
fn srat(numa: &NumaTables<'_>) -> Vec<u8> {
    let mut t = Table::new(b"SRAT", 1);
    t.u32(1).u64(0);
    for &(apic_id, node) in &numa.cpus {
        if apic_id < 255 {
            t.u8(0).u8(16).u8(node as u8).u8(apic_id as u8).u32(1);
            t.u8(0).bytes(&[0, 0, 0]).u32(0);
        } else {
            t.u8(2).u8(24).u16(0).u32(u32::from(node)).u32(apic_id);
            t.u32(1).u32(0).u32(0);
        }
    }
    let mut entries = 0;
    let mut next = 0u64;
    for (node, &size) in numa.node_mem.iter().enumerate() {
        let node = node as u32;
        let mut base = next;
        let mut len = size;
        next = base + len;
        if base <= HOLE_640K_START && next > HOLE_640K_START {
            len -= next - HOLE_640K_START;
            if len > 0 {
                srat_memory(&mut t, base, len, node, MEM_AFFINITY_ENABLED);
                entries += 1;
            }
            if next <= HOLE_640K_END {
                next = HOLE_640K_END;
                continue;
            }
            base = HOLE_640K_END;
            len = next - HOLE_640K_END;
        }
        if base <= numa.below_4g && next > numa.below_4g {
            len -= next - numa.below_4g;
            if len > 0 {
                srat_memory(&mut t, base, len, node, MEM_AFFINITY_ENABLED);
                entries += 1;
            }
            base = super::memory::FOUR_GIB;
            len = next - numa.below_4g;
            next = base + len;
        }
        srat_memory(&mut t, base, len, node, MEM_AFFINITY_ENABLED);
        entries += 1;
    }
    for _ in entries..numa.node_mem.len() + 2 {
        srat_memory(&mut t, 0, 0, 0, 0);
    }
    t.finish()
}

/// The System Locality Information Table: the node distance matrix.
fn slit(distances: &[Vec<u8>]) -> Vec<u8> {
    let mut t = Table::new(b"SLIT", 1);
    t.u64(distances.len() as u64);
    for row in distances {
        t.bytes(row);
    }
    t.finish()
}

/// Builds every table for the CPUs with these APIC IDs, laid out from
/// [`ACPI_ADDR`]; returns the bytes to copy there and the RSDP's address.
pub fn build(apic_ids: &[u32], s3: bool, numa: Option<&NumaTables<'_>>) -> (Vec<u8>, u64) {
    let base = ACPI_ADDR as u32;
    let mut blob = vec![0u8; 64]; // the RSDP goes first, at a 16-byte boundary
    let place = |blob: &mut Vec<u8>, table: Vec<u8>| -> u32 {
        while !blob.len().is_multiple_of(16) {
            blob.push(0);
        }
        let at = base + blob.len() as u32;
        blob.extend_from_slice(&table);
        at
    };
    let dsdt_at = place(&mut blob, dsdt(s3));
    let facs_at = {
        while !blob.len().is_multiple_of(64) {
            blob.push(0);
        }
        place(&mut blob, facs())
    };
    let fadt_at = place(&mut blob, fadt(facs_at, dsdt_at));
    let madt_at = place(&mut blob, madt(apic_ids));
    let mut tables = vec![fadt_at, madt_at];
    if let Some(numa) = numa {
        tables.push(place(&mut blob, srat(numa)));
        if let Some(d) = numa.distances {
            tables.push(place(&mut blob, slit(d)));
        }
    }
    let mut xsdt = Table::new(b"XSDT", 1);
    for at in &tables {
        xsdt.u64(u64::from(*at));
    }
    let xsdt_at = place(&mut blob, xsdt.finish());
    let mut rsdt = Table::new(b"RSDT", 1);
    for at in &tables {
        rsdt.u32(*at);
    }
    let rsdt_at = place(&mut blob, rsdt.finish());
    let mut rsdp = Vec::with_capacity(36);
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0);
    rsdp.extend_from_slice(OEM_ID);
    rsdp.push(2);
    rsdp.extend_from_slice(&rsdt_at.to_le_bytes());
    rsdp.extend_from_slice(&36u32.to_le_bytes());
    rsdp.extend_from_slice(&u64::from(xsdt_at).to_le_bytes());
    rsdp.extend_from_slice(&[0, 0, 0, 0]);
    rsdp[8] = checksum(&rsdp[..20]);
    rsdp[32] = checksum(&rsdp);
    blob[..36].copy_from_slice(&rsdp);
    (blob, ACPI_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_valid_checksums_and_lengths() {
        let (blob, rsdp) = build(&[0, 1, 2, 3], true, None);
        assert_eq!(rsdp, ACPI_ADDR);
        assert_eq!(&blob[..8], b"RSD PTR ");
        assert_eq!(checksum(&blob[..20]), 0);
        assert_eq!(checksum(&blob[..36]), 0);
        let xsdt = u64::from_le_bytes(blob[24..32].try_into().unwrap()) - ACPI_ADDR;
        let at = |off: u64| &blob[off as usize..];
        let len = |t: &[u8]| u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize;
        let x = at(xsdt);
        assert_eq!(&x[..4], b"XSDT");
        assert_eq!(checksum(&x[..len(x)]), 0);
        for i in 0..2 {
            let p = u64::from_le_bytes(x[36 + 8 * i..44 + 8 * i].try_into().unwrap()) - ACPI_ADDR;
            let t = at(p);
            assert_eq!(checksum(&t[..len(t)]), 0, "{:?}", &t[..4]);
            if &t[..4] == b"FACP" {
                assert_eq!(len(t), 244);
                assert_eq!(u32::from_le_bytes(t[64..68].try_into().unwrap()), 0x604);
            }
        }
    }

    #[test]
    fn srat_cuts_the_holes_and_pads_memory_entries() {
        const MIB: u64 = 1 << 20;
        let numa = NumaTables {
            cpus: vec![(0, 0), (1, 1)],
            node_mem: &[512 * MIB, 3584 * MIB],
            below_4g: 3 << 30,
            distances: Some(&[vec![10, 20], vec![20, 10]]),
        };
        let t = srat(&numa);
        assert_eq!(&t[..4], b"SRAT");
        assert_eq!(checksum(&t), 0);
        let cpu = &t[48..64];
        assert_eq!(&cpu[..4], &[0, 16, 0, 0]);
        assert_eq!(&t[64..68], &[0, 16, 1, 1]);
        let mems: Vec<(u32, u64, u64, u32)> = t[80..]
            .chunks(40)
            .map(|e| {
                let u32_at = |o: usize| u32::from_le_bytes(e[o..o + 4].try_into().unwrap());
                let u64_at = |o: usize| u64::from_le_bytes(e[o..o + 8].try_into().unwrap());
                (u32_at(2), u64_at(8), u64_at(16), u32_at(28))
            })
            .collect();
        assert_eq!(
            mems,
            [
                (0, 0, 0xa0000, 1),
                (0, 0x100000, 512 * MIB - 0x100000, 1),
                (1, 512 * MIB, 2560 * MIB, 1),
                (1, 4 << 30, 1024 * MIB, 1),
            ]
        );
        let s = slit(numa.distances.unwrap());
        assert_eq!(&s[36..], &[2, 0, 0, 0, 0, 0, 0, 0, 10, 20, 20, 10]);
        let (blob, _) = build(&[0, 1], true, Some(&numa));
        assert!(blob.windows(4).any(|w| w == b"SRAT"));
        assert!(blob.windows(4).any(|w| w == b"SLIT"));
    }
}
