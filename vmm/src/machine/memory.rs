//! Guest RAM: one memfd holds all of it, mapped once per region so that
//! vCPUs, devices, dump and migration share the same pages; transparent
//! huge pages where the host gives them (QEMU asks for them too).
//!
//! Huge pages matter for I/O as much as for the TLB: a device's direct
//! I/O into 4 KiB guest pages reaches the host disk in requests of at
//! most the disk's segment count times 4 KiB, where 2 MiB pages let the
//! kernel build 4 MiB requests (measured: 1 MiB sequential reads at 1.2
//! GB/s against 3.8 GB/s, bench/run-blk.sh). So where the host gives
//! shared memory no huge pages (`shmem_enabled` is `never`, Debian's
//! default), RAM is anonymous memory, as in QEMU, instead of a memfd.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::sync::Arc;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MmapRegion,
};

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

/// Host memory that something else allocated (a memory backend
/// object), unmapped when the last user lets go of it.
pub struct HostMapping {
    addr: *mut libc::c_void,
    len: usize,
}

// SAFETY: plain memory owned by this value; nothing in it is tied to a
// thread, and the value itself is never written after creation.
unsafe impl Send for HostMapping {}
// SAFETY: as above; shared access only reads the address and length.
unsafe impl Sync for HostMapping {}

impl HostMapping {
    /// # Safety
    /// `addr`/`len` must describe a readable and writable mapping that
    /// nothing else unmaps: this value unmaps it on drop.
    pub unsafe fn adopt(addr: *mut libc::c_void, len: usize) -> HostMapping {
        HostMapping { addr, len }
    }

    pub fn addr(&self) -> *mut libc::c_void {
        self.addr
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for HostMapping {
    fn drop(&mut self) {
        // SAFETY: addr/len describe a mapping this value owns.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

pub struct GuestRam {
    pub layout: RamLayout,
    /// The descriptor behind every region, for dump and migration (None
    /// where RAM is anonymous memory).
    #[allow(dead_code)]
    pub memfd: Option<File>,
    /// The memory backends RAM is made of (`-numa node,memdev=`), kept
    /// alive as long as the regions pointing into them.
    #[allow(dead_code)]
    backing: Vec<Arc<HostMapping>>,
    pub mem: GuestMemoryMmap,
}

/// The mode the kernel selected in a `transparent_hugepage` setting
/// file (the word in brackets).
fn selected_mode(setting: &str) -> Option<&str> {
    let start = setting.find('[')? + 1;
    let end = start + setting[start..].find(']')?;
    Some(&setting[start..end])
}

/// Whether memfd memory can get transparent huge pages on this host.
fn shmem_gets_huge_pages() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled").is_ok_and(|s| {
        matches!(
            selected_mode(&s),
            Some("always" | "within_size" | "advise" | "force")
        )
    })
}

/// Asks for transparent huge pages on every region, as QEMU does for
/// each RAM block.
fn advise_huge_pages(mem: &GuestMemoryMmap) {
    for region in mem.iter() {
        if let Ok(host) = mem.get_host_address(region.start_addr()) {
            // SAFETY: advice on a mapping this process owns; it changes
            // no contents. Refused advice costs only speed.
            unsafe { libc::madvise(host.cast(), region.len() as usize, libc::MADV_HUGEPAGE) };
        }
    }
}

impl GuestRam {
    pub fn new(layout: RamLayout) -> Result<GuestRam, MemoryError> {
        let ram = if shmem_gets_huge_pages() {
            Self::memfd_backed(layout)?
        } else {
            let regions: Vec<(GuestAddress, usize)> = layout
                .regions()
                .into_iter()
                .map(|(gpa, size, _)| (GuestAddress(gpa), size as usize))
                .collect();
            let mem = GuestMemoryMmap::from_ranges(&regions)
                .map_err(|e| MemoryError::Map(e.to_string()))?;
            GuestRam {
                layout,
                memfd: None,
                backing: Vec::new(),
                mem,
            }
        };
        advise_huge_pages(&ram.mem);
        Ok(ram)
    }

    fn memfd_backed(layout: RamLayout) -> Result<GuestRam, MemoryError> {
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
        Ok(GuestRam {
            layout,
            memfd: Some(memfd),
            backing: Vec::new(),
            mem,
        })
    }

    /// RAM made of memory backends laid end to end, as QEMU builds its
    /// RAM container from `-numa node,memdev=`: each backend covers the
    /// next part of RAM, which the layout then places below and above
    /// 4 GiB. Their sizes must add up to the layout's total.
    pub fn from_backends(
        layout: RamLayout,
        backends: Vec<Arc<HostMapping>>,
    ) -> Result<GuestRam, MemoryError> {
        let total: u64 = backends.iter().map(|b| b.len() as u64).sum();
        if total != layout.total() {
            return Err(MemoryError::Map(format!(
                "memory backends hold {total} bytes, RAM is {}",
                layout.total()
            )));
        }
        let mut regions = Vec::new();
        let mut backend_start = 0u64;
        for b in &backends {
            let backend_end = backend_start + b.len() as u64;
            for (gpa, size, ram_offset) in layout.regions() {
                let start = ram_offset.max(backend_start);
                let end = (ram_offset + size).min(backend_end);
                if start >= end {
                    continue;
                }
                // SAFETY: [start - backend_start, end - backend_start) lies
                // inside the backend's mapping, which `backing` keeps alive
                // as long as the region.
                let region = unsafe {
                    MmapRegion::build_raw(
                        b.addr().cast::<u8>().add((start - backend_start) as usize),
                        (end - start) as usize,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                    )
                }
                .map_err(|e| MemoryError::Map(e.to_string()))?;
                let guest = GuestRegionMmap::new(region, GuestAddress(gpa + (start - ram_offset)))
                    .ok_or_else(|| MemoryError::Map("a region wraps the address space".into()))?;
                regions.push(guest);
            }
            backend_start = backend_end;
        }
        let mem =
            GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Map(e.to_string()))?;
        advise_huge_pages(&mem);
        Ok(GuestRam {
            layout,
            memfd: None,
            backing: backends,
            mem,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::selected_mode;

    #[test]
    fn the_bracketed_word_is_the_selected_mode() {
        let s = "always within_size advise [never] deny force\n";
        assert_eq!(selected_mode(s), Some("never"));
        assert_eq!(selected_mode("[always] madvise never"), Some("always"));
        assert_eq!(selected_mode("no brackets"), None);
    }
}
