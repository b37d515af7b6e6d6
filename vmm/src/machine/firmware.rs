//! `-bios FILE`: a firmware image (SeaBIOS) as the PC has it. The image
//! is ROM at the top of 4 GiB, its last 128 KiB also appear below 1 MiB
//! (QEMU's isa-bios), and the i440FX PAM registers choose, per 16 KiB
//! segment of 0xc0000-0xfffff (64 KiB for 0xf0000), whether the CPU sees
//! that ROM, nothing, or the RAM beneath it, read-only or writable:
//! SeaBIOS copies itself into that RAM ("shadowing") and write-protects
//! it. Each choice is a KVM memory slot; a write to a read-only one
//! reaches the VMM as MMIO, where nothing answers, so ROM stays ROM.

use super::{err, CurrentVm, MachineError};
use kvm_ioctls::VmFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// The ROM's size limit and granularity, as QEMU 2.11 checks them.
const MAX_BIOS_SIZE: usize = 16 << 20;
const BIOS_GRANULE: usize = 64 << 10;
/// How much of the ROM shows below 1 MiB.
const ISA_BIOS_MAX: u64 = 128 << 10;
/// The shadowed range.
pub const SHADOW_START: u64 = 0xc0000;
pub const SHADOW_END: u64 = 0x100000;
/// KVM slots: RAM uses the first ones, then the ROM, then one per PAM
/// segment.
const ROM_SLOT: u32 = 8;
const PAM_SLOT_FIRST: u32 = 10;
const SEGMENTS: usize = 13;

/// The firmware image in host memory, mapped read-only into the guest.
pub struct Firmware {
    rom: GuestMemoryMmap,
    size: u64,
    /// The file as `-bios` named it (QEMU's ROM name).
    name: String,
}

impl Firmware {
    /// Checks the image as QEMU does ("could not load PC BIOS").
    pub fn load(path: &str, image: &[u8]) -> Result<Firmware, MachineError> {
        if image.is_empty()
            || image.len() > MAX_BIOS_SIZE
            || !image.len().is_multiple_of(BIOS_GRANULE)
        {
            return Err(MachineError(format!("could not load PC BIOS '{path}'")));
        }
        let size = image.len() as u64;
        let base = GuestAddress((1u64 << 32) - size);
        let rom =
            GuestMemoryMmap::from_ranges(&[(base, image.len())]).map_err(err("firmware memory"))?;
        rom.write_slice(image, base)
            .map_err(err("firmware memory"))?;
        Ok(Firmware {
            rom,
            size,
            name: path.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The guest address of the image's first byte.
    pub fn base(&self) -> u64 {
        (1u64 << 32) - self.size
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn host(&self, offset: u64) -> Result<u64, MachineError> {
        let base = GuestAddress((1u64 << 32) - self.size + offset);
        Ok(self
            .rom
            .get_host_address(base)
            .map_err(err("firmware memory"))? as u64)
    }

    /// Maps the whole image below 4 GiB.
    pub fn map_rom(&self, vm: &VmFd) -> Result<(), MachineError> {
        set_slot(
            vm,
            ROM_SLOT,
            (1u64 << 32) - self.size,
            self.size,
            self.host(0)?,
            true,
        )
    }

    /// Where the isa-bios window starts below 1 MiB, and the host address
    /// of its first byte.
    fn isa_bios(&self) -> Result<(u64, u64), MachineError> {
        let len = self.size.min(ISA_BIOS_MAX);
        Ok((SHADOW_END - len, self.host(self.size - len)?))
    }
}

/// What one shadow segment shows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Shows {
    Nothing,
    Rom { host: u64 },
    Ram { read_only: bool },
}

/// The PAM-controlled segments and the KVM slots that show them.
pub struct ShadowRam {
    vm: CurrentVm,
    /// Host address of guest RAM at guest address 0.
    ram_host: u64,
    isa_bios: (u64, u64),
    mapped: [Shows; SEGMENTS],
}

/// Segment `i`: its guest address, size, PAM register (0-6) and nibble.
fn segment(i: usize) -> (u64, u64, usize, u32) {
    if i == 0 {
        return (0xf0000, 0x10000, 0, 4);
    }
    let k = i - 1;
    (
        SHADOW_START + k as u64 * 0x4000,
        0x4000,
        1 + k / 2,
        (k % 2) as u32 * 4,
    )
}

impl ShadowRam {
    pub fn new(vm: CurrentVm, ram_host: u64, fw: &Firmware) -> Result<ShadowRam, MachineError> {
        Ok(ShadowRam {
            vm,
            ram_host,
            isa_bios: fw.isa_bios()?,
            mapped: [Shows::Nothing; SEGMENTS],
        })
    }

    /// What PAM value `pam` (the registers at 0x59-0x5f) shows in
    /// segment `i`. Write-only (reads from ROM, writes to RAM) cannot be
    /// one KVM slot; it shows writable RAM, which firmware does not
    /// tell apart (SeaBIOS never sets it).
    fn wanted(&self, i: usize, pam: &[u8; 7]) -> Shows {
        let (gpa, _, reg, shift) = segment(i);
        match (pam[reg] >> shift) & 3 {
            0 if gpa >= self.isa_bios.0 => Shows::Rom {
                host: self.isa_bios.1 + (gpa - self.isa_bios.0),
            },
            0 => Shows::Nothing,
            1 => Shows::Ram { read_only: true },
            _ => Shows::Ram { read_only: false },
        }
    }

    /// A new VM: none of the segments' slots exist in it yet.
    pub fn forget_slots(&mut self) {
        self.mapped = [Shows::Nothing; SEGMENTS];
    }

    /// Makes the current VM's slots follow the PAM registers.
    pub fn apply(&mut self, pam: &[u8; 7]) -> Result<(), MachineError> {
        let vm = self.vm.read().unwrap_or_else(|e| e.into_inner()).clone();
        match vm {
            Some(vm) => self.apply_on(&vm, pam),
            None => Ok(()),
        }
    }

    /// Makes `vm`'s slots follow the PAM registers.
    pub fn apply_on(&mut self, vm: &VmFd, pam: &[u8; 7]) -> Result<(), MachineError> {
        for i in 0..SEGMENTS {
            let want = self.wanted(i, pam);
            if want == self.mapped[i] {
                continue;
            }
            let (gpa, size, _, _) = segment(i);
            let slot = PAM_SLOT_FIRST + i as u32;
            if self.mapped[i] != Shows::Nothing {
                set_slot(vm, slot, gpa, 0, 0, false)?;
                self.mapped[i] = Shows::Nothing;
            }
            match want {
                Shows::Nothing => {}
                Shows::Rom { host } => set_slot(vm, slot, gpa, size, host, true)?,
                Shows::Ram { read_only } => {
                    set_slot(vm, slot, gpa, size, self.ram_host + gpa, read_only)?
                }
            }
            self.mapped[i] = want;
        }
        Ok(())
    }
}

/// Creates, or with `size` 0 deletes, KVM memory slot `slot`.
fn set_slot(
    vm: &VmFd,
    slot: u32,
    gpa: u64,
    size: u64,
    host: u64,
    read_only: bool,
) -> Result<(), MachineError> {
    let r = kvm_bindings::kvm_userspace_memory_region {
        slot,
        flags: if read_only {
            kvm_bindings::KVM_MEM_READONLY
        } else {
            0
        },
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: host,
    };
    // SAFETY: `host` points into guest RAM or the firmware image, both
    // mapped for as long as the machine (and so every VM it creates)
    // lives; deleting a slot needs no memory.
    unsafe { vm.set_user_memory_region(r) }.map_err(err("KVM memory (firmware)"))
}

#[cfg(test)]
mod tests {
    use super::segment;

    #[test]
    fn pam_segments_cover_the_shadow_range_once() {
        let mut covered: Vec<(u64, u64)> = (0..13).map(|i| (segment(i).0, segment(i).1)).collect();
        covered.sort();
        let mut at = 0xc0000;
        for (gpa, size) in covered {
            assert_eq!(gpa, at);
            at += size;
        }
        assert_eq!(at, 0x100000);
        // PAM1's low nibble is 0xc0000, PAM6's high nibble 0xec000.
        assert_eq!(segment(1), (0xc0000, 0x4000, 1, 0));
        assert_eq!(segment(12), (0xec000, 0x4000, 6, 4));
    }
}
