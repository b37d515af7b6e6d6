//! `info` subcommands about the platform under the guest, printed as
//! QEMU 2.11 prints them for a `pc` machine with KVM's in-kernel
//! irqchip: the 8259s (`info pic`, `info irq`), NUMA nodes, ROM blobs
//! and user-mode network stacks.

use super::Ctx;
use crate::hmp::parse::Args;
use kvm_bindings::kvm_pic_state;
use qmp::Error;
use std::fmt::Write as _;

/// One 8259 as QEMU's pic_print_info prints it.
fn pic_line(out: &mut String, index: u8, s: &kvm_pic_state) {
    let _ = writeln!(
        out,
        "pic{index}: irr={:02x} imr={:02x} isr={:02x} hprio={} irq_base={:02x} \
         rr_sel={} elcr={:02x} fnm={}",
        s.irr,
        s.imr,
        s.isr,
        s.priority_add,
        s.irq_base,
        s.read_reg_select,
        s.elcr,
        s.special_fully_nested_mode
    );
}

/// `info pic`: every interrupt controller that prints its state. In
/// QEMU 2.11 on x86 those are the two kvm-i8259s only (the IOAPIC joined
/// in 2.12; 2.11 shows it with `info ioapic`), found by a walk of the
/// object tree whose order puts the slave first.
pub(super) fn info_pic(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    let Some(m) = ctx.vmm.vm.machine.as_ref() else {
        return Ok(());
    };
    if let Some([master, slave]) = m.pic_states() {
        pic_line(&mut ctx.out, 1, &slave);
        pic_line(&mut ctx.out, 0, &master);
    }
    Ok(())
}

/// `info irq`: the kvm-i8259s' statistics. QEMU counts the rising edges
/// of the ISA lines its own devices drive, all in the master's table
/// (the slave has none, so it prints nothing); what KVM raises itself
/// (the PIT) is not counted.
pub(super) fn info_irq(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    let Some(m) = ctx.vmm.vm.machine.as_ref() else {
        return Ok(());
    };
    ctx.out.push_str("IRQ statistics for kvm-i8259:\n");
    for (irq, count) in m.isa_irq_counts().iter().enumerate() {
        if *count > 0 {
            let _ = writeln!(ctx.out, "{irq:2}: {count}");
        }
    }
    Ok(())
}

/// `info numa`: each node's CPUs (those that exist) and memory, as
/// QEMU prints them; vmm has no DIMMs, so nothing is plugged.
pub(super) fn info_numa(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    let Some(numa) = &ctx.vmm.numa else {
        ctx.out.push_str("0 nodes\n");
        return Ok(());
    };
    let present = ctx.vmm.vm.machine.as_ref().map_or(0, |m| m.cpu_count());
    let _ = writeln!(ctx.out, "{} nodes", numa.nodes.len());
    for (i, node) in numa.nodes.iter().enumerate() {
        let _ = write!(ctx.out, "node {i} cpus:");
        for (cpu, n) in numa.cpu_node.iter().enumerate().take(present) {
            if usize::from(*n) == i {
                let _ = write!(ctx.out, " {cpu}");
            }
        }
        let _ = writeln!(ctx.out);
        let _ = writeln!(ctx.out, "node {i} size: {} MB", node.mem >> 20);
        let _ = writeln!(ctx.out, "node {i} plugged: 0 MB");
    }
    Ok(())
}

/// `info roms`: the ROM blobs, as QEMU's loader lists a fixed-address
/// one. vmm has one only with `-bios`; a kernel and its boot data are
/// written straight into RAM and are no ROMs.
pub(super) fn info_roms(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    let Some(m) = ctx.vmm.vm.machine.as_ref() else {
        return Ok(());
    };
    if let Some((name, addr, size)) = m.firmware_rom() {
        let _ = writeln!(
            ctx.out,
            "addr={addr:016x} size=0x{size:06x} mem=rom name=\"{name}\""
        );
    }
    Ok(())
}

/// `info usernet`: one paragraph per user-mode (slirp) network stack;
/// vmm has no `-netdev user`, so there are none.
pub(super) fn info_usernet(_: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    Ok(())
}
