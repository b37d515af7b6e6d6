//! PCI: configuration spaces, the host's configuration mechanism #1 at
//! 0xcf8/0xcfc, BARs mapped onto the port and MMIO buses as the guest
//! programs them, and the i440FX host bridge and the PIIX3 ISA bridge,
//! IDE and PIIX4 PM functions of the `pc` machine.

pub mod config;
pub mod host;

pub use config::{Bar, BarKind, ConfigSpace};
pub use host::{PciConfigIo, PciRoot};
use std::sync::Arc;

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
    /// A guest read of configuration space (a function with registers
    /// that read through to something else refreshes them first).
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        self.config().read(offset, data);
    }
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

/// What the machine does when the PAM registers change (maps the BIOS
/// shadow RAM); gets the registers at 0x59-0x5f.
pub type PamListener = Box<dyn Fn(&[u8; 7]) + Send + Sync>;

/// The PAM registers of the i440FX.
pub const I440FX_PAM: usize = 0x59;

/// The i440FX host bridge at 00.0.
pub struct I440fx {
    config: ConfigSpace,
    pam_listener: Option<PamListener>,
}

impl I440fx {
    pub fn new() -> I440fx {
        let mut config = ConfigSpace::new(0x8086, 0x1237, 0x06, 0x00, 0x00, 0x02);
        config.set_u16(config::SUBSYSTEM_VENDOR_ID, 0x1af4);
        config.set_u16(config::SUBSYSTEM_ID, 0x1100);
        // PAM and SMRAM registers: writable; the PAM ones act where a
        // listener (the -bios machine) is set.
        for off in I440FX_PAM..I440FX_PAM + 7 {
            config.allow_write(off, 0xff);
        }
        config.allow_write(0x72, 0xff);
        I440fx {
            config,
            pam_listener: None,
        }
    }

    /// Tells `listener` about every PAM change (and the power-on values
    /// at each reset).
    pub fn with_pam_listener(mut self, listener: PamListener) -> I440fx {
        self.pam_listener = Some(listener);
        self
    }

    fn pam(&self) -> [u8; 7] {
        let mut pam = [0u8; 7];
        for (i, p) in pam.iter_mut().enumerate() {
            *p = self.config.u8(I440FX_PAM + i);
        }
        pam
    }

    fn tell_pam(&self) {
        if let Some(l) = &self.pam_listener {
            l(&self.pam());
        }
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

    fn config_written(&mut self, offset: usize, len: usize) {
        if offset < I440FX_PAM + 7 && offset + len > I440FX_PAM {
            self.tell_pam();
        }
    }

    fn reset(&mut self) {
        self.config = I440fx::new().config;
        self.tell_pam();
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
/// (0x600 at power-on, where vmm's FADT puts it); firmware may move the
/// block (SeaBIOS puts it at 0xb000 when it builds its own ACPI tables)
/// or turn it off (PMREGMISC bit 0), as on the real chip.
pub struct Piix4Pm {
    config: ConfigSpace,
    /// The port bus and the PM block, to move it; where it is now.
    block: Option<(Arc<crate::bus::Bus>, crate::bus::SharedDevice, u64)>,
    mapped_at: Option<u64>,
    power_on_base: u16,
}

/// The PM block's I/O space (QEMU's PIIX4 decodes 64 bytes).
const PIIX4_PM_IO_LEN: u64 = 64;

/// PMBA: the PM I/O base, and PMREGMISC bit 0: the PM I/O space enable.
pub const PIIX4_PMBA: usize = 0x40;
pub const PIIX4_PMREGMISC: usize = 0x80;
/// DEVACTB's byte with the APMC enable (bit 25 of the dword at 0x58).
const PIIX4_DEVACTB_APMC: usize = 0x5b;

impl Piix4Pm {
    pub fn new(pm_base: u16) -> Piix4Pm {
        let mut config = ConfigSpace::new(0x8086, 0x7113, 0x06, 0x80, 0x00, 0x03);
        config.set_u16(config::SUBSYSTEM_VENDOR_ID, 0x1af4);
        config.set_u16(config::SUBSYSTEM_ID, 0x1100);
        config.set_u8(config::INTERRUPT_PIN, 1);
        config.set_u32(PIIX4_PMBA, u32::from(pm_base) | 1);
        config.set_u8(PIIX4_PMREGMISC, 1);
        // vmm has no SMM: mark the APM SMI as already set up, as QEMU
        // does without SMM, so that firmware does not wait for an SMI.
        config.set_u8(PIIX4_DEVACTB_APMC, 0x02);
        // PMBA bits 6-15 and the enable bit are the firmware's to set.
        config.allow_write(PIIX4_PMBA, 0xc0);
        config.allow_write(PIIX4_PMBA + 1, 0xff);
        config.allow_write(PIIX4_PMREGMISC, 0x01);
        Piix4Pm {
            config,
            block: None,
            mapped_at: None,
            power_on_base: pm_base,
        }
    }

    /// Lets the function move `pm` (`len` bytes, on `pio` at the power-on
    /// base now) when the firmware writes PMBA or PMREGMISC.
    pub fn with_block(
        mut self,
        pio: Arc<crate::bus::Bus>,
        pm: crate::bus::SharedDevice,
        len: u64,
    ) -> Piix4Pm {
        self.mapped_at = Some(self.base());
        self.block = Some((pio, pm, len));
        self
    }

    fn base(&self) -> u64 {
        u64::from(self.config.u32(PIIX4_PMBA) & 0xffc0)
    }

    /// Puts the PM block where PMBA says, if PMREGMISC enables it.
    fn remap_block(&mut self) {
        let want =
            (self.config.u8(PIIX4_PMREGMISC) & 1 != 0 && self.base() != 0).then(|| self.base());
        if want == self.mapped_at {
            return;
        }
        let Some((pio, pm, len)) = &self.block else {
            return;
        };
        if let Some(old) = self.mapped_at.take() {
            pio.remove(old);
        }
        if let Some(base) = want {
            // A base over another device leaves the block unmapped.
            if pio
                .insert(base, (*len).min(PIIX4_PM_IO_LEN), pm.clone())
                .is_ok()
            {
                self.mapped_at = Some(base);
            }
        }
    }
}

impl PciFunction for Piix4Pm {
    fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.config
    }

    fn config_written(&mut self, offset: usize, len: usize) {
        let touches = |lo: usize, hi: usize| offset < hi && offset + len > lo;
        if touches(PIIX4_PMBA, PIIX4_PMBA + 4) || touches(PIIX4_PMREGMISC, PIIX4_PMREGMISC + 1) {
            self.remap_block();
        }
    }

    fn reset(&mut self) {
        let power_on = Piix4Pm::new(self.power_on_base);
        self.config = power_on.config;
        self.remap_block();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Bus, BusDevice};
    use std::sync::Mutex;

    struct Answer;

    impl BusDevice for Answer {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8 + 1);
        }
        fn write(&mut self, _offset: u64, _data: &[u8]) {}
    }

    fn write_config(f: &mut dyn PciFunction, offset: usize, data: &[u8]) {
        f.config_mut().write(offset, data);
        f.config_written(offset, data.len());
    }

    #[test]
    fn the_pm_block_follows_pmba_and_pmregmisc_and_comes_back_at_reset() {
        let pio = Arc::new(Bus::new());
        let block: crate::bus::SharedDevice = Arc::new(Mutex::new(Answer));
        pio.insert(0x600, 64, block.clone()).expect("insert");
        let mut pm = Piix4Pm::new(0x600).with_block(pio.clone(), block, 64);
        let read = |port: u64| {
            let mut b = [0u8];
            pio.read(port, &mut b).then_some(b[0])
        };
        assert_eq!(read(0x608), Some(9));
        // SeaBIOS's choice when it builds its own ACPI tables.
        write_config(&mut pm, PIIX4_PMBA, &0xb001u32.to_le_bytes());
        assert_eq!(read(0x608), None);
        assert_eq!(read(0xb008), Some(9));
        write_config(&mut pm, PIIX4_PMREGMISC, &[0]);
        assert_eq!(read(0xb008), None);
        pm.reset();
        assert_eq!(read(0x608), Some(9));
    }

    #[test]
    fn pam_writes_and_resets_reach_the_listener() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let mut host = I440fx::new().with_pam_listener(Box::new(move |pam| {
            s.lock().unwrap().push(*pam);
        }));
        write_config(&mut host, I440FX_PAM, &[0x30]);
        write_config(&mut host, 0x04, &[0x06]);
        host.reset();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0][0], 0x30);
        assert_eq!(seen[1], [0; 7]);
    }
}
