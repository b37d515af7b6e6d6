//! Fixed guest-physical layout (README.md "Memory"). Mirrors boot.S and
//! link.ld; `check()` verifies the symbols at start-up.

use core::cell::UnsafeCell;
use core::sync::atomic::AtomicU64;

pub const STATUS_ADDR: u64 = 0x100000;
pub const TRAMPOLINE: u64 = 0x8000;
pub const MAX_CPUS: usize = 64;
pub const TSS_BASE: u64 = 0x109000;
pub const TSS_STRIDE: u64 = 128;
pub const TSS_SEL0: u64 = 0x30;
pub const RING0_STACKS: u64 = 0x200000;
pub const RING0_STACK_SZ: u64 = 0x4000;
pub const RING3_STACKS: u64 = 0x300000;
pub const RING3_STACK_SZ: u64 = 0x8000;
/// One page that survives a reset (not part of the ELF image): the reset
/// test's marker.
pub const SCRATCH: u64 = 0x500000;
/// Highest address the guest uses (exclusive), apart from the AP trampoline.
pub const RAM_NEEDED_END: u64 = SCRATCH + 0x1000;

/// The status page at 0x100000, readable by the VMM (pmemsave/memsave).
#[repr(C)]
pub struct Status {
    /// "VMMGUEST"
    pub magic: [u8; 8],
    /// 0x100008: incremented forever by the `count` workload.
    pub counter: AtomicU64,
    /// 0x100010: NMIs received (all CPUs; the NMI handler in boot.S).
    pub nmis: AtomicU64,
    /// 0x100018: CPUs up (`smp`).
    pub cpus_up: AtomicU64,
    /// 0x100020: 0 while running; the exit code + 1 once the guest exits.
    pub exit: AtomicU64,
}

#[no_mangle]
#[used]
#[link_section = ".status"]
pub static STATUS: Status = Status {
    magic: *b"VMMGUEST",
    counter: AtomicU64::new(0),
    nmis: AtomicU64::new(0),
    cpus_up: AtomicU64::new(0),
    exit: AtomicU64::new(0),
};

/// Data written only by the BSP before the readers start (or read only by
/// one CPU): no locking.
#[repr(transparent)]
pub struct Racy<T>(pub UnsafeCell<T>);
unsafe impl<T> Sync for Racy<T> {}
impl<T> Racy<T> {
    pub const fn new(v: T) -> Self {
        Racy(UnsafeCell::new(v))
    }
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get(&self) -> &mut T {
        &mut *self.0.get()
    }
}

extern "C" {
    pub static mut gdt: [u64; 6 + 2 * MAX_CPUS];
    pub static mut tss_array: [u8; 0];
    pub static ap_trampoline_start: u8;
    pub static ap_trampoline_end: u8;
    pub static boot_cr3: u32;
    pub static pml4_1g: u8;
    pub static ring0_stacks_sym: u8;
    pub static ring3_stacks_sym: u8;
}

pub fn check() -> Result<(), &'static str> {
    use core::ptr::addr_of;
    let ok = {
        addr_of!(tss_array) as u64 == TSS_BASE
            && addr_of!(ring0_stacks_sym) as u64 == RING0_STACKS
            && addr_of!(ring3_stacks_sym) as u64 == RING3_STACKS
            && addr_of!(STATUS) as u64 == STATUS_ADDR
    };
    if ok {
        Ok(())
    } else {
        Err("layout.rs does not match boot.S/link.ld")
    }
}
