//! `info registers` in the layout QEMU's x86 CPU dump prints (64-bit
//! names when the CPU runs 64-bit code, 32-bit ones otherwise), and
//! `$register` values in monitor expressions.

use super::parse::Registers;
use crate::commands::Vmm;
use crate::machine::CpuRegisters;
use kvm_bindings::kvm_segment;
use std::fmt::Write as _;

const EFER_LMA: u64 = 1 << 10;

fn long_mode(r: &CpuRegisters) -> bool {
    r.sregs.efer & EFER_LMA != 0
}

/// Running 64-bit code: long mode and a 64-bit code segment.
fn code64(r: &CpuRegisters) -> bool {
    long_mode(r) && r.sregs.cs.l != 0
}

/// The descriptor flags word of a segment, as the CPU's cache holds it.
fn seg_flags(s: &kvm_segment) -> u32 {
    (u32::from(s.type_) << 8)
        | (u32::from(s.s) << 12)
        | (u32::from(s.dpl) << 13)
        | (u32::from(s.present) << 15)
        | (u32::from(s.avl) << 20)
        | (u32::from(s.l) << 21)
        | (u32::from(s.db) << 22)
        | (u32::from(s.g) << 23)
}

fn segment(out: &mut String, r: &CpuRegisters, name: &str, s: &kvm_segment) {
    let flags = seg_flags(s);
    if code64(r) {
        let _ = write!(
            out,
            "{name:<3}={:04x} {:016x} {:08x} {:08x}",
            s.selector,
            s.base,
            s.limit,
            flags & 0x00ff_ff00
        );
    } else {
        let _ = write!(
            out,
            "{name:<3}={:04x} {:08x} {:08x} {:08x}",
            s.selector,
            s.base as u32,
            s.limit,
            flags & 0x00ff_ff00
        );
    }
    let protected = r.sregs.cr0 & 1 != 0;
    if protected && s.present != 0 {
        let _ = write!(out, " DPL={} ", s.dpl);
        if s.s != 0 {
            let t = s.type_;
            if t & 8 != 0 {
                // Code: conforming, readable.
                out.push_str(if s.l != 0 {
                    "CS64"
                } else if s.db != 0 {
                    "CS32"
                } else {
                    "CS16"
                });
                let _ = write!(
                    out,
                    " [{}{}",
                    if t & 4 != 0 { 'C' } else { '-' },
                    if t & 2 != 0 { 'R' } else { '-' }
                );
            } else {
                // Data: expand-down, writable.
                out.push_str(if s.db != 0 || long_mode(r) {
                    "DS  "
                } else {
                    "DS16"
                });
                let _ = write!(
                    out,
                    " [{}{}",
                    if t & 4 != 0 { 'E' } else { '-' },
                    if t & 2 != 0 { 'W' } else { '-' }
                );
            }
            let _ = write!(out, "{}]", if t & 1 != 0 { 'A' } else { '-' });
        } else {
            const LEGACY: [&str; 16] = [
                "Reserved",
                "TSS16-avl",
                "LDT",
                "TSS16-busy",
                "CallGate16",
                "TaskGate",
                "IntGate16",
                "TrapGate16",
                "Reserved",
                "TSS32-avl",
                "Reserved",
                "TSS32-busy",
                "CallGate32",
                "Reserved",
                "IntGate32",
                "TrapGate32",
            ];
            const LONG: [&str; 16] = [
                "<hiword>",
                "Reserved",
                "LDT",
                "Reserved",
                "Reserved",
                "Reserved",
                "Reserved",
                "Reserved",
                "Reserved",
                "TSS64-avl",
                "Reserved",
                "TSS64-busy",
                "CallGate64",
                "Reserved",
                "IntGate64",
                "TrapGate64",
            ];
            let names = if long_mode(r) { &LONG } else { &LEGACY };
            out.push_str(names[usize::from(s.type_ & 0xf)]);
        }
    }
    out.push('\n');
}

/// The text of `info registers` for one vCPU.
pub fn dump(out: &mut String, r: &CpuRegisters) {
    let g = &r.regs;
    let fl = g.rflags;
    let bit = |mask: u64, c: char| if fl & mask != 0 { c } else { '-' };
    let flag_text: String = [
        bit(0x400, 'D'),
        bit(0x800, 'O'),
        bit(0x80, 'S'),
        bit(0x40, 'Z'),
        bit(0x10, 'A'),
        bit(0x4, 'P'),
        bit(0x1, 'C'),
    ]
    .iter()
    .collect();
    let cpl = r.sregs.ss.dpl;
    let tail = format!(
        "[{flag_text}] CPL={cpl} II={} A20=1 SMM=0 HLT={}",
        u8::from(r.interrupt_shadow),
        u8::from(r.halted)
    );
    if code64(r) {
        let _ = writeln!(
            out,
            "RAX={:016x} RBX={:016x} RCX={:016x} RDX={:016x}",
            g.rax, g.rbx, g.rcx, g.rdx
        );
        let _ = writeln!(
            out,
            "RSI={:016x} RDI={:016x} RBP={:016x} RSP={:016x}",
            g.rsi, g.rdi, g.rbp, g.rsp
        );
        let _ = writeln!(
            out,
            "R8 ={:016x} R9 ={:016x} R10={:016x} R11={:016x}",
            g.r8, g.r9, g.r10, g.r11
        );
        let _ = writeln!(
            out,
            "R12={:016x} R13={:016x} R14={:016x} R15={:016x}",
            g.r12, g.r13, g.r14, g.r15
        );
        let _ = writeln!(out, "RIP={:016x} RFL={:08x} {tail}", g.rip, fl as u32);
    } else {
        let _ = writeln!(
            out,
            "EAX={:08x} EBX={:08x} ECX={:08x} EDX={:08x}",
            g.rax as u32, g.rbx as u32, g.rcx as u32, g.rdx as u32
        );
        let _ = writeln!(
            out,
            "ESI={:08x} EDI={:08x} EBP={:08x} ESP={:08x}",
            g.rsi as u32, g.rdi as u32, g.rbp as u32, g.rsp as u32
        );
        let _ = writeln!(out, "EIP={:08x} EFL={:08x} {tail}", g.rip as u32, fl as u32);
    }
    let s = &r.sregs;
    for (name, seg) in [
        ("ES", &s.es),
        ("CS", &s.cs),
        ("SS", &s.ss),
        ("DS", &s.ds),
        ("FS", &s.fs),
        ("GS", &s.gs),
        ("LDT", &s.ldt),
        ("TR", &s.tr),
    ] {
        segment(out, r, name, seg);
    }
    let d = &r.debug;
    if long_mode(r) {
        let _ = writeln!(out, "GDT=     {:016x} {:08x}", s.gdt.base, s.gdt.limit);
        let _ = writeln!(out, "IDT=     {:016x} {:08x}", s.idt.base, s.idt.limit);
        let _ = writeln!(
            out,
            "CR0={:08x} CR2={:016x} CR3={:016x} CR4={:08x}",
            s.cr0 as u32, s.cr2, s.cr3, s.cr4 as u32
        );
    } else {
        let _ = writeln!(
            out,
            "GDT=     {:08x} {:08x}",
            s.gdt.base as u32, s.gdt.limit
        );
        let _ = writeln!(
            out,
            "IDT=     {:08x} {:08x}",
            s.idt.base as u32, s.idt.limit
        );
        let _ = writeln!(
            out,
            "CR0={:08x} CR2={:08x} CR3={:08x} CR4={:08x}",
            s.cr0 as u32, s.cr2 as u32, s.cr3 as u32, s.cr4 as u32
        );
    }
    for (i, v) in d.db.iter().enumerate() {
        let _ = write!(out, "DR{i}={v:016x} ");
    }
    let _ = writeln!(out, "\nDR6={:016x} DR7={:016x}", d.dr6, d.dr7);
    let _ = writeln!(out, "EFER={:016x}", s.efer);
    let f = &r.fpu;
    let top = (f.fsw >> 11) & 7;
    let _ = writeln!(
        out,
        "FCW={:04x} FSW={:04x} [ST={top}] FTW={:02x} MXCSR={:08x}",
        f.fcw, f.fsw, f.ftwx, f.mxcsr
    );
    for (i, reg) in f.fpr.iter().enumerate() {
        let mantissa = u64::from_le_bytes(reg[..8].try_into().unwrap_or_default());
        let exp = u16::from_le_bytes([reg[8], reg[9]]);
        let _ = write!(out, "FPR{i}={mantissa:016x} {exp:04x}");
        out.push(if i % 2 == 1 { '\n' } else { ' ' });
    }
    let count = if code64(r) { 16 } else { 8 };
    for (i, x) in f.xmm.iter().take(count).enumerate() {
        let word =
            |n: usize| u32::from_le_bytes(x[n * 4..n * 4 + 4].try_into().unwrap_or_default());
        let _ = write!(
            out,
            "XMM{i:02}={:08x}{:08x}{:08x}{:08x}",
            word(3),
            word(2),
            word(1),
            word(0)
        );
        out.push(if i % 2 == 1 { '\n' } else { ' ' });
    }
}

/// `$name` in expressions, read from the monitor's current CPU.
pub struct Regs<'a> {
    pub vmm: &'a mut Vmm,
    pub cpu: usize,
}

impl Registers for Regs<'_> {
    fn register(&mut self, name: &str) -> Result<u64, String> {
        let Some(m) = self.vmm.vm.machine.as_mut() else {
            return Err("No CPU available".into());
        };
        let r = m
            .cpu_registers(self.cpu)
            .ok_or_else(|| "No CPU available".to_string())?;
        let g = &r.regs;
        let s = &r.sregs;
        Ok(match name {
            "rax" | "eax" => g.rax,
            "rbx" | "ebx" => g.rbx,
            "rcx" | "ecx" => g.rcx,
            "rdx" | "edx" => g.rdx,
            "rsi" | "esi" => g.rsi,
            "rdi" | "edi" => g.rdi,
            "rbp" | "ebp" | "fp" => g.rbp,
            "rsp" | "esp" | "sp" => g.rsp,
            "r8" => g.r8,
            "r9" => g.r9,
            "r10" => g.r10,
            "r11" => g.r11,
            "r12" => g.r12,
            "r13" => g.r13,
            "r14" => g.r14,
            "r15" => g.r15,
            "rip" | "eip" => g.rip,
            "pc" => s.cs.base.wrapping_add(g.rip),
            "eflags" | "rflags" => g.rflags,
            "cs" => u64::from(s.cs.selector),
            "ds" => u64::from(s.ds.selector),
            "es" => u64::from(s.es.selector),
            "fs" => u64::from(s.fs.selector),
            "gs" => u64::from(s.gs.selector),
            "ss" => u64::from(s.ss.selector),
            "cr0" => s.cr0,
            "cr2" => s.cr2,
            "cr3" => s.cr3,
            "cr4" => s.cr4,
            _ => return Err("unknown register".into()),
        })
    }
}
