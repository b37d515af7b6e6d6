//! The workloads, selected with `test=` on the command line.

use crate::layout::{SCRATCH, STATUS};
use crate::start_info;
use crate::x86::{
    apic_id, halt, inl, inw, mmio_wr16, mmio_wr32, mmio_wr64, mmio_wr8, outb, outl, outw,
};
use crate::{acpi, exit, rtc, say, smp, time, EXIT_FAIL};
use core::sync::atomic::Ordering;

pub const ALL: &[&str] = &[
    "serial",
    "count",
    "nmi",
    "rtc",
    "reset",
    "acpi-shutdown",
    "acpi-suspend",
    "pci",
    "virtio-blk",
    "virtio-hostile",
    "virtio-msix",
    "msrs",
    "exec-mmio",
    "virtio-busmaster",
    "virtio-pci-cfg",
    "keyboard",
    "mouse",
    "virtio-resize",
    "virtio-blk-rw",
    "virtio-blk-bench",
    "virtio-blk-legacy",
    "smp",
    "idle",
    "fault",
    "echo",
];

/// Default for every bounded wait (seconds); `timeout=` overrides it.
pub const DEFAULT_TIMEOUT: u64 = 10;

pub fn timeout() -> u64 {
    start_info::get()
        .arg("timeout")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_TIMEOUT)
}

fn fail(test: &str, why: core::fmt::Arguments) -> ! {
    say!("fail {} {}", test, why);
    exit(EXIT_FAIL)
}

/// ACPI table `sig`, found through the RSDP; fails test `t` without it.
fn acpi_table(t: &str, sig: &[u8; 4], what: &str) -> acpi::Table {
    let si = start_info::get();
    let Some(rsdp) = acpi::find_rsdp(si.rsdp) else {
        fail(t, format_args!("no RSDP"))
    };
    match acpi::find_table(&rsdp, sig) {
        Some(table) => table,
        None => fail(t, format_args!("no {}", what)),
    }
}

/// The first virtio-blk device, set up; fails test `t` without it.
fn probe_blk(t: &str) -> crate::virtio::Blk {
    match crate::virtio::Blk::probe() {
        Ok(b) => b,
        Err(e) => fail(t, format_args!("{}", e)),
    }
}

pub fn run(name: &str) {
    match name {
        "serial" => say!("ok serial"),
        "count" => count(),
        "nmi" => nmi(),
        "rtc" => rtc(),
        "reset" => reset(),
        "acpi-shutdown" => acpi_shutdown(),
        "acpi-suspend" => acpi_suspend(),
        "pci" => pci(),
        "virtio-blk" => virtio_blk(),
        "virtio-hostile" => virtio_hostile(),
        "virtio-msix" => virtio_msix(),
        "msrs" => msrs(),
        "exec-mmio" => exec_mmio(),
        "virtio-busmaster" => virtio_busmaster(),
        "virtio-pci-cfg" => virtio_pci_cfg(),
        "keyboard" => keyboard(),
        "mouse" => mouse(),
        "virtio-resize" => virtio_resize(),
        "virtio-blk-rw" => virtio_blk_rw(),
        "virtio-blk-bench" => crate::blkbench::run(),
        "virtio-blk-legacy" => virtio_blk_legacy(),
        "smp" => smp(),
        "idle" => idle(),
        "fault" => fault(),
        "echo" => echo(),
        _ => unreachable!(),
    }
}

/// Reads COM1 and prints each line it receives (up to 128 bytes, CR or
/// LF ends one) as `echo <line>` until a line `quit`, and `echo break`
/// for each break; fails when nothing arrives for `timeout` seconds.
fn echo() {
    let t = timeout();
    say!("echo ready");
    let mut line = [0u8; 128];
    let mut len = 0;
    loop {
        let mut got = None;
        let mut brk = false;
        let arrived = time::wait_until(t, || {
            let (b, bi) = crate::serial::read_byte();
            got = b;
            brk = bi;
            b.is_some() || bi
        });
        if !arrived {
            fail("echo", format_args!("no input for {}s", t));
        }
        if brk {
            say!("echo break");
            // The break's NUL byte is not part of a line.
            if got == Some(0) {
                continue;
            }
        }
        let Some(b) = got else { continue };
        if b == b'\n' || b == b'\r' || len == line.len() {
            let text = core::str::from_utf8(&line[..len]).unwrap_or("<not utf-8>");
            if text == "quit" {
                say!("ok echo");
                return;
            }
            if len > 0 {
                say!("echo {}", text);
            }
            len = 0;
            if b == b'\n' || b == b'\r' {
                continue;
            }
        }
        line[len] = b;
        len += 1;
    }
}

fn count() -> ! {
    let c = &STATUS.counter;
    say!("count addr={:#x} running", c as *const _ as u64);
    loop {
        c.store(c.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }
}

/// The LAPIC base from the MADT, if there is one.
fn find_lapic() {
    let si = start_info::get();
    if let Some(m) = acpi::find_rsdp(si.rsdp)
        .and_then(|r| acpi::find_table(&r, b"APIC"))
        .map(|t| acpi::madt(&t))
    {
        smp::LAPIC_BASE.store(m.lapic, Ordering::Relaxed);
    }
}

fn nmi() {
    find_lapic();
    smp::lapic_init_nmi();
    let t = timeout();
    let before = STATUS.nmis.load(Ordering::Relaxed);
    say!("nmi waiting timeout={}", t);
    if time::wait_until(t, || STATUS.nmis.load(Ordering::Relaxed) != before) {
        // Give NMIs sent to every CPU a moment to land before counting.
        time::delay_us(1000);
        say!(
            "ok nmi count={}",
            STATUS.nmis.load(Ordering::Relaxed) - before
        );
    } else {
        fail("nmi", format_args!("timeout after {}s", t));
    }
}

fn rtc() {
    let d = rtc::now();
    let line = format_args!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} statusB={:#04x} century={:#04x}",
        d.year, d.mon, d.day, d.hour, d.min, d.sec, d.status_b, d.century_reg
    );
    if !d.valid() {
        fail("rtc", format_args!("invalid {}", line));
    }
    // The update-ended interrupt: enable UIE in register B and watch
    // register C raise IRQF and UF within two seconds (interrupts stay
    // masked in the CPU, so polling sees the flags).
    let b = rtc::read(0x0b);
    rtc::write(0x0b, b | 0x10);
    let _ = rtc::read(0x0c);
    let mut c = 0;
    let seen = time::wait_until(2, || {
        c = rtc::read(0x0c);
        c & 0x90 == 0x90
    });
    rtc::write(0x0b, b);
    if !seen {
        fail(
            "rtc",
            format_args!("no update interrupt flag in register C (last {:#04x})", c),
        );
    }
    say!("ok rtc {} update-irq", line);
}

/// Marker left in SCRATCH (outside the ELF image, so a reset that reloads
/// the image keeps it) before resetting.
const RESET_MARK: u64 = u64::from_le_bytes(*b"RESETNOW");

fn reset() -> ! {
    let mark = SCRATCH as *mut u64;
    unsafe {
        if core::ptr::read_volatile(mark) == RESET_MARK {
            core::ptr::write_volatile(mark, 0);
            say!("ok reset rebooted");
            exit(0);
        }
        core::ptr::write_volatile(mark, RESET_MARK);
    }
    say!("reset via i8042");
    outb(0x64, 0xfe);
    let t = timeout();
    time::wait_until(t, || false);
    unsafe { core::ptr::write_volatile(mark, 0) };
    fail(
        "reset",
        format_args!("still running {}s after i8042 reset", t),
    )
}

fn gas_write(g: &acpi::Gas, v: u64) {
    let width = match (g.access_size, g.bit_width) {
        (1, _) => 8,
        (2, _) => 16,
        (3, _) => 32,
        (4, _) => 64,
        (_, w) if w > 0 => w,
        _ => 8,
    };
    match (g.space, width) {
        (1, 8) => outb(g.addr as u16, v as u8),
        (1, 16) => outw(g.addr as u16, v as u16),
        (1, _) => outl(g.addr as u16, v as u32),
        (_, 8) => mmio_wr8(g.addr, v as u8),
        (_, 16) => mmio_wr16(g.addr, v as u16),
        (_, 32) => mmio_wr32(g.addr, v as u32),
        (_, _) => mmio_wr64(g.addr, v),
    }
}

/// Marker left in SCRATCH before suspending: the wake-up restarts the
/// guest (no firmware resume path), which then reports it woke.
const SUSPEND_MARK: u64 = u64::from_le_bytes(*b"SUSPEND3");

/// Suspend to RAM (S3) through PM1a_CNT with the DSDT's \_S3 type; the
/// VMM wakes the machine (QMP `system_wakeup`), the guest starts again and
/// reports `ok acpi-suspend woke`.
fn acpi_suspend() -> ! {
    const T: &str = "acpi-suspend";
    let mark = SCRATCH as *mut u64;
    unsafe {
        if core::ptr::read_volatile(mark) == SUSPEND_MARK {
            core::ptr::write_volatile(mark, 0);
            say!("ok {} woke", T);
            exit(0);
        }
    }
    let f = acpi::fadt(&acpi_table(T, b"FACP", "FADT"));
    let Some(s3) = acpi::table_at(f.dsdt)
        .as_ref()
        .and_then(|d| acpi::sleep_slp_typ(d, b"_S3_"))
    else {
        fail(T, format_args!("no \\_S3 in the DSDT"))
    };
    if f.pm1a_cnt == 0 || f.hw_reduced {
        fail(T, format_args!("no PM1a control block"));
    }
    unsafe { core::ptr::write_volatile(mark, SUSPEND_MARK) };
    let v = (inw(f.pm1a_cnt) & !0x3c00) | (s3 as u16 & 7) << 10;
    say!("{} pm1a_cnt={:#x} <- {:#x}", T, f.pm1a_cnt, v | 1 << 13);
    outw(f.pm1a_cnt, v | 1 << 13);
    let t = timeout();
    time::wait_until(t, || false);
    unsafe { core::ptr::write_volatile(mark, 0) };
    fail(T, format_args!("still running {}s after entering S3", t))
}

/// Scans PCI bus 0 through configuration mechanism #1 (0xcf8/0xcfc) and
/// prints every function found: `pci SS.F VVVV:DDDD class CCSS`.
fn pci() {
    let mut found = 0;
    for slot in 0..32u32 {
        for func in 0..8u32 {
            let addr = 0x8000_0000 | slot << 11 | func << 8;
            outl(0xcf8, addr);
            let id = inl(0xcfc);
            if id & 0xffff == 0xffff {
                if func == 0 {
                    break;
                }
                continue;
            }
            outl(0xcf8, addr | 0x08);
            let class = inl(0xcfc) >> 16;
            say!(
                "pci {:02x}.{} {:04x}:{:04x} class {:04x}",
                slot,
                func,
                id & 0xffff,
                id >> 16,
                class
            );
            found += 1;
            if func == 0 {
                outl(0xcf8, addr | 0x0c);
                // Only multi-function devices have functions 1-7.
                if (inl(0xcfc) >> 16) & 0x80 == 0 {
                    break;
                }
            }
        }
    }
    say!("ok pci {}", found);
}

/// Drives the first virtio-blk device by polling: prints capacity, the
/// first 16 bytes of sector 0 as the host left them, writes a pattern to
/// sectors 8-15 and reads it back, flushes, reads the serial, and checks
/// that a read past the end fails with IOERR.
/// Writes sectors 16-23 through an indirect descriptor table, reads them
/// back through a plain chain, then the other way round.
fn virtio_blk_indirect(blk: &mut crate::virtio::Blk, buf: &mut [u8]) {
    const T: &str = "virtio-blk";
    if !blk.indirect {
        say!("{} indirect=not-offered", T);
        return;
    }
    let pattern = |i: usize| (i as u8).wrapping_mul(13).wrapping_add(5);
    let check = |buf: &[u8], how: &str| {
        if let Some(i) = buf[..4096]
            .iter()
            .enumerate()
            .position(|(i, b)| *b != pattern(i))
        {
            fail(T, format_args!("{} read back differs at byte {}", how, i));
        }
    };
    for (i, b) in buf[..4096].iter_mut().enumerate() {
        *b = pattern(i);
    }
    if blk.request_indirect(crate::virtio::T_OUT, 16, 4096) != Ok(0) {
        fail(T, format_args!("indirect write failed"));
    }
    buf[..4096].fill(0);
    if blk.request(crate::virtio::T_IN, 16, 4096) != Ok(0) {
        fail(T, format_args!("read after an indirect write failed"));
    }
    check(buf, "indirect write:");
    buf[..4096].fill(0);
    if blk.request_indirect(crate::virtio::T_IN, 16, 4096) != Ok(0) {
        fail(T, format_args!("indirect read failed"));
    }
    check(buf, "indirect read:");
    say!("{} indirect=ok", T);
}

fn virtio_blk() {
    const T: &str = "virtio-blk";
    let mut blk = probe_blk(T);
    let data = crate::virtio::DATA as *mut u8;
    let buf = unsafe { core::slice::from_raw_parts_mut(data, crate::virtio::DATA_MAX) };
    let run = |blk: &mut crate::virtio::Blk, kind, sector, len| match blk.request(kind, sector, len)
    {
        Ok(s) => s,
        Err(e) => fail(T, format_args!("{}", e)),
    };
    buf[..512].fill(0);
    let st = run(&mut blk, crate::virtio::T_IN, 0, 512);
    let hex = hex16(buf);
    say!(
        "{} capacity={} sector0={} status={}",
        T,
        blk.capacity,
        core::str::from_utf8(&hex).unwrap_or("?"),
        st
    );
    let chs = blk.config_u32(16);
    say!(
        "{} geometry={}/{}/{}",
        T,
        chs & 0xffff,
        (chs >> 16) & 0xff,
        chs >> 24
    );
    for (i, b) in buf[..4096].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(7).wrapping_add(3);
    }
    if run(&mut blk, crate::virtio::T_OUT, 8, 4096) != 0 {
        fail(T, format_args!("write failed"));
    }
    buf[..4096].fill(0);
    if run(&mut blk, crate::virtio::T_IN, 8, 4096) != 0 {
        fail(T, format_args!("read failed"));
    }
    if let Some(i) = buf[..4096]
        .iter()
        .enumerate()
        .position(|(i, b)| *b != (i as u8).wrapping_mul(7).wrapping_add(3))
    {
        fail(T, format_args!("read back differs at byte {}", i));
    }
    virtio_blk_indirect(&mut blk, buf);
    if run(&mut blk, crate::virtio::T_FLUSH, 0, 0) != 0 {
        fail(T, format_args!("flush failed"));
    }
    buf[..20].fill(0);
    if run(&mut blk, crate::virtio::T_GET_ID, 0, 20) != 0 {
        fail(T, format_args!("get-id failed"));
    }
    let end = buf[..20].iter().position(|b| *b == 0).unwrap_or(20);
    let serial = core::str::from_utf8(&buf[..end]).unwrap_or("?");
    let capacity = blk.capacity;
    let past_end = run(&mut blk, crate::virtio::T_IN, capacity, 512);
    if past_end != 1 {
        fail(
            T,
            format_args!("read past the end gave status {}, not IOERR", past_end),
        );
    }
    say!(
        "ok {} serial={} device-status={:#x}",
        T,
        serial,
        blk.device_status()
    );
}

/// The first 16 bytes of `buf` in hex.
fn hex16(buf: &[u8]) -> [u8; 32] {
    let mut hex = [0u8; 32];
    for (i, b) in buf.iter().take(16).enumerate() {
        let d = b"0123456789abcdef";
        hex[2 * i] = d[usize::from(b >> 4)];
        hex[2 * i + 1] = d[usize::from(b & 15)];
    }
    hex
}

/// Drives the first virtio-blk-pci as a legacy (pre-1.0) driver through
/// its I/O BAR 0: accepts FLUSH and ANY_LAYOUT of what it is offered,
/// puts queue 0 at a page frame number, reads sector 0, writes a pattern
/// (byte i = 13i+5) to sectors 16-23, reads it back and flushes; then
/// resets the device, sets it up again and reads the pattern once more.
fn virtio_blk_legacy() {
    const T: &str = "virtio-blk-legacy";
    const ACCEPT: u32 = (1 << 9) | (1 << 27);
    const NOTIFY_ON_EMPTY: u32 = 1 << 24;
    let pattern = |i: usize| (i as u8).wrapping_mul(13).wrapping_add(5);
    let probe_with = |accept: u32| match crate::virtio::Blk::probe_legacy(accept) {
        Ok(b) => b,
        Err(e) => fail(T, format_args!("{}", e)),
    };
    let probe = || probe_with(ACCEPT);
    let (mut blk, offered) = probe();
    let data = crate::virtio::DATA as *mut u8;
    let buf = unsafe { core::slice::from_raw_parts_mut(data, crate::virtio::DATA_MAX) };
    let run = |blk: &mut crate::virtio::Blk, kind, sector, len| match blk.request(kind, sector, len)
    {
        Ok(s) => s,
        Err(e) => fail(T, format_args!("{}", e)),
    };
    let kept = blk.legacy_guest_features();
    if kept != offered & ACCEPT {
        fail(T, format_args!("guest features read back {:#x}", kept));
    }
    if blk.legacy_queue_pfn() != (crate::virtio::RING_DESC >> 12) as u32 {
        fail(
            T,
            format_args!("queue PFN reads back {:#x}", blk.legacy_queue_pfn()),
        );
    }
    buf[..512].fill(0);
    let st = run(&mut blk, crate::virtio::T_IN, 0, 512);
    let hex = hex16(buf);
    say!(
        "{} io={:#x} features={:#x} guest-features={:#x} queue={} capacity={} sector0={} status={}",
        T,
        blk.legacy_port().unwrap_or(0),
        offered,
        kept,
        blk.qsize,
        blk.capacity,
        core::str::from_utf8(&hex).unwrap_or("?"),
        st
    );
    for (i, b) in buf[..4096].iter_mut().enumerate() {
        *b = pattern(i);
    }
    if run(&mut blk, crate::virtio::T_OUT, 16, 4096) != 0 {
        fail(T, format_args!("write failed"));
    }
    buf[..4096].fill(0);
    if run(&mut blk, crate::virtio::T_IN, 16, 4096) != 0 {
        fail(T, format_args!("read failed"));
    }
    if let Some(i) = (0..4096).find(|&i| buf[i] != pattern(i)) {
        fail(T, format_args!("read back differs at byte {}", i));
    }
    if run(&mut blk, crate::virtio::T_FLUSH, 0, 0) != 0 {
        fail(T, format_args!("flush failed"));
    }
    let status = blk.device_status();
    // Status 0 resets; a fresh setup reads the data again.
    blk.set_device_status(0);
    if blk.device_status() != 0 {
        fail(
            T,
            format_args!("status {:#x} after reset", blk.device_status()),
        );
    }
    let (mut blk, _) = probe();
    buf[..4096].fill(0);
    if run(&mut blk, crate::virtio::T_IN, 16, 4096) != 0 {
        fail(T, format_args!("read after reset failed"));
    }
    if let Some(i) = (0..4096).find(|&i| buf[i] != pattern(i)) {
        fail(T, format_args!("read after reset differs at byte {}", i));
    }
    // NOTIFY_ON_EMPTY: with interrupts suppressed, the device still
    // interrupts once the queue runs dry, if the driver took the feature.
    for extra in [0, NOTIFY_ON_EMPTY] {
        let (mut blk, _) = probe_with(ACCEPT | extra);
        blk.suppress_interrupts();
        let _ = blk.legacy_isr();
        run(&mut blk, crate::virtio::T_IN, 0, 512);
        time::delay_us(20_000);
        say!(
            "{} notify-on-empty={} isr={}",
            T,
            extra != 0,
            blk.legacy_isr() & 1
        );
    }
    say!("ok {} device-status={:#x}", T, status);
}

/// Writes the `virtio-blk` pattern to sectors 8-15, reads it back and
/// flushes, printing each request's status instead of failing on IOERR
/// (the host's error policies decide what the guest sees); the data is
/// compared whatever the statuses.
fn virtio_blk_rw() {
    const T: &str = "virtio-blk-rw";
    let mut blk = probe_blk(T);
    let data = crate::virtio::DATA as *mut u8;
    let buf = unsafe { core::slice::from_raw_parts_mut(data, crate::virtio::DATA_MAX) };
    let pattern = |i: usize| (i as u8).wrapping_mul(7).wrapping_add(3);
    let mut run = |kind, sector, len| match blk.request(kind, sector, len) {
        Ok(s) => s,
        Err(e) => fail(T, format_args!("{}", e)),
    };
    for (i, b) in buf[..4096].iter_mut().enumerate() {
        *b = pattern(i);
    }
    let st = run(crate::virtio::T_OUT, 8, 4096);
    say!("{} write status={}", T, st);
    buf[..4096].fill(0);
    let st = run(crate::virtio::T_IN, 8, 4096);
    let same = buf[..4096]
        .iter()
        .enumerate()
        .all(|(i, b)| *b == pattern(i));
    say!(
        "{} read status={} data={}",
        T,
        st,
        if same { "match" } else { "differ" }
    );
    let st = run(crate::virtio::T_FLUSH, 0, 0);
    say!("{} flush status={}", T, st);
    say!("ok {}", T);
}

/// Prints what the keyboard controller delivers, in three bursts (each one
/// ends after 300 ms without a byte): the host presses keys meanwhile.
fn keyboard() {
    const T: &str = "keyboard";
    while crate::x86::inb(0x64) & 1 != 0 {
        let _ = crate::x86::inb(0x60);
    }
    say!("{} waiting", T);
    for burst in 0..3 {
        let mut bytes = [0u8; 16];
        let mut n = 0;
        if !time::wait_until(timeout(), || crate::x86::inb(0x64) & 1 != 0) {
            fail(T, format_args!("no byte in burst {}", burst));
        }
        loop {
            while crate::x86::inb(0x64) & 1 != 0 {
                let b = crate::x86::inb(0x60);
                if n < bytes.len() {
                    bytes[n] = b;
                    n += 1;
                }
            }
            let mut more = false;
            for _ in 0..300 {
                time::delay_us(1_000);
                if crate::x86::inb(0x64) & 1 != 0 {
                    more = true;
                    break;
                }
            }
            if !more {
                break;
            }
        }
        let mut line = [0u8; 48];
        let mut len = 0;
        for b in &bytes[..n] {
            for c in [b >> 4, b & 0xf] {
                line[len] = if c < 10 { b'0' + c } else { b'a' + c - 10 };
                len += 1;
            }
            line[len] = b' ';
            len += 1;
        }
        say!(
            "{} got {}",
            T,
            core::str::from_utf8(&line[..len.saturating_sub(1)]).unwrap_or("?")
        );
    }
    say!("ok {}", T);
}

/// The i8042's next byte, and whether the mouse sent it (status bit 5);
/// fails test `t` when none comes.
fn kbc_read(t: &str) -> (u8, bool) {
    if !time::wait_until(timeout(), || crate::x86::inb(0x64) & 1 != 0) {
        fail(t, format_args!("no byte from the controller"));
    }
    let status = crate::x86::inb(0x64);
    (crate::x86::inb(0x60), status & 0x20 != 0)
}

/// Sends `bytes` to the mouse (each through controller command 0xd4)
/// and checks that it answers `want`, every byte flagged as the mouse's.
fn mouse_expect(t: &str, what: &str, bytes: &[u8], want: &[u8]) {
    for &b in bytes {
        outb(0x64, 0xd4);
        outb(0x60, b);
    }
    for (i, &w) in want.iter().enumerate() {
        let (got, aux) = kbc_read(t);
        if got != w || !aux {
            fail(
                t,
                format_args!(
                    "{}: byte {} is {:02x} (aux {}), expected {:02x}",
                    what, i, got, aux, w
                ),
            );
        }
    }
}

/// Checks a controller command's one-byte answer (not the mouse's).
fn kbc_expect(t: &str, what: &str, cmd: u8, want: u8) {
    outb(0x64, cmd);
    let (got, aux) = kbc_read(t);
    if got != want || aux {
        fail(
            t,
            format_args!("{}: {:02x} (aux {}), expected {:02x}", what, got, aux, want),
        );
    }
}

/// Prints the mouse's bytes in `bursts` bursts (each ends after 300 ms
/// without a byte) as `mouse got N: xx xx...`, N counting from `first`.
fn mouse_bursts(t: &str, first: u32, bursts: u32) {
    for burst in first..first + bursts {
        let mut bytes = [0u8; 32];
        let mut n = 0;
        loop {
            let waited = if n == 0 {
                time::wait_until(timeout(), || crate::x86::inb(0x64) & 1 != 0)
            } else {
                let mut more = false;
                for _ in 0..300 {
                    time::delay_us(1_000);
                    if crate::x86::inb(0x64) & 1 != 0 {
                        more = true;
                        break;
                    }
                }
                more
            };
            if !waited {
                if n == 0 {
                    fail(t, format_args!("no byte in burst {}", burst));
                }
                break;
            }
            while crate::x86::inb(0x64) & 1 != 0 {
                let (b, aux) = kbc_read(t);
                if !aux {
                    fail(
                        t,
                        format_args!("burst {}: {:02x} not from the mouse", burst, b),
                    );
                }
                if n < bytes.len() {
                    bytes[n] = b;
                    n += 1;
                }
            }
        }
        let mut line = [0u8; 96];
        let mut len = 0;
        for b in &bytes[..n] {
            for c in [b >> 4, b & 0xf] {
                line[len] = if c < 10 { b'0' + c } else { b'a' + c - 10 };
                len += 1;
            }
            line[len] = b' ';
            len += 1;
        }
        say!(
            "{} got {}: {}",
            t,
            burst,
            core::str::from_utf8(&line[..len.saturating_sub(1)]).unwrap_or("?")
        );
    }
}

/// The PS/2 mouse behind the i8042's aux port: the controller's aux
/// commands, the mouse's replies (reset, id, status, wrap, remote mode
/// and read data), then its packets while the host moves it: 8 bursts
/// as a plain mouse, then after the IntelliMouse knock 2 bursts with the
/// wheel byte.
fn mouse() {
    const T: &str = "mouse";
    while crate::x86::inb(0x64) & 1 != 0 {
        let _ = crate::x86::inb(0x60);
    }
    kbc_expect(T, "aux port test", 0xa9, 0x00);
    outb(0x64, 0x20);
    let (ccb, _) = kbc_read(T);
    outb(0x64, 0xa7);
    kbc_expect(T, "aux disabled", 0x20, ccb | 0x20);
    outb(0x64, 0xa8);
    // Aux port on, its interrupt (IRQ 12) on.
    outb(0x64, 0x60);
    outb(0x60, (ccb | 0x02) & !0x20);
    kbc_expect(T, "command byte", 0x20, (ccb | 0x02) & !0x20);

    mouse_expect(T, "reset", &[0xff], &[0xfa, 0xaa, 0x00]);
    mouse_expect(T, "id", &[0xf2], &[0xfa, 0x00]);
    mouse_expect(T, "status", &[0xe9], &[0xfa, 0x00, 0x02, 0x64]);
    mouse_expect(T, "wrap", &[0xee, 0x5a, 0xec], &[0xfa, 0x5a, 0xfa]);
    mouse_expect(
        T,
        "remote",
        &[0xf0, 0xeb, 0xea],
        &[0xfa, 0xfa, 0x08, 0x00, 0x00, 0xfa],
    );
    // 0xd3: a byte as if the mouse had sent it.
    outb(0x64, 0xd3);
    outb(0x60, 0x77);
    mouse_expect(T, "aux output buffer", &[], &[0x77]);
    mouse_expect(T, "enable", &[0xf4], &[0xfa]);
    say!("{} waiting", T);
    mouse_bursts(T, 1, 8);

    // IntelliMouse: sample rates 200, 100, 80 make it id 3, with a wheel.
    mouse_expect(T, "knock", &[0xf3, 200, 0xf3, 100, 0xf3, 80], &[0xfa; 6]);
    mouse_expect(T, "wheel id", &[0xf2], &[0xfa, 0x03]);
    say!("{} wheel", T);
    mouse_bursts(T, 9, 2);
    say!("ok {}", T);
}

/// The PCI_CFG capability reaches the common configuration through
/// configuration space: the device status read both ways agrees, and the
/// configuration vector written through the window reads back by MMIO.
fn virtio_pci_cfg() {
    const T: &str = "virtio-pci-cfg";
    let blk = probe_blk(T);
    let Some(cap) = blk.pci_cfg_cap() else {
        fail(T, format_args!("no VIRTIO_PCI_CAP_PCI_CFG capability"));
    };
    blk.pci_cfg_point(cap, 0x14, 1);
    let via_window = blk.pci_cfg_read(cap) & 0xff;
    let via_mmio = u32::from(blk.device_status());
    blk.pci_cfg_point(cap, 0x10, 2);
    blk.pci_cfg_write(cap, 0);
    let vector0 = blk.common_rd16(0x10);
    blk.pci_cfg_write(cap, 0xffff);
    let no_vector = blk.common_rd16(0x10);
    say!(
        "{} cap={:#x} status={:#x}/{:#x} vector={:#x}/{:#x}",
        T,
        cap,
        via_window,
        via_mmio,
        vector0,
        no_vector
    );
    if via_window != via_mmio || vector0 != 0 || no_vector != 0xffff {
        fail(T, format_args!("the window and MMIO disagree"));
    }
    say!("ok {}", T);
}

/// With bus mastering off the device must leave guest memory alone: a
/// request made then stays untouched until the driver turns it back on
/// and, as under QEMU, sets DRIVER_OK again.
fn virtio_busmaster() {
    const T: &str = "virtio-busmaster";
    let mut blk = probe_blk(T);
    if blk.request(crate::virtio::T_IN, 0, 512) != Ok(0) {
        fail(T, format_args!("read with bus mastering on failed"));
    }
    blk.set_bus_master(false);
    blk.start_read(0, 512);
    time::delay_us(200_000);
    let early = blk.completed();
    say!("{} bus-master off: completed={}", T, early);
    if early {
        fail(
            T,
            format_args!("the device used guest memory with bus mastering off"),
        );
    }
    // QEMU takes DRIVER_OK back when bus mastering goes off under a
    // running device; turning it on again is not enough to go on.
    let status = blk.device_status();
    say!("{} bus-master off: status={:#x}", T, status);
    if status & 4 != 0 {
        fail(T, format_args!("DRIVER_OK stayed with bus mastering off"));
    }
    blk.set_bus_master(true);
    time::delay_us(200_000);
    if blk.completed() {
        fail(T, format_args!("the device went on before DRIVER_OK came back"));
    }
    blk.set_device_status(status | 4);
    match blk.wait_completion() {
        Ok(0) => say!("ok {}", T),
        Ok(s) => fail(
            T,
            format_args!("status {} after bus mastering came back", s),
        ),
        Err(e) => fail(T, format_args!("{}", e)),
    }
}

/// Jumps to an address where no RAM is (below the IOAPIC): the
/// hypervisor cannot fetch the instruction, and the VMM must stop the VM
/// in `internal-error` rather than die. Never returns.
fn exec_mmio() {
    say!("exec-mmio jumping to 0xfe000000");
    // SAFETY: deliberately not safe: the point is what the VMM does.
    let f: extern "C" fn() = unsafe { core::mem::transmute(0xfe00_0000usize) };
    f();
    say!("fail exec-mmio came back");
}

/// The MSRs a boot loader leaves set: MTRRs on with write-back as the
/// default type, fast strings, and the power-on PAT.
fn msrs() {
    let misc = crate::x86::rdmsr(0x1a0);
    let mtrr_def = crate::x86::rdmsr(0x2ff);
    let pat = crate::x86::rdmsr(0x277);
    say!(
        "msrs misc_enable={:#x} mtrr_def_type={:#x} pat={:#x}",
        misc,
        mtrr_def,
        pat
    );
    say!("ok msrs");
}

/// Whether the boot CPU's local APIC holds `vector` requested (IRR): with
/// IF clear the guest never takes it, so the bit stays for us to see.
fn lapic_requested(vector: u8) -> bool {
    let lapic = crate::smp::LAPIC_BASE.load(Ordering::Relaxed);
    let reg = lapic + 0x200 + 0x10 * u64::from(vector / 32);
    crate::x86::mmio_rd32(reg) & (1 << (vector % 32)) != 0
}

/// MSI-X from virtio-blk: a completion while the entry is masked only
/// sets its pending bit; unmasking delivers the message to the local
/// APIC (seen in its IRR) and clears the bit.
fn virtio_msix() {
    const T: &str = "virtio-msix";
    const VECTOR: u8 = 0x41;
    crate::smp::lapic_init_nmi(); // software-enables the local APIC
    let mut blk = probe_blk(T);
    let msix = match blk.msix_setup(VECTOR) {
        Ok(m) => m,
        Err(e) => fail(T, format_args!("{}", e)),
    };
    if blk.request(crate::virtio::T_IN, 0, 512) != Ok(0) {
        fail(T, format_args!("read failed"));
    }
    let masked_pending = time::wait_until(timeout(), || msix.pending(0));
    let early = lapic_requested(VECTOR);
    say!(
        "{} masked: pending={} delivered={}",
        T,
        masked_pending,
        early
    );
    if !masked_pending || early {
        fail(
            T,
            format_args!("a masked vector must stay pending, undelivered"),
        );
    }
    msix.set_masked(0, false);
    if !time::wait_until(timeout(), || lapic_requested(VECTOR)) {
        fail(
            T,
            format_args!("unmasking did not deliver vector {:#x}", VECTOR),
        );
    }
    if msix.pending(0) {
        fail(T, format_args!("pending bit still set after delivery"));
    }
    say!("ok {} vector={:#x}", T, VECTOR);
}

/// Hands the virtio-blk device chains it must refuse (a buffer far outside
/// RAM; a descriptor loop): the device must set NEEDS_RESET (0x40) and
/// the VMM must live on; after a reset the device works again.
fn virtio_hostile() {
    const T: &str = "virtio-hostile";
    for outside in [true, false] {
        let mut blk = probe_blk(T);
        blk.submit_hostile(outside);
        let mut st = 0;
        if !time::wait_until(timeout(), || {
            st = blk.device_status();
            st & 0x40 != 0
        }) {
            fail(
                T,
                format_args!("no NEEDS_RESET after a hostile chain (status {:#x})", st),
            );
        }
        say!(
            "{} {} -> status {:#x}",
            T,
            if outside { "outside-ram" } else { "loop" },
            st
        );
    }
    // A fresh start works.
    let mut blk = probe_blk(T);
    match blk.request(crate::virtio::T_IN, 0, 512) {
        Ok(0) => say!("ok {}", T),
        Ok(s) => fail(T, format_args!("read after reset: status {}", s)),
        Err(e) => fail(T, format_args!("read after reset: {}", e)),
    }
}

/// Waits (up to `timeout` seconds) for the virtio-blk capacity to change
/// under the driver, as after QMP block_resize, and checks that the
/// configuration generation moved with it.
fn virtio_resize() {
    const T: &str = "virtio-resize";
    let blk = probe_blk(T);
    let (cap, gen) = (blk.read_capacity(), blk.config_generation());
    say!("{} capacity={} generation={} waiting", T, cap, gen);
    if !time::wait_until(timeout(), || blk.read_capacity() != cap) {
        fail(
            T,
            format_args!("capacity still {} after {}s", cap, timeout()),
        );
    }
    let (new_cap, new_gen) = (blk.read_capacity(), blk.config_generation());
    if new_gen == gen {
        fail(
            T,
            format_args!(
                "capacity {} but the configuration generation did not change",
                new_cap
            ),
        );
    }
    say!("ok {} capacity={} generation={}", T, new_cap, new_gen);
}

fn acpi_shutdown() -> ! {
    const T: &str = "acpi-shutdown";
    let si = start_info::get();
    let Some(rsdp) = acpi::find_rsdp(si.rsdp) else {
        fail(T, format_args!("no RSDP"))
    };
    let Some(facp) = acpi::find_table(&rsdp, b"FACP") else {
        fail(T, format_args!("no FADT"))
    };
    let f = acpi::fadt(&facp);
    let dsdt = acpi::table_at(f.dsdt);
    let s5 = dsdt.as_ref().and_then(acpi::s5_slp_typ);
    say!(
        "{} rsdp={:#x} ({}) fadt={:#x} rev={} len={} dsdt={:#x} pm1a_cnt={:#x} hw_reduced={} s5={}",
        T,
        rsdp.addr,
        rsdp.source,
        facp.addr,
        f.revision,
        f.len,
        f.dsdt,
        f.pm1a_cnt,
        f.hw_reduced as u8,
        match s5 {
            Some(v) => v as i32,
            None => -1,
        }
    );
    if f.pm1a_cnt != 0 && !f.hw_reduced {
        // PM1a_CNT: SLP_TYP bits 10-12, SLP_EN bit 13. Without \_S5, 0
        // (QEMU's PIIX4 and ICH9 treat SLP_TYP 0 as soft-off).
        let typ = s5.unwrap_or(0) as u16 & 7;
        let v = (inw(f.pm1a_cnt) & !0x3c00) | typ << 10;
        say!("{} pm1a_cnt={:#x} <- {:#x}", T, f.pm1a_cnt, v | 1 << 13);
        outw(f.pm1a_cnt, v);
        outw(f.pm1a_cnt, v | 1 << 13);
        if f.pm1b_cnt != 0 {
            outw(
                f.pm1b_cnt,
                (inw(f.pm1b_cnt) & !0x3c00) | typ << 10 | 1 << 13,
            );
        }
    } else if let Some(g) = f.sleep_ctl {
        // Hardware-reduced: SLEEP_CONTROL_REG, SLP_TYP bits 2-4, SLP_EN
        // bit 5. Without \_S5, 5 (QEMU's GED S5 value).
        let typ = s5.unwrap_or(5) as u64 & 7;
        let v = typ << 2 | 1 << 5;
        say!(
            "{} sleep_control space={} addr={:#x} <- {:#x}",
            T,
            g.space,
            g.addr,
            v
        );
        gas_write(&g, v);
    } else {
        fail(
            T,
            format_args!("FADT has neither PM1a_CNT_BLK nor SLEEP_CONTROL_REG"),
        );
    }
    let t = timeout();
    time::wait_until(t, || false);
    fail(
        T,
        format_args!("still running {}s after the sleep request", t),
    )
}

fn smp() {
    const T: &str = "smp";
    let si = start_info::get();
    let t = acpi_table(T, b"APIC", "MADT");
    let m = acpi::madt(&t);
    let bsp = apic_id();
    say!(
        "smp cpus={} lapic={:#x} bsp_apic={} skipped={}",
        m.count,
        m.lapic,
        bsp,
        m.skipped
    );
    if si.is_ram(
        crate::layout::TRAMPOLINE,
        crate::layout::TRAMPOLINE + 0x1000,
    ) == Some(false)
    {
        say!(
            "smp warning: trampoline page {:#x} is not RAM in the memory map",
            crate::layout::TRAMPOLINE
        );
    }
    say!("cpu 0 up apic={}", bsp);
    STATUS.cpus_up.store(1, Ordering::Release);
    let started = smp::start_aps(m.lapic, &m.apic_ids[..m.count], bsp);
    let want = started.cpus as u64;
    let secs = timeout();
    if time::wait_until(secs, || STATUS.cpus_up.load(Ordering::Acquire) >= want) {
        say!("ok smp {}", want);
    } else {
        struct Missing<'a>(&'a smp::Started);
        impl core::fmt::Display for Missing<'_> {
            fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
                for (i, id) in self.0.missing().enumerate() {
                    write!(f, "{}{}", if i > 0 { "," } else { "" }, id)?;
                }
                Ok(())
            }
        }
        let up = STATUS.cpus_up.load(Ordering::Acquire);
        fail(
            T,
            format_args!(
                "only {} of {} CPUs up after {}s (missing apic {})",
                up,
                want,
                secs,
                Missing(&started)
            ),
        );
    }
}

/// Reads an unmapped address from ring 3: the #PF handler must report
/// `fault #PF ... cr2=0x1000000000` and exit with EXIT_FAULT.
fn fault() -> ! {
    const UNMAPPED: u64 = 0x10_0000_0000; // 64 GiB: above both identity maps
    say!("fault reading {:#x}", UNMAPPED);
    let v = unsafe { core::ptr::read_volatile(UNMAPPED as *const u64) };
    fail(
        "fault",
        format_args!("read {:#x} returned {:#x}", UNMAPPED, v),
    )
}

fn idle() -> ! {
    say!("idle");
    loop {
        halt();
    }
}

/// An AP in ring 3.
pub fn ap_main(cpu: u64) -> ! {
    smp::STARTED[cpu as usize].store(true, Ordering::Release);
    smp::lapic_init_nmi();
    say!("cpu {} up apic={}", cpu, apic_id());
    STATUS.cpus_up.fetch_add(1, Ordering::AcqRel);
    loop {
        halt();
    }
}
