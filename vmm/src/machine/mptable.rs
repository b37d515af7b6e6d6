//! The Intel MultiProcessor table (spec 1.4): every CPU, the ISA bus, the
//! IOAPIC and the ISA interrupt routing, for guests that look for it
//! rather than for ACPI's MADT.

use super::acpi::{IOAPIC_ADDR, LAPIC_ADDR};

/// The floating pointer goes in the BIOS area, where guests scan for it.
pub const MPTABLE_ADDR: u64 = 0xf0000;

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// The floating pointer and configuration table for the CPUs with these
/// APIC IDs, to be written at [`MPTABLE_ADDR`].
pub fn build(apic_ids: &[u32]) -> Vec<u8> {
    let ioapic_id = apic_ids.iter().max().map_or(0, |m| m + 1).min(254) as u8;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for (index, id) in apic_ids.iter().take(255).enumerate() {
        let flags = if index == 0 { 0x03 } else { 0x01 }; // enabled, BSP
        entries.extend_from_slice(&[0, *id as u8, 0x14, flags]);
        entries.extend_from_slice(&0x600u32.to_le_bytes()); // family 6
        entries.extend_from_slice(&0x201u32.to_le_bytes()); // FPU, APIC
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[1, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[2, ioapic_id, 0x11, 0x01]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    // The 8259 cascade on INTIN 0, then each ISA IRQ (IRQ 0 on INTIN 2).
    entries.extend_from_slice(&[3, 3, 0, 0, 0, 0, ioapic_id, 0]);
    count += 1;
    for irq in (0u8..16).filter(|i| *i != 2) {
        let intin = if irq == 0 { 2 } else { irq };
        entries.extend_from_slice(&[3, 0, 0, 0, 0, irq, ioapic_id, intin]);
        count += 1;
    }
    // LINT0 takes ExtINT, LINT1 the NMI, on every CPU.
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let config_addr = (MPTABLE_ADDR + 16) as u32;
    let mut config = Vec::with_capacity(44 + entries.len());
    config.extend_from_slice(b"PCMP");
    config.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    config.push(4);
    config.push(0);
    config.extend_from_slice(b"VMM     ");
    config.extend_from_slice(b"VMMPC       ");
    config.extend_from_slice(&0u32.to_le_bytes());
    config.extend_from_slice(&0u16.to_le_bytes());
    config.extend_from_slice(&count.to_le_bytes());
    config.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    config.extend_from_slice(&[0, 0, 0, 0]);
    config.extend_from_slice(&entries);
    config[7] = checksum(&config);

    let mut floating = Vec::with_capacity(16);
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&config_addr.to_le_bytes());
    floating.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]);
    floating[10] = checksum(&floating);
    floating.extend_from_slice(&config);
    floating
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_counts() {
        let t = build(&[0, 1, 2, 3]);
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(checksum(&t[..16]), 0);
        let cfg = &t[16..];
        assert_eq!(&cfg[..4], b"PCMP");
        let len = u16::from_le_bytes([cfg[4], cfg[5]]) as usize;
        assert_eq!(len, cfg.len());
        assert_eq!(checksum(&cfg[..len]), 0);
        // 4 CPUs, a bus, an IOAPIC, 16 I/O and 2 local interrupt entries.
        assert_eq!(u16::from_le_bytes([cfg[34], cfg[35]]), 4 + 1 + 1 + 16 + 2);
    }
}
