//! Guest RAM: one memfd holds all of it, mapped once per region so that
//! vCPUs, devices, dump and migration share the same pages.

use std::fs::File;
use std::os::fd::FromRawFd;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

/// The PC machine's RAM layout (QEMU's i440FX with gigabyte alignment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamLayout {
    pub below_4g: u64,
    pub above_4g: u64,
}

pub const FOUR_GIB: u64 = 1 << 32;

impl RamLayout {
    /// Up to 3.5 GiB stays below 4 GiB; larger guests keep 3 GiB low and
    /// the rest above 4 GiB, leaving the hole for PCI and the APICs.
    pub fn pc(ram: u64) -> RamLayout {
        let below_4g = if ram >= 0xe000_0000 { 0xc000_0000 } else { ram };
        RamLayout {
            below_4g,
            above_4g: ram - below_4g,
        }
    }

    pub fn total(&self) -> u64 {
        self.below_4g + self.above_4g
    }

    /// (guest address, size, offset in the memfd) of each region.
    pub fn regions(&self) -> Vec<(u64, u64, u64)> {
        let mut r = vec![(0, self.below_4g, 0)];
        if self.above_4g > 0 {
            r.push((FOUR_GIB, self.above_4g, self.below_4g));
        }
        r
    }
}

#[derive(Debug)]
pub enum MemoryError {
    Memfd(std::io::Error),
    Size(std::io::Error),
    Map(String),
}

impl std::fmt::Display for MemoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemoryError::Memfd(e) => write!(f, "cannot create guest memory: {e}"),
            MemoryError::Size(e) => write!(f, "cannot set the size of guest memory: {e}"),
            MemoryError::Map(e) => write!(f, "cannot map guest memory: {e}"),
        }
    }
}

pub struct GuestRam {
    pub layout: RamLayout,
    /// The descriptor behind every region, for dump and migration.
    #[allow(dead_code)]
    pub memfd: File,
    pub mem: GuestMemoryMmap,
}

impl GuestRam {
    pub fn new(layout: RamLayout) -> Result<GuestRam, MemoryError> {
        // SAFETY: memfd_create with a valid NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"vmm-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(MemoryError::Memfd(std::io::Error::last_os_error()));
        }
        // SAFETY: memfd_create returned a fresh descriptor we now own.
        let memfd = unsafe { File::from_raw_fd(fd) };
        memfd.set_len(layout.total()).map_err(MemoryError::Size)?;
        let ranges: Vec<(GuestAddress, usize, Option<FileOffset>)> = layout
            .regions()
            .into_iter()
            .map(|(gpa, size, off)| -> Result<_, MemoryError> {
                let file = memfd.try_clone().map_err(MemoryError::Memfd)?;
                Ok((
                    GuestAddress(gpa),
                    size as usize,
                    Some(FileOffset::new(file, off)),
                ))
            })
            .collect::<Result<_, _>>()?;
        let mem = GuestMemoryMmap::from_ranges_with_files(ranges)
            .map_err(|e| MemoryError::Map(e.to_string()))?;
        Ok(GuestRam { layout, memfd, mem })
    }
}
