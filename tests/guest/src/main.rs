//! vmm test guest. The ring-0 part (PVH entry, long mode, interrupt entry
//! points, boot tables) is boot.S; everything here runs in ring 3, except
//! `rust_fault`. See README.md for the protocol.

#![no_std]
#![no_main]

mod acpi;
mod blkbench;
mod layout;
mod mem;
mod rtc;
mod serial;
mod smp;
mod start_info;
mod tests;
mod time;
mod virtio;
mod x86;

use core::sync::atomic::Ordering;

core::arch::global_asm!(include_str!("boot.S"), options(att_syntax));

pub const VERSION: u32 = 1;

pub const EXIT_OK: u32 = 0;
pub const EXIT_FAIL: u32 = 1;
pub const EXIT_USAGE: u32 = 2;
pub const EXIT_FAULT: u32 = 3;
pub const EXIT_PANIC: u32 = 4;

const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Prints `exit N`, writes N to the debug-exit port (QEMU:
/// `isa-debug-exit,iobase=0xf4,iosize=4` exits with status 2N+1), and
/// halts. A VMM may stop the guest a little after the write (vmm does it
/// from its main loop), so the guest says the device is missing only if
/// it still runs a second later.
pub fn exit(code: u32) -> ! {
    layout::STATUS.exit.store(code as u64 + 1, Ordering::SeqCst);
    serial::line_force(format_args!("exit {}", code));
    x86::outl(DEBUG_EXIT_PORT, code);
    if x86::cpl() == 3 {
        time::wait_until(1, || false);
        serial::line_force(format_args!(
            "no debug-exit device at {:#x}; halted",
            DEBUG_EXIT_PORT
        ));
    }
    loop {
        x86::halt();
    }
}

/// BSP, ring 3, from boot.S with `.bss` zeroed.
#[no_mangle]
pub extern "C" fn rust_start(start_info_pa: u64) -> ! {
    serial::init();
    start_info::init(start_info_pa);
    let si = start_info::get();
    let pages = if unsafe { layout::boot_cr3 } == core::ptr::addr_of!(layout::pml4_1g) as u32 {
        "1G"
    } else {
        "2M"
    };
    say!(
        "start v{} pages={} ram={}M cmdline=\"{}\"",
        VERSION,
        pages,
        si.ram_bytes() >> 20,
        si.cmdline()
    );
    if let Err(e) = layout::check() {
        say!("fail start {}", e);
        exit(EXIT_FAIL);
    }
    if !si.valid {
        say!(
            "warning: no PVH start_info at {:#x} (bad magic); empty command line",
            si.paddr
        );
    }
    if si.is_ram(0x100000, layout::RAM_NEEDED_END) == Some(false) {
        say!(
            "warning: {:#x}-{:#x} is not all RAM in the memory map",
            0x100000,
            layout::RAM_NEEDED_END
        );
    }

    let list = si.arg("test").unwrap_or("serial");
    for name in list.split(',') {
        if !tests::ALL.contains(&name) {
            say!("fail {} unknown test (known: {})", name, Known);
            exit(EXIT_USAGE);
        }
    }
    for name in list.split(',') {
        tests::run(name);
    }
    exit(EXIT_OK)
}

struct Known;
impl core::fmt::Display for Known {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        for (i, t) in tests::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(t)?;
        }
        Ok(())
    }
}

/// An AP, ring 3.
#[no_mangle]
pub extern "C" fn rust_ap_start(cpu: u64) -> ! {
    tests::ap_main(cpu)
}

/// CPU exception (ring 0, from boot.S): report and exit.
///
/// # Safety
/// `frame` points at the 7 words fault_common leaves on the stack.
#[no_mangle]
pub unsafe extern "C" fn rust_fault(frame: *const u64, cr2: u64) -> ! {
    let f = core::slice::from_raw_parts(frame, 7);
    let (vector, error, rip, cs, rflags, rsp, ss) = (f[0], f[1], f[2], f[3], f[4], f[5], f[6]);
    let name = match vector {
        0 => "#DE",
        1 => "#DB",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        20 => "#VE",
        21 => "#CP",
        _ => "#??",
    };
    serial::line_force(format_args!(
        "fault {} vector={} error={:#x} rip={:#x} cs={:#x} rflags={:#x} rsp={:#x} ss={:#x} cr2={:#x} apic={}",
        name,
        vector,
        error,
        rip,
        cs,
        rflags,
        rsp,
        ss,
        cr2,
        x86::apic_id()
    ));
    exit(EXIT_FAULT)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    serial::line_force(format_args!("panic {}", info));
    exit(EXIT_PANIC)
}
