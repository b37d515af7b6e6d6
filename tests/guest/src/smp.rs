//! Application processors: INIT-SIPI-SIPI through the local APIC (MMIO,
//! from ring 3). Each AP runs the real-mode trampoline at 0x8000 ->
//! ap_entry32 -> ap_long (boot.S), which looks itself up in AP_BOOT by
//! its initial APIC ID, loads its TSS and irets to `rust_ap_start` in
//! ring 3.

use crate::layout::*;
use crate::x86::{mmio_rd32, mmio_wr32, pause};
use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ApBoot {
    pub rsp0: u64,
    pub tss_sel: u64,
    pub rsp3: u64,
    pub cpu: u64,
}

/// Indexed by initial APIC ID; read by boot.S (ap_long), 32 bytes each.
#[no_mangle]
pub static AP_BOOT: Racy<[ApBoot; 256]> = Racy::new(
    [ApBoot {
        rsp0: 0,
        tss_sel: 0,
        rsp3: 0,
        cpu: 0,
    }; 256],
);

/// Set by each AP as soon as it reaches ring 3.
pub static STARTED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

const ICR_LO: u64 = 0x300;
const ICR_HI: u64 = 0x310;
const SVR: u64 = 0xf0;
const LVT_LINT1: u64 = 0x360;

/// Architectural default; the MADT may say otherwise.
pub const LAPIC_DEFAULT: u64 = 0xfee0_0000;
/// The LAPIC base every CPU uses (set by the BSP from the MADT; boot.S
/// reads it to find an AP's ID).
#[no_mangle]
pub static LAPIC_BASE: AtomicU64 = AtomicU64::new(LAPIC_DEFAULT);

/// Software-enables this CPU's local APIC (spurious vector 0xff; IF is 0,
/// so nothing is ever delivered) and makes LINT1 deliver NMIs, as on a PC
/// where the chipset wires the NMI line to LINT1. QEMU's KVM inject-nmi
/// (and a VMM doing the same) only delivers an NMI to a CPU whose LINT1 is
/// programmed like this: SeaBIOS does it on the BSP, qboot does not.
pub fn lapic_init_nmi() {
    let lapic = LAPIC_BASE.load(Ordering::Relaxed);
    mmio_wr32(lapic + SVR, 0x1ff);
    mmio_wr32(lapic + LVT_LINT1, 0x400); // delivery mode NMI, unmasked
}

/// Fills CPU `cpu`'s TSS and GDT descriptor (the BSP's are built in).
fn setup_tss(cpu: usize) {
    let tss = TSS_BASE + TSS_STRIDE * cpu as u64;
    let iomap = TSS_STRIDE * (MAX_CPUS - cpu) as u64;
    let limit = iomap + 8192; // bitmap + 0xff terminator
    let slot = RING0_STACKS + RING0_STACK_SZ * cpu as u64;
    unsafe {
        let p = tss as *mut u8;
        core::ptr::write_bytes(p, 0, 104);
        core::ptr::write_unaligned(p.add(4) as *mut u64, slot + RING0_STACK_SZ); // rsp0
        core::ptr::write_unaligned(p.add(36) as *mut u64, slot + 0x1000); // ist1 (#DF)
        core::ptr::write_unaligned(p.add(102) as *mut u16, iomap as u16);
        let lo = (limit & 0xffff)
            | (tss & 0xff_ffff) << 16
            | 0x89 << 40
            | ((limit >> 16) & 0xf) << 48
            | ((tss >> 24) & 0xff) << 56;
        let hi = tss >> 32;
        let g = addr_of_mut!(gdt) as *mut u64;
        let idx = (TSS_SEL0 as usize / 8) + 2 * cpu;
        core::ptr::write_volatile(g.add(idx), lo);
        core::ptr::write_volatile(g.add(idx + 1), hi);
    }
}

fn icr_wait(lapic: u64) {
    let mut spins = 0;
    while mmio_rd32(lapic + ICR_LO) & (1 << 12) != 0 && spins < 1_000_000 {
        pause();
        spins += 1;
    }
}

fn ipi(lapic: u64, apic_id: u32, lo: u32) {
    mmio_wr32(lapic + ICR_HI, apic_id << 24);
    mmio_wr32(lapic + ICR_LO, lo);
    icr_wait(lapic);
}

pub struct Started {
    /// CPUs that should report, BSP included.
    pub cpus: usize,
    /// APIC ID of CPU i.
    pub apic: [u32; MAX_CPUS],
}

impl Started {
    /// The APIC IDs of the APs that have not reached ring 3.
    pub fn missing(&self) -> impl Iterator<Item = u32> + '_ {
        (1..self.cpus)
            .filter(|&i| !STARTED[i].load(Ordering::Acquire))
            .map(|i| self.apic[i])
    }
}

/// Starts every AP in `apic_ids` (the BSP's own ID is skipped).
pub fn start_aps(lapic: u64, apic_ids: &[u32], bsp_apic: u32) -> Started {
    // The trampoline, copied into low memory.
    let (start, end) = (
        addr_of!(ap_trampoline_start) as u64,
        addr_of!(ap_trampoline_end) as u64,
    );
    unsafe {
        core::ptr::copy_nonoverlapping(
            start as *const u8,
            TRAMPOLINE as *mut u8,
            (end - start) as usize,
        );
    }

    let mut cpus = 1;
    let boot = unsafe { AP_BOOT.get() };
    let mut ap_list = [0u32; MAX_CPUS];
    for &id in apic_ids {
        if id == bsp_apic {
            continue;
        }
        if cpus == MAX_CPUS {
            crate::say!(
                "smp: more than {} CPUs, starting only {}",
                MAX_CPUS,
                MAX_CPUS
            );
            break;
        }
        setup_tss(cpus);
        boot[id as usize] = ApBoot {
            rsp0: RING0_STACKS + RING0_STACK_SZ * (cpus as u64 + 1),
            tss_sel: TSS_SEL0 + 16 * cpus as u64,
            rsp3: RING3_STACKS + RING3_STACK_SZ * (cpus as u64 + 1),
            cpu: cpus as u64,
        };
        ap_list[cpus] = id;
        cpus += 1;
    }
    ap_list[0] = bsp_apic;
    let aps = &ap_list[1..cpus];
    if aps.is_empty() {
        return Started {
            cpus,
            apic: ap_list,
        };
    }

    LAPIC_BASE.store(lapic, Ordering::Relaxed);
    lapic_init_nmi();
    let vector = (TRAMPOLINE >> 12) as u32;
    for &id in aps {
        ipi(lapic, id, 0x0000_4500); // INIT, level assert
    }
    crate::time::delay_us(10_000);
    for &id in aps {
        ipi(lapic, id, 0x0000_4600 | vector); // STARTUP
    }
    crate::time::delay_us(200);
    for (i, &id) in aps.iter().enumerate() {
        if !STARTED[i + 1].load(Ordering::Acquire) {
            ipi(lapic, id, 0x0000_4600 | vector); // second STARTUP (ignored by a running CPU)
        }
    }
    Started {
        cpus,
        apic: ap_list,
    }
}
