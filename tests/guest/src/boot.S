# Ring-0 part of the vmm test guest: PVH entry, long-mode switch, the AP
# trampoline, exception/NMI/int3 entry points, and the boot data (page
# tables, GDT, IDT, TSS) pre-built at link time.
#
# Everything here that runs in ring 0 is straight-line code: on kvm_pvm
# ring 0 is emulated (~2 M instructions/s), so no loops, no table
# building, no zeroing. Ring 3 does all the real work (src/*.rs).
#
# Assembled by LLVM's integrated assembler through global_asm! (AT&T
# syntax). Fixed addresses below must match link.ld (checked there with
# ASSERTs) and src/layout.rs (checked at start-up).

.set KCODE,         0x08            # 64-bit ring-0 code
.set KDATA,         0x10            # ring-0 data (flat, also used in 32-bit mode)
.set UCODE,         0x18            # 64-bit ring-3 code (selector | 3 = 0x1b)
.set UDATA,         0x20            # ring-3 data       (selector | 3 = 0x23)
.set KCODE32,       0x28            # 32-bit ring-0 code (AP trampoline)
.set TSS_SEL0,      0x30            # TSS of CPU i: TSS_SEL0 + 16 * i
.set MAX_CPUS,      64
.set GDT_LIMIT,     TSS_SEL0 + 16 * MAX_CPUS - 1

.set TSS_BASE,      0x109000        # link.ld: .tss section; TSS of CPU i at TSS_BASE + 128 * i
.set TSS_STRIDE,    128
.set IOMAP_BASE,    TSS_BASE + TSS_STRIDE * MAX_CPUS   # one shared all-zero I/O bitmap
.set VECTORS_BASE,  0x10E000        # link.ld: .vectors section
.set TRAMPOLINE,    0x8000          # AP trampoline copied here by the BSP (ring 3)

.set RING0_STACKS,  0x200000        # CPU i: [+0x4000*i, +0x4000*(i+1)); #DF IST = first 4 KiB
.set RING0_STACK_SZ, 0x4000
.set RING3_STACKS,  0x300000        # CPU i: [+0x8000*i, +0x8000*(i+1))
.set RING3_STACK_SZ, 0x8000

.set CR0_PROT,      0x00000033      # NE | ET | MP | PE
.set CR0_LONG,      0x80000033      # PG | NE | ET | MP | PE   (EM=0, TS=0: SSE usable)
.set CR4_BOOT,      0x00000620      # OSXMMEXCPT | OSFXSR | PAE (no OSXSAVE)
.set MSR_EFER,      0xC0000080
.set EFER_LME,      0x100
.set RFLAGS_RING3,  0x2             # IF=0, IOPL=0: no maskable interrupts, ever

.globl tss_array, vectors_start, gdt, idt, boot_cr3, pml4_1g
.globl pvh_entry, ap_trampoline_start, ap_trampoline_end
.globl ring0_stacks_sym, ring3_stacks_sym

.set ring0_stacks_sym, RING0_STACKS
.set ring3_stacks_sym, RING3_STACKS

# ---------------------------------------------------------------------------
# PVH ELF note: XEN_ELFNOTE_PHYS32_ENTRY (18), name "Xen", 32-bit entry.
# The descriptor is 8 bytes like Linux's (QEMU reads it as a size_t for
# ELF64; loaders reading 4 bytes get the same value).
.pushsection .note.pvh, "a", @note
.balign 4
    .long 4                 # namesz
    .long 8                 # descsz
    .long 18                # type
    .asciz "Xen"
    .balign 4
    .quad pvh_entry
    .balign 4
.popsection

# ---------------------------------------------------------------------------
# BSP entry: 32-bit protected mode, paging off, %ebx = hvm_start_info.
.pushsection .text.boot, "ax"
.code32
pvh_entry:
    mov     %ebx, %esi                      # keep start_info (cpuid clobbers ebx)
    mov     $0x80000001, %eax
    cpuid
    mov     $pml4_2m, %eax                  # no 1 GiB pages: 2 MiB pages, first 4 GiB
    bt      $26, %edx                       # CPUID.80000001H:EDX.Page1GB
    jnc     1f
    mov     $pml4_1g, %eax                  # 1 GiB pages, first 64 GiB
1:  mov     %eax, %cr3
    mov     %eax, boot_cr3                  # for the APs
    mov     $CR4_BOOT, %eax
    mov     %eax, %cr4
    mov     $MSR_EFER, %ecx
    rdmsr
    or      $EFER_LME, %eax
    wrmsr
    lgdt    gdt_ptr
    mov     $CR0_LONG, %eax
    mov     %eax, %cr0
    ljmp    $KCODE, $bsp_long

.code64
bsp_long:
    mov     $KDATA, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    xor     %eax, %eax
    mov     %eax, %fs
    mov     %eax, %gs
    mov     $TSS_SEL0, %eax
    ltr     %ax
    lidt    idt_ptr
    mov     $(RING0_STACKS + RING0_STACK_SZ), %rsp
    mov     %esi, %edi                      # rust_start(start_info)
    pushq   $(UDATA | 3)
    pushq   $(RING3_STACKS + RING3_STACK_SZ)
    pushq   $RFLAGS_RING3
    pushq   $(UCODE | 3)
    pushq   $bsp_ring3
    iretq

# AP, after the trampoline: 32-bit protected mode, flat segments.
.code32
ap_entry32:
    mov     $KDATA, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    mov     boot_cr3, %eax
    mov     %eax, %cr3
    mov     $CR4_BOOT, %eax
    mov     %eax, %cr4
    mov     $MSR_EFER, %ecx
    rdmsr
    or      $EFER_LME, %eax
    wrmsr
    mov     $CR0_LONG, %eax
    mov     %eax, %cr0
    ljmp    $KCODE, $ap_long

.code64
ap_long:                                    # find this CPU's AP_BOOT slot
    xor     %eax, %eax
    mov     %eax, %fs
    mov     %eax, %gs
    mov     LAPIC_BASE, %rax
    mov     0x20(%rax), %ebx                # local APIC ID register
    shr     $24, %ebx
    shl     $5, %ebx                        # 32-byte entries in AP_BOOT
    mov     AP_BOOT+0(%rbx), %rsp           # ring-0 stack top
    test    %rsp, %rsp
    jz      3f                              # no slot for this APIC ID
    mov     AP_BOOT+8(%rbx), %eax           # TSS selector
    ltr     %ax
    lidt    idt_ptr
    mov     AP_BOOT+24(%rbx), %rdi          # rust_ap_start(cpu index)
    pushq   $(UDATA | 3)
    pushq   AP_BOOT+16(%rbx)                # ring-3 stack top
    pushq   $RFLAGS_RING3
    pushq   $(UCODE | 3)
    pushq   $ap_ring3
    iretq
3:  hlt                                     # the BSP reports it missing
    jmp     3b

# ---- ring 3 from here ----
bsp_ring3:
    mov     %rdi, %rbx
    mov     $__bss_start, %rdi              # zero .bss (ring 3: native speed)
    mov     $__bss_end, %rcx
    sub     %rdi, %rcx
    xor     %eax, %eax
    rep stosb
    mov     %rbx, %rdi
    call    rust_start
    ud2

ap_ring3:
    call    rust_ap_start
    ud2
.popsection

# ---------------------------------------------------------------------------
# AP trampoline: real mode, copied to TRAMPOLINE (0x8000) by the BSP in
# ring 3 before INIT-SIPI-SIPI (SIPI vector 0x08).
.pushsection .rodata.trampoline, "a"
.code16
.balign 16
ap_trampoline_start:
    cli
    xor     %ax, %ax
    mov     %ax, %ds
    lgdtl   TRAMPOLINE + (tramp_gdtr - ap_trampoline_start)
    mov     $CR0_PROT, %eax
    mov     %eax, %cr0
    ljmpl   $KCODE32, $ap_entry32
.balign 8
tramp_gdtr:
    .word   GDT_LIMIT
    .long   gdt
ap_trampoline_end:
.code64
.popsection

# ---------------------------------------------------------------------------
# Interrupt entry points, at VECTORS_BASE (link.ld) so that the IDT below
# can be computed by the assembler: gate offset = VECTORS_BASE + (label -
# vectors_start), which needs no relocation arithmetic.
.pushsection .text.vectors, "ax"
.code64
vectors_start:

# Exceptions 0-31 except 2 (NMI) and 3 (int3 gate): push error code (0 if
# the CPU pushes none) and vector, then report and exit (never return).
.macro FAULT v, err
    .balign 16
fault_\v:
    .if \err == 0
    pushq   $0
    .endif
    pushq   $\v
    jmp     fault_common
.endm
FAULT 0,0
FAULT 1,0
FAULT 4,0
FAULT 5,0
FAULT 6,0
FAULT 7,0
FAULT 8,1
FAULT 9,0
FAULT 10,1
FAULT 11,1
FAULT 12,1
FAULT 13,1
FAULT 14,1
FAULT 15,0
FAULT 16,0
FAULT 17,1
FAULT 18,0
FAULT 19,0
FAULT 20,0
FAULT 21,1
FAULT 22,0
FAULT 23,0
FAULT 24,0
FAULT 25,0
FAULT 26,0
FAULT 27,0
FAULT 28,0
FAULT 29,1
FAULT 30,1
FAULT 31,0

.balign 16
fault_common:                               # [rsp]: vector, error, rip, cs, rflags, rsp, ss
    mov     %rsp, %rdi
    mov     %cr2, %rsi
    and     $-16, %rsp
    call    rust_fault                      # ring 0, never returns
2:  hlt
    jmp     2b

# NMI: count it (all CPUs share the counter in the status page) and return.
.balign 16
nmi_entry:
    lock incq STATUS+16
    iretq

# int3 from ring 3 (DPL-3 gate): the ring-0 services, selected by %rax.
#   rax=0: halt: sleep until an NMI (IF stays 0, nothing else wakes it).
#   rax=1: cpuid, leaf %edi, subleaf %esi -> eax, ebx, ecx, edx. (On
#          kvm_pvm a ring-3 cpuid is not virtualized: it shows the host's.)
#   rax=2: rdmsr, index %edi -> edx:eax.
#   else:  rax = -1.
.balign 16
int3_entry:
    test    %rax, %rax
    jnz     1f
    hlt
    iretq
1:  cmp     $1, %rax
    jne     2f
    mov     %edi, %eax
    mov     %esi, %ecx
    cpuid
    iretq
2:  cmp     $2, %rax
    jne     3f
    mov     %edi, %ecx
    rdmsr
    iretq
3:  mov     $-1, %rax
    iretq
.popsection

# ---------------------------------------------------------------------------
# Page tables, pre-filled: identity map, P | RW | US, large pages.
.pushsection .data.pagetables, "aw"
.balign 4096
pml4_1g:
    .quad   pdpt_1g + 0x7
    .fill   511, 8, 0
pdpt_1g:                                    # 64 x 1 GiB = first 64 GiB
    .set    i, 0
    .rept   64
    .quad   (i << 30) | 0x87
    .set    i, i + 1
    .endr
    .fill   512 - 64, 8, 0
pml4_2m:
    .quad   pdpt_2m + 0x7
    .fill   511, 8, 0
pdpt_2m:
    .quad   pd_2m + 0x0007
    .quad   pd_2m + 0x1007
    .quad   pd_2m + 0x2007
    .quad   pd_2m + 0x3007
    .fill   508, 8, 0
pd_2m:                                      # 2048 x 2 MiB = first 4 GiB
    .set    i, 0
    .rept   2048
    .quad   (i << 21) | 0x87
    .set    i, i + 1
    .endr
.popsection

# ---------------------------------------------------------------------------
# TSSs at TSS_BASE: 128 bytes per CPU, then one shared I/O bitmap (8 KiB of
# zeros: every port allowed) and its 0xFF terminator. CPU i's iomap base is
# 128 * (MAX_CPUS - i); its limit covers the bitmap and terminator. CPU 0's
# TSS is filled here; the BSP fills the others (ring 3) before starting APs.
.pushsection .data.tss, "aw"
tss_array:
    .long   0                                       # reserved
    .quad   RING0_STACKS + RING0_STACK_SZ           # rsp0
    .quad   0, 0                                    # rsp1, rsp2
    .quad   0                                       # reserved
    .quad   RING0_STACKS + 0x1000                   # ist1 (#DF)
    .quad   0, 0, 0, 0, 0, 0                        # ist2-7
    .quad   0                                       # reserved
    .word   0                                       # reserved
    .word   TSS_STRIDE * MAX_CPUS                   # iomap base
    .fill   TSS_STRIDE - 104, 1, 0
    .fill   TSS_STRIDE * (MAX_CPUS - 1), 1, 0       # CPUs 1..63
iomap:
    .fill   8192, 1, 0
    .byte   0xff
.popsection

# ---------------------------------------------------------------------------
.pushsection .data.boot, "aw"
.balign 16
gdt:
    .quad   0
    .quad   0x00AF9A000000FFFF      # 0x08 ring-0 code, 64-bit
    .quad   0x00CF92000000FFFF      # 0x10 ring-0 data
    .quad   0x00AFFA000000FFFF      # 0x18 ring-3 code, 64-bit
    .quad   0x00CFF2000000FFFF      # 0x20 ring-3 data
    .quad   0x00CF9A000000FFFF      # 0x28 ring-0 code, 32-bit (AP trampoline)
    # 0x30: TSS of CPU 0 (available 64-bit TSS, type 9)
    .set    TSS0_LIMIT, TSS_STRIDE * MAX_CPUS + 8192
    .word   TSS0_LIMIT & 0xFFFF
    .word   TSS_BASE & 0xFFFF
    .byte   (TSS_BASE >> 16) & 0xFF
    .byte   0x89
    .byte   (TSS0_LIMIT >> 16) & 0xF
    .byte   (TSS_BASE >> 24) & 0xFF
    .long   0
    .long   0
    .fill   16 * (MAX_CPUS - 1), 1, 0   # TSS descriptors of CPUs 1..63 (BSP fills)

.balign 16
    .word   0
gdt_ptr:                            # read as 6 bytes by lgdt in 32-bit mode
    .word   GDT_LIMIT
    .quad   gdt

.balign 16
    .word   0
idt_ptr:
    .word   256 * 16 - 1
    .quad   idt

boot_cr3:
    .long   0

# Gate: offset split in three; the handler lies at VECTORS_BASE + its
# offset in .text.vectors (< 0x2000, asserted by the .word range).
.macro GATE handler, type=0x8E, ist=0
    .word   (VECTORS_BASE & 0xFFFF) + (\handler - vectors_start)
    .word   KCODE
    .byte   \ist
    .byte   \type
    .word   VECTORS_BASE >> 16
    .long   0
    .long   0
.endm

.balign 16
idt:
    GATE fault_0
    GATE fault_1
    GATE nmi_entry
    GATE int3_entry, 0xEE           # DPL 3: reachable by int3 from ring 3
    GATE fault_4
    GATE fault_5
    GATE fault_6
    GATE fault_7
    GATE fault_8, 0x8E, 1           # #DF on IST1
    GATE fault_9
    GATE fault_10
    GATE fault_11
    GATE fault_12
    GATE fault_13
    GATE fault_14
    GATE fault_15
    GATE fault_16
    GATE fault_17
    GATE fault_18
    GATE fault_19
    GATE fault_20
    GATE fault_21
    GATE fault_22
    GATE fault_23
    GATE fault_24
    GATE fault_25
    GATE fault_26
    GATE fault_27
    GATE fault_28
    GATE fault_29
    GATE fault_30
    GATE fault_31
    .fill   16 * (256 - 32), 1, 0   # vectors 32-255 not present (IF is always 0)
.popsection
