//! Linux bzImage boot (the x86 boot protocol, 2.06 and later): the
//! protected-mode kernel at 1 MiB, the zero page with the setup header,
//! e820 map, command line and initrd, entered at its 32-bit entry point.

use super::boot::{e820_map, BootError, CMDLINE_ADDR, CMDLINE_MAX};
use super::memory::RamLayout;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Where the zero page (boot_params) goes; %esi points at it.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Where the protected-mode kernel is loaded, as QEMU does.
pub const KERNEL_ADDR: u64 = 0x100000;

const HDR_MAGIC: &[u8; 4] = b"HdrS";
const SETUP_SECTS: usize = 0x1f1;
const HEADER_START: usize = 0x1f1;
const BOOT_FLAG: usize = 0x1fe;
const VERSION: usize = 0x206;
const TYPE_OF_LOADER: usize = 0x210;
const LOADFLAGS: usize = 0x211;
const RAMDISK_IMAGE: usize = 0x218;
const RAMDISK_SIZE: usize = 0x21c;
const HEAP_END_PTR: usize = 0x224;
const CMD_LINE_PTR: usize = 0x228;
const INITRD_ADDR_MAX: usize = 0x22c;
const E820_ENTRIES: usize = 0x1e8;
const E820_TABLE: usize = 0x2d0;
const E820_MAX: usize = 128;
const LOADED_HIGH: u8 = 0x01;
const CAN_USE_HEAP: u8 = 0x80;

pub struct BzImage {
    /// The setup header bytes as the image has them (0x1f1 up to the end
    /// of the header), copied into the zero page.
    header: Vec<u8>,
    kernel: Vec<u8>,
    initrd: Option<Vec<u8>>,
    initrd_addr_max: u32,
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl BzImage {
    /// Whether `image` carries a boot-protocol header.
    pub fn is_bzimage(image: &[u8]) -> bool {
        image.get(0x202..0x206) == Some(HDR_MAGIC)
    }

    pub fn parse(image: &[u8], initrd: Option<Vec<u8>>) -> Result<BzImage, BootError> {
        if !Self::is_bzimage(image) || u16_at(image, BOOT_FLAG) != 0xaa55 {
            return Err(BootError::Format("no Linux boot header"));
        }
        let version = u16_at(image, VERSION);
        if version < 0x0206 {
            return Err(BootError::Format("boot protocol older than 2.06"));
        }
        if image.get(LOADFLAGS).is_none_or(|f| f & LOADED_HIGH == 0) {
            return Err(BootError::Format("not a bzImage (zImage loads low)"));
        }
        let mut setup_sects = usize::from(image[SETUP_SECTS]);
        if setup_sects == 0 {
            setup_sects = 4;
        }
        let kernel_start = (setup_sects + 1) * 512;
        if kernel_start >= image.len() {
            return Err(BootError::Format("setup larger than the image"));
        }
        // The header runs to 0x202 plus the byte at 0x201.
        let header_end = (0x202 + usize::from(image[0x201]))
            .min(kernel_start)
            .min(0x290);
        Ok(BzImage {
            header: image[HEADER_START..header_end].to_vec(),
            kernel: image[kernel_start..].to_vec(),
            initrd,
            initrd_addr_max: u32_at(image, INITRD_ADDR_MAX),
        })
    }

    /// Loads kernel, initrd, command line and zero page; returns the entry
    /// point and the zero page address.
    pub fn load(
        &self,
        mem: &GuestMemoryMmap,
        layout: &RamLayout,
        cmdline: &str,
    ) -> Result<(u64, u64), BootError> {
        let oom = |addr: u64, len: usize| BootError::OutOfMemory {
            addr,
            len: len as u64,
        };
        if KERNEL_ADDR + self.kernel.len() as u64 > layout.below_4g {
            return Err(oom(KERNEL_ADDR, self.kernel.len()));
        }
        mem.write_slice(&self.kernel, GuestAddress(KERNEL_ADDR))
            .map_err(|_| oom(KERNEL_ADDR, self.kernel.len()))?;
        write_cmdline(mem, cmdline)?;
        let mut zp = zero_page(&self.header, layout);
        if let Some(initrd) = &self.initrd {
            // As high as the kernel allows, below the end of low RAM.
            let max = u64::from(if self.initrd_addr_max == 0 {
                0x37ff_ffff
            } else {
                self.initrd_addr_max
            });
            let top = layout.below_4g.min(max + 1);
            let size = initrd.len() as u64;
            let addr = top
                .checked_sub(size)
                .map(|a| a & !0xfff)
                .filter(|a| *a >= KERNEL_ADDR + self.kernel.len() as u64)
                .ok_or(oom(top, initrd.len()))?;
            mem.write_slice(initrd, GuestAddress(addr))
                .map_err(|_| oom(addr, initrd.len()))?;
            zp[RAMDISK_IMAGE..RAMDISK_IMAGE + 4].copy_from_slice(&(addr as u32).to_le_bytes());
            zp[RAMDISK_SIZE..RAMDISK_SIZE + 4].copy_from_slice(&(size as u32).to_le_bytes());
        }
        write_zero_page(mem, &zp)?;
        Ok((KERNEL_ADDR, ZERO_PAGE_ADDR))
    }
}

/// The command line at CMDLINE_ADDR, NUL-terminated.
fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str) -> Result<(), BootError> {
    if cmdline.len() >= CMDLINE_MAX {
        return Err(BootError::CmdlineTooLong);
    }
    let mut c = cmdline.as_bytes().to_vec();
    c.push(0);
    mem.write_slice(&c, GuestAddress(CMDLINE_ADDR))
        .map_err(|_| BootError::OutOfMemory {
            addr: CMDLINE_ADDR,
            len: c.len() as u64,
        })
}

/// boot_params with `header` (the setup header from 0x1f1) and what the
/// loader fills in: its type, the heap, the command line, the e820 map.
fn zero_page(header: &[u8], layout: &RamLayout) -> Vec<u8> {
    let mut zp = vec![0u8; 4096];
    let n = header.len().min(4096 - HEADER_START);
    zp[HEADER_START..HEADER_START + n].copy_from_slice(&header[..n]);
    zp[TYPE_OF_LOADER] = 0xff;
    zp[LOADFLAGS] |= CAN_USE_HEAP;
    zp[HEAP_END_PTR..HEAP_END_PTR + 2].copy_from_slice(&(0xfe00u16 - 0x200).to_le_bytes());
    zp[CMD_LINE_PTR..CMD_LINE_PTR + 4].copy_from_slice(&(CMDLINE_ADDR as u32).to_le_bytes());
    let map = e820_map(layout);
    for (i, (addr, size, kind)) in map.iter().take(E820_MAX).enumerate() {
        let off = E820_TABLE + i * 20;
        zp[off..off + 8].copy_from_slice(&addr.to_le_bytes());
        zp[off + 8..off + 16].copy_from_slice(&size.to_le_bytes());
        zp[off + 16..off + 20].copy_from_slice(&kind.to_le_bytes());
    }
    zp[E820_ENTRIES] = map.len().min(E820_MAX) as u8;
    zp
}

fn write_zero_page(mem: &GuestMemoryMmap, zp: &[u8]) -> Result<(), BootError> {
    mem.write_slice(zp, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(|_| BootError::OutOfMemory {
            addr: ZERO_PAGE_ADDR,
            len: zp.len() as u64,
        })
}

/// The zero page for a kernel entered at its 64-bit entry point (a plain
/// vmlinux ELF): a setup header of protocol 2.12 made up by the loader,
/// as the kernel has none of its own to copy; returns its address.
pub fn write_boot_params_for_elf(
    mem: &GuestMemoryMmap,
    layout: &RamLayout,
    cmdline: &str,
) -> Result<u64, BootError> {
    let mut header = vec![0u8; 0x268 - HEADER_START];
    let at = |off: usize| off - HEADER_START;
    header[at(BOOT_FLAG)..at(BOOT_FLAG) + 2].copy_from_slice(&0xaa55u16.to_le_bytes());
    header[at(0x202)..at(0x202) + 4].copy_from_slice(HDR_MAGIC);
    header[at(VERSION)..at(VERSION) + 2].copy_from_slice(&0x020cu16.to_le_bytes());
    header[at(LOADFLAGS)] = LOADED_HIGH;
    // cmdline_size: what fits at CMDLINE_ADDR.
    header[at(0x238)..at(0x238) + 4].copy_from_slice(&(CMDLINE_MAX as u32 - 1).to_le_bytes());
    write_cmdline(mem, cmdline)?;
    write_zero_page(mem, &zero_page(&header, layout))?;
    Ok(ZERO_PAGE_ADDR)
}
