//! PCI: configuration spaces, the host's configuration mechanism #1 at
//! 0xcf8/0xcfc, BARs mapped onto the port and MMIO buses as the guest
//! programs them, and the i440FX host bridge and the PIIX3 ISA bridge,
//! IDE and PIIX4 PM functions of the `pc` machine.

pub mod config;
pub mod host;

pub use config::{Bar, BarKind, ConfigSpace};
pub use host::{PciConfigIo, PciRoot};

/// Saves and restores a function whose whole state is its configuration
/// space (the host bridge and ISA bridge).
fn config_state_save(
    name: &'static str,
    c: &ConfigSpace,
) -> Result<Vec<u8>, crate::state::StateError> {
    let _ = name;
    Ok(crate::state::StateWriter::new(1).bytes(c.raw()).finish())
}

fn config_state_load(
    name: &'static str,
    c: &mut ConfigSpace,
    data: &[u8],
) -> Result<(), crate::state::StateError> {
    let mut r = crate::state::StateReader::new(data, name, 1)?;
    if !c.restore_raw(r.bytes(256)?) {
        return Err(crate::state::StateError::Malformed(format!(
            "{name}: config space size"
        )));
    }
    r.end()
}

/// One PCI function.
pub trait PciFunction: Send + crate::state::DeviceState {
    fn config(&self) -> &ConfigSpace;
    fn config_mut(&mut self) -> &mut ConfigSpace;

    /// A guest write to `len` bytes of configuration space at `offset` has
    /// been applied (for registers with side effects, such as MSI-X
    /// control).
    fn config_written(&mut self, _offset: usize, _len: usize) {}
    /// Where each BAR is mapped now (None: not decoded), after the
    /// command register or a BAR changed.
    fn bars_mapped(&mut self, _mapped: &[Option<u64>; 6]) {}

    /// A machine reset: back to the power-on state.
    fn reset(&mut self) {}

    /// QEMU's description of the device class, for `query-pci`.
    fn class_description(&self) -> Option<&'static str> {
        None
    }

    /// The `id` of the device as `-device ...,id=` named it.
    fn qdev_id(&self) -> &str {
        ""
    }

    /// An access to BAR `bar` at `offset` within it.
    fn bar_read(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn bar_write(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
}

/// The i440FX host bridge at 00.0.
pub struct I440fx {
    config: ConfigSpace,
}

impl I440fx {
    pub fn new() -> I440fx {
        let mut config = ConfigSpace::new(0x8086, 0x1237, 0x06, 0x00, 0x00, 0x02);
        config.set_u16(config::SUBSYSTEM_VENDOR_ID, 0x1af4);
        config.set_u16(config::SUBSYSTEM_ID, 0x1100);
        // PAM and SMRAM registers: writable, not acted upon (no firmware
        // shadowing without -bios).
        for off in 0x59..=0x5f {
            config.allow_write(off, 0xff);
        }
        config.allow_write(0x72, 0xff);
        I440fx { config }
    }
}

impl Default for I440fx {
    fn default() -> Self {
        I440fx::new()
    }
}

impl PciFunction for I440fx {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn class_description(&self) -> Option<&'static str> {
        Some("Host bridge")
    }
}

/// The PIIX3 PCI-to-ISA bridge at 01.0, with its PIRQ routing registers.
pub struct Piix3 {
    config: ConfigSpace,
}

/// PIRQA-D route registers of the PIIX3.
pub const PIIX3_PIRQ_ROUTE: usize = 0x60;

impl Piix3 {
    pub fn new() -> Piix3 {
        let mut config = ConfigSpace::new(0x8086, 0x7000, 0x06, 0x01, 0x00, 0x00);
        config.set_u8(config::HEADER_TYPE, 0x80); // multi-function
        config.set_u16(config::SUBSYSTEM_VENDOR_ID, 0x1af4);
        config.set_u16(config::SUBSYSTEM_ID, 0x1100);
        for i in 0..4 {
            // Routing disabled until firmware or the OS sets it.
            config.set_u8(PIIX3_PIRQ_ROUTE + i, 0x80);
            config.allow_write(PIIX3_PIRQ_ROUTE + i, 0x8f);
        }
        Piix3 { config }
    }
}

impl Default for Piix3 {
    fn default() -> Self {
        Piix3::new()
    }
}

impl PciFunction for Piix3 {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn class_description(&self) -> Option<&'static str> {
        Some("ISA bridge")
    }
}

/// The PIIX3 IDE function at 01.1, as QEMU's `pc` machine has it: a
/// legacy-mode controller (ports 0x1f0/0x170, IRQ 14/15) with its
/// bus-master BAR. No drive sits behind it until vmm has IDE: the legacy
/// ports decode nothing, so a guest finds no device.
pub struct Piix3Ide {
    config: ConfigSpace,
}

impl Piix3Ide {
    pub fn new() -> Piix3Ide {
        let mut config = ConfigSpace::new(0x8086, 0x7010, 0x01, 0x01, 0x80, 0x00);
        config.set_u16(config::SUBSYSTEM_VENDOR_ID, 0x1af4);
        config.set_u16(config::SUBSYSTEM_ID, 0x1100);
        config.add_bar(
            4,
            Bar {
                kind: BarKind::Io,
                size: 16,
                prefetchable: false,
            },
            0,
        );
        // IDE timing registers: firmware and drivers write them.
        for off in 0x40..=0x44 {
            config.allow_write(off, 0xff);
        }
        Piix3Ide { config }
    }
}

impl Default for Piix3Ide {
    fn default() -> Self {
        Piix3Ide::new()
    }
}

impl PciFunction for Piix3Ide {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn class_description(&self) -> Option<&'static str> {
        Some("IDE controller")
    }
}

/// The PIIX4 power management function at 01.3, as QEMU's `pc` machine
/// has it. Its PM I/O base register names where the ACPI PM block is
/// (0x600, where the FADT puts it), enabled; the block does not move.
pub struct Piix4Pm {
    config: ConfigSpace,
}

/// PMBA: the PM I/O base, and PMREGMISC bit 0: the PM I/O space enable.
pub const PIIX4_PMBA: usize = 0x40;
pub const PIIX4_PMREGMISC: usize = 0x80;

impl Piix4Pm {
    pub fn new(pm_base: u16) -> Piix4Pm {
        let mut config = ConfigSpace::new(0x8086, 0x7113, 0x06, 0x80, 0x00, 0x03);
        config.set_u16(config::SUBSYSTEM_VENDOR_ID, 0x1af4);
        config.set_u16(config::SUBSYSTEM_ID, 0x1100);
        config.set_u8(config::INTERRUPT_PIN, 1);
        config.set_u32(PIIX4_PMBA, u32::from(pm_base) | 1);
        config.set_u8(PIIX4_PMREGMISC, 1);
        Piix4Pm { config }
    }
}

impl PciFunction for Piix4Pm {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn class_description(&self) -> Option<&'static str> {
        Some("Bridge")
    }
}

impl crate::state::DeviceState for Piix3Ide {
    fn state_name(&self) -> &'static str {
        "PIIX3-IDE"
    }

    fn save_state(&self) -> Result<Vec<u8>, crate::state::StateError> {
        config_state_save("PIIX3-IDE", &self.config)
    }

    fn load_state(&mut self, data: &[u8]) -> Result<(), crate::state::StateError> {
        config_state_load("PIIX3-IDE", &mut self.config, data)
    }
}

impl crate::state::DeviceState for Piix4Pm {
    fn state_name(&self) -> &'static str {
        "PIIX4-PM"
    }

    fn save_state(&self) -> Result<Vec<u8>, crate::state::StateError> {
        config_state_save("PIIX4-PM", &self.config)
    }

    fn load_state(&mut self, data: &[u8]) -> Result<(), crate::state::StateError> {
        config_state_load("PIIX4-PM", &mut self.config, data)
    }
}

impl crate::state::DeviceState for I440fx {
    fn state_name(&self) -> &'static str {
        "I440FX"
    }

    fn save_state(&self) -> Result<Vec<u8>, crate::state::StateError> {
        config_state_save("I440FX", &self.config)
    }

    fn load_state(&mut self, data: &[u8]) -> Result<(), crate::state::StateError> {
        config_state_load("I440FX", &mut self.config, data)
    }
}

impl crate::state::DeviceState for Piix3 {
    fn state_name(&self) -> &'static str {
        "PIIX3"
    }

    fn save_state(&self) -> Result<Vec<u8>, crate::state::StateError> {
        config_state_save("PIIX3", &self.config)
    }

    fn load_state(&mut self, data: &[u8]) -> Result<(), crate::state::StateError> {
        config_state_load("PIIX3", &mut self.config, data)
    }
}
