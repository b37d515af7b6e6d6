//! Port I/O, MMIO, CPUID, TSC. Port I/O works in ring 3 through the TSS
//! I/O permission bitmap (every port allowed).

use core::arch::asm;

#[inline]
pub fn outb(port: u16, v: u8) {
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    }
}

#[inline]
pub fn outw(port: u16, v: u16) {
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") v, options(nomem, nostack, preserves_flags))
    }
}

#[inline]
pub fn outl(port: u16, v: u32) {
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags))
    }
}

#[inline]
pub fn inb(port: u16) -> u8 {
    let v: u8;
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    }
    v
}

#[inline]
pub fn inl(port: u16) -> u32 {
    let v: u32;
    unsafe {
        asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack, preserves_flags))
    }
    v
}

#[inline]
pub fn inw(port: u16) -> u16 {
    let v: u16;
    unsafe {
        asm!("in ax, dx", in("dx") port, out("ax") v, options(nomem, nostack, preserves_flags))
    }
    v
}

#[allow(dead_code)]
pub struct Cpuid {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// The guest's CPUID. In ring 3 it goes through the int3 gate (function
/// 1): on kvm_pvm a ring-3 `cpuid` is not virtualized and returns the
/// host's values, whatever the VMM configured.
pub fn cpuid(leaf: u32, sub: u32) -> Cpuid {
    if cpl() == 0 {
        let r = core::arch::x86_64::__cpuid_count(leaf, sub);
        return Cpuid {
            eax: r.eax,
            ebx: r.ebx,
            ecx: r.ecx,
            edx: r.edx,
        };
    }
    let (eax, ebx, ecx, edx): (u64, u64, u64, u64);
    unsafe {
        asm!(
            "mov {b:r}, rbx",
            "int3",
            "xchg {b:r}, rbx",
            b = out(reg) ebx,
            inout("rax") 1u64 => eax,
            in("rdi") leaf as u64,
            in("rsi") sub as u64,
            out("rcx") ecx,
            out("rdx") edx,
            options(nomem, nostack),
        );
    }
    Cpuid {
        eax: eax as u32,
        ebx: ebx as u32,
        ecx: ecx as u32,
        edx: edx as u32,
    }
}

/// Reads MSR `index` (through the int3 gate from ring 3, where rdmsr
/// faults).
pub fn rdmsr(index: u32) -> u64 {
    let (lo, hi): (u64, u64);
    if cpl() == 0 {
        unsafe {
            asm!("rdmsr", in("ecx") index, out("eax") lo, out("edx") hi, options(nomem, nostack))
        };
    } else {
        unsafe {
            asm!(
                "int3",
                inout("rax") 2u64 => lo,
                in("rdi") u64::from(index),
                out("rcx") _,
                out("rdx") hi,
                options(nomem, nostack),
            )
        };
    }
    (lo & 0xffff_ffff) | (hi << 32)
}

/// Initial APIC ID of the running CPU (CPUID.1:EBX[31:24]).
pub fn apic_id() -> u32 {
    cpuid(1, 0).ebx >> 24
}

#[inline]
pub fn rdtsc() -> u64 {
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[inline]
pub fn pause() {
    core::hint::spin_loop()
}

/// Current privilege level.
pub fn cpl() -> u16 {
    let cs: u16;
    unsafe { asm!("mov {0:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags)) }
    cs & 3
}

/// Sleeps until an NMI arrives. From ring 3 this is the int3 gate (the
/// ring-0 handler does `hlt; iretq`); from ring 0 a plain `hlt`.
pub fn halt() {
    if cpl() == 3 {
        unsafe { asm!("int3", inout("rax") 0u64 => _, options(nomem, nostack)) }
    } else {
        unsafe { asm!("hlt", options(nomem, nostack)) }
    }
}

/// Physical memory is identity-mapped (and user-accessible): a physical
/// address is a pointer.
#[inline]
pub fn rd8(pa: u64) -> u8 {
    unsafe { core::ptr::read_volatile(pa as *const u8) }
}

#[inline]
pub fn rd16(pa: u64) -> u16 {
    unsafe { core::ptr::read_unaligned(pa as *const u16) }
}

#[inline]
pub fn rd32(pa: u64) -> u32 {
    unsafe { core::ptr::read_unaligned(pa as *const u32) }
}

#[inline]
pub fn rd64(pa: u64) -> u64 {
    unsafe { core::ptr::read_unaligned(pa as *const u64) }
}

#[inline]
pub fn mmio_rd32(pa: u64) -> u32 {
    unsafe { core::ptr::read_volatile(pa as *const u32) }
}

#[inline]
pub fn mmio_wr32(pa: u64, v: u32) {
    unsafe { core::ptr::write_volatile(pa as *mut u32, v) }
}

#[inline]
pub fn mmio_wr16(pa: u64, v: u16) {
    unsafe { core::ptr::write_volatile(pa as *mut u16, v) }
}

#[inline]
pub fn mmio_wr8(pa: u64, v: u8) {
    unsafe { core::ptr::write_volatile(pa as *mut u8, v) }
}

#[inline]
pub fn mmio_wr64(pa: u64, v: u64) {
    unsafe { core::ptr::write_volatile(pa as *mut u64, v) }
}
