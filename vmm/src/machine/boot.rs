//! Loading a kernel: an ELF with a PVH entry note (the test guest, Linux
//! vmlinux with CONFIG_PVH), and the PVH start info it finds in %ebx; or
//! a plain x86-64 ELF (a vmlinux without the note), entered in long mode
//! at its entry point with the zero page in %rsi, as Linux's 64-bit boot
//! protocol says.

use super::memory::{RamLayout, FOUR_GIB};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Where the boot data lives in low memory.
pub const START_INFO_ADDR: u64 = 0x6000;
pub const MEMMAP_ADDR: u64 = 0x6100;
pub const CMDLINE_ADDR: u64 = 0x20000;
pub const CMDLINE_MAX: usize = 0x10000;
/// The ACPI tables and RSDP sit in the BIOS area, where a scan finds them.
pub const ACPI_ADDR: u64 = 0xe0000;
/// Low RAM ends at the EBDA, as on a PC.
pub const EBDA_START: u64 = 0x9fc00;
pub const HIGH_MEMORY: u64 = 0x100000;

const PVH_MAGIC: u32 = 0x336e_c578;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;

#[derive(Debug)]
pub enum BootError {
    NotElf,
    Format(&'static str),
    NoEntry,
    OutOfMemory { addr: u64, len: u64 },
    CmdlineTooLong,
}

impl std::fmt::Display for BootError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootError::NotElf => write!(
                f,
                "the kernel is not an ELF image (bzImage support arrives later)"
            ),
            BootError::Format(w) => write!(f, "malformed ELF kernel: {w}"),
            BootError::NoEntry => write!(
                f,
                "the ELF kernel has neither a PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) nor an entry point"
            ),
            BootError::OutOfMemory { addr, len } => {
                write!(
                    f,
                    "the kernel does not fit in guest RAM ({len:#x} bytes at {addr:#x})"
                )
            }
            BootError::CmdlineTooLong => write!(
                f,
                "the kernel command line is longer than {CMDLINE_MAX} bytes"
            ),
        }
    }
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, BootError> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(BootError::Format("truncated"))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BootError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BootError::Format("truncated"))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, BootError> {
    let lo = u32_at(b, off)?;
    let hi = u32_at(b, off + 4)?;
    Ok(u64::from(lo) | (u64::from(hi) << 32))
}

fn range(b: &[u8], off: u64, len: u64) -> Result<&[u8], BootError> {
    let start = usize::try_from(off).map_err(|_| BootError::Format("offset"))?;
    let len = usize::try_from(len).map_err(|_| BootError::Format("size"))?;
    let end = start.checked_add(len).ok_or(BootError::Format("size"))?;
    b.get(start..end)
        .ok_or(BootError::Format("segment beyond the file"))
}

/// Whether guest-physical `[addr, addr+len)` lies in RAM.
fn in_ram(layout: &RamLayout, addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else {
        return false;
    };
    end <= layout.below_4g || (addr >= FOUR_GIB && end <= FOUR_GIB + layout.above_4g)
}

/// A parsed ELF kernel: its loadable segments and entry.
pub struct ElfKernel {
    pub image: Vec<u8>,
    pub entry: u64,
    /// No PVH note: `entry` is the ELF entry point, a 64-bit one.
    pub long_mode: bool,
    /// (file offset, file size, guest-physical address, memory size).
    segments: Vec<(u64, u64, u64, u64)>,
}

impl ElfKernel {
    pub fn parse(image: Vec<u8>) -> Result<ElfKernel, BootError> {
        if image.get(0..4) != Some(b"\x7fELF") {
            return Err(BootError::NotElf);
        }
        if image.get(4) != Some(&2) || image.get(5) != Some(&1) {
            return Err(BootError::Format("not a little-endian 64-bit ELF"));
        }
        let phoff = u64_at(&image, 0x20)?;
        let phentsize = u64::from(u16_at(&image, 0x36)?);
        let phnum = u64::from(u16_at(&image, 0x38)?);
        if phentsize < 56 || phnum > 256 {
            return Err(BootError::Format("program headers"));
        }
        let mut segments = Vec::new();
        let mut entry = None;
        for i in 0..phnum {
            let ph = range(&image, phoff + i * phentsize, 56)?;
            let p_type = u32_at(ph, 0)?;
            let offset = u64_at(ph, 8)?;
            let paddr = u64_at(ph, 24)?;
            let filesz = u64_at(ph, 32)?;
            let memsz = u64_at(ph, 40)?;
            match p_type {
                1 => {
                    if filesz > memsz {
                        return Err(BootError::Format("segment file size beyond memory size"));
                    }
                    range(&image, offset, filesz)?;
                    segments.push((offset, filesz, paddr, memsz));
                }
                4 => entry = entry.or(find_pvh_note(range(&image, offset, filesz)?)?),
                _ => {}
            }
        }
        let (entry, long_mode) = match entry {
            Some(e) => (e, false),
            None => {
                // e_machine 62: x86-64; e_entry is physical in a vmlinux
                // (its linker script makes it phys_startup_64).
                if u16_at(&image, 0x12)? != 62 {
                    return Err(BootError::Format("not an x86-64 ELF"));
                }
                match u64_at(&image, 0x18)? {
                    0 => return Err(BootError::NoEntry),
                    e => (e, true),
                }
            }
        };
        Ok(ElfKernel {
            image,
            entry,
            long_mode,
            segments,
        })
    }

    /// Copies the segments into guest memory (zeroing their bss).
    pub fn load(&self, mem: &GuestMemoryMmap, layout: &RamLayout) -> Result<(), BootError> {
        for &(offset, filesz, paddr, memsz) in &self.segments {
            if !in_ram(layout, paddr, memsz) {
                return Err(BootError::OutOfMemory {
                    addr: paddr,
                    len: memsz,
                });
            }
            let data = range(&self.image, offset, filesz)?;
            mem.write_slice(data, GuestAddress(paddr))
                .map_err(|_| BootError::OutOfMemory {
                    addr: paddr,
                    len: memsz,
                })?;
            let zeros = vec![0u8; (memsz - filesz) as usize];
            mem.write_slice(&zeros, GuestAddress(paddr + filesz))
                .map_err(|_| BootError::OutOfMemory {
                    addr: paddr,
                    len: memsz,
                })?;
        }
        Ok(())
    }
}

fn find_pvh_note(notes: &[u8]) -> Result<Option<u64>, BootError> {
    let mut off = 0usize;
    while off + 12 <= notes.len() {
        let namesz = u32_at(notes, off)? as usize;
        let descsz = u32_at(notes, off + 4)? as usize;
        let ntype = u32_at(notes, off + 8)?;
        let name_start = off + 12;
        let desc_start = name_start + namesz.div_ceil(4) * 4;
        let next = desc_start + descsz.div_ceil(4) * 4;
        if next > notes.len() {
            return Err(BootError::Format("note beyond its segment"));
        }
        let name = &notes[name_start..name_start + namesz];
        if ntype == XEN_ELFNOTE_PHYS32_ENTRY && name.starts_with(b"Xen") {
            let entry = match descsz {
                4 => u64::from(u32_at(notes, desc_start)?),
                8 => u64_at(notes, desc_start)?,
                _ => return Err(BootError::Format("PVH entry note size")),
            };
            return Ok(Some(entry));
        }
        off = next;
    }
    Ok(None)
}

/// The e820 map the guest is told about.
pub fn e820_map(layout: &RamLayout) -> Vec<(u64, u64, u32)> {
    let mut map = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, 0xa0000 - EBDA_START, E820_RESERVED),
        (0xe0000, 0x20000, E820_RESERVED),
        (HIGH_MEMORY, layout.below_4g - HIGH_MEMORY, E820_RAM),
    ];
    if layout.above_4g > 0 {
        map.push((FOUR_GIB, layout.above_4g, E820_RAM));
    }
    map
}

/// Writes the command line and the PVH start info (version 1, with the
/// memory map) and returns the start info's address for %ebx.
pub fn write_start_info(
    mem: &GuestMemoryMmap,
    layout: &RamLayout,
    cmdline: &str,
    rsdp: u64,
) -> Result<u64, BootError> {
    if cmdline.len() >= CMDLINE_MAX {
        return Err(BootError::CmdlineTooLong);
    }
    let oom = |_| BootError::OutOfMemory {
        addr: START_INFO_ADDR,
        len: 0x1000,
    };
    let mut c = cmdline.as_bytes().to_vec();
    c.push(0);
    mem.write_slice(&c, GuestAddress(CMDLINE_ADDR))
        .map_err(oom)?;
    let map = e820_map(layout);
    let mut entries = Vec::with_capacity(map.len() * 24);
    for (addr, size, kind) in &map {
        entries.extend_from_slice(&addr.to_le_bytes());
        entries.extend_from_slice(&size.to_le_bytes());
        entries.extend_from_slice(&kind.to_le_bytes());
        entries.extend_from_slice(&0u32.to_le_bytes());
    }
    mem.write_slice(&entries, GuestAddress(MEMMAP_ADDR))
        .map_err(oom)?;
    let mut si = Vec::with_capacity(56);
    si.extend_from_slice(&PVH_MAGIC.to_le_bytes());
    si.extend_from_slice(&1u32.to_le_bytes()); // version
    si.extend_from_slice(&0u32.to_le_bytes()); // flags
    si.extend_from_slice(&0u32.to_le_bytes()); // nr_modules
    si.extend_from_slice(&0u64.to_le_bytes()); // modlist_paddr
    si.extend_from_slice(&CMDLINE_ADDR.to_le_bytes());
    si.extend_from_slice(&rsdp.to_le_bytes());
    si.extend_from_slice(&MEMMAP_ADDR.to_le_bytes());
    si.extend_from_slice(&(map.len() as u32).to_le_bytes());
    si.extend_from_slice(&0u32.to_le_bytes());
    mem.write_slice(&si, GuestAddress(START_INFO_ADDR))
        .map_err(oom)?;
    Ok(START_INFO_ADDR)
}
