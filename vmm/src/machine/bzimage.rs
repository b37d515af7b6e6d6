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
        if cmdline.len() >= CMDLINE_MAX {
            return Err(BootError::CmdlineTooLong);
        }
        let mut c = cmdline.as_bytes().to_vec();
        c.push(0);
        mem.write_slice(&c, GuestAddress(CMDLINE_ADDR))
            .map_err(|_| oom(CMDLINE_ADDR, c.len()))?;

        let mut zp = vec![0u8; 4096];
        zp[HEADER_START..HEADER_START + self.header.len()].copy_from_slice(&self.header);
        zp[TYPE_OF_LOADER] = 0xff;
        zp[LOADFLAGS] |= CAN_USE_HEAP;
        zp[HEAP_END_PTR..HEAP_END_PTR + 2].copy_from_slice(&(0xfe00u16 - 0x200).to_le_bytes());
        zp[CMD_LINE_PTR..CMD_LINE_PTR + 4].copy_from_slice(&(CMDLINE_ADDR as u32).to_le_bytes());
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
        let map = e820_map(layout);
        for (i, (addr, size, kind)) in map.iter().take(E820_MAX).enumerate() {
            let off = E820_TABLE + i * 20;
            zp[off..off + 8].copy_from_slice(&addr.to_le_bytes());
            zp[off + 8..off + 16].copy_from_slice(&size.to_le_bytes());
            zp[off + 16..off + 20].copy_from_slice(&kind.to_le_bytes());
        }
        zp[E820_ENTRIES] = map.len().min(E820_MAX) as u8;
        mem.write_slice(&zp, GuestAddress(ZERO_PAGE_ADDR))
            .map_err(|_| oom(ZERO_PAGE_ADDR, zp.len()))?;
        Ok((KERNEL_ADDR, ZERO_PAGE_ADDR))
    }
}
