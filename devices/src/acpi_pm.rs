//! The ACPI power-management block of the PC machine (PIIX4-style, at port
//! 0x600): PM1 event and control registers and the PM timer. The guest
//! powers off (S5) or suspends (S3) through PM1 control; the power button
//! raises PWRBTN_STS and the SCI.

use crate::bus::BusDevice;
use crate::platform::{InterruptLine, PlatformRequest, RequestSink};
use std::sync::Arc;
use std::time::Instant;

/// Port of the block on the PC machine.
pub const PM_BASE: u64 = 0x600;
pub const PM_LEN: u64 = 0x10;
/// Offsets of the registers the FADT names.
pub const PM1_EVT_OFFSET: u64 = 0;
pub const PM1_CNT_OFFSET: u64 = 4;
pub const PM_TMR_OFFSET: u64 = 8;
/// SLP_TYP values the DSDT's \_S3 and \_S5 packages give.
pub const SLP_TYP_S3: u16 = 1;
pub const SLP_TYP_S5: u16 = 0;
/// The SCI's ISA interrupt.
pub const SCI_IRQ: u32 = 9;

const PWRBTN: u16 = 1 << 8;
const TMR: u16 = 1 << 0;
const WAK: u16 = 1 << 15;
const SCI_EN: u16 = 1 << 0;
const SLP_EN: u16 = 1 << 13;
const PM_TIMER_HZ: u128 = 3_579_545;

pub struct AcpiPm {
    status: u16,
    enable: u16,
    control: u16,
    start: Instant,
    sci: Arc<dyn InterruptLine>,
    sink: Arc<dyn RequestSink>,
}

impl AcpiPm {
    pub fn new(sci: Arc<dyn InterruptLine>, sink: Arc<dyn RequestSink>) -> AcpiPm {
        AcpiPm {
            status: 0,
            // Always in ACPI mode: the FADT has no SMI command port.
            enable: 0,
            control: SCI_EN,
            start: Instant::now(),
            sci,
            sink,
        }
    }

    fn update_sci(&self) {
        self.sci
            .set_level(self.status & self.enable & (PWRBTN | TMR) != 0);
    }

    /// The power button (`system_powerdown`).
    pub fn press_power_button(&mut self) {
        self.status |= PWRBTN;
        self.update_sci();
    }

    /// Back from S3 (`system_wakeup`).
    pub fn wake(&mut self) {
        self.status |= WAK;
        self.update_sci();
    }

    pub fn reset(&mut self) {
        self.status = 0;
        self.enable = 0;
        self.control = SCI_EN;
        self.update_sci();
    }

    fn timer(&self) -> u32 {
        (self.start.elapsed().as_nanos() * PM_TIMER_HZ / 1_000_000_000) as u32 & 0x00ff_ffff
    }

    fn register(&self, offset: u64) -> u32 {
        match offset & !1 {
            0 => u32::from(self.status) | (u32::from(self.enable) << 16),
            2 => u32::from(self.enable),
            4 => u32::from(self.control),
            8 | 10 => self.timer(),
            _ => 0,
        }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let aligned = offset & !3;
        let v = match aligned {
            0 => u32::from(self.status) | (u32::from(self.enable) << 16),
            4 => u32::from(self.control),
            8 => self.timer(),
            _ => self.register(offset),
        };
        let bytes = v.to_le_bytes();
        let start = (offset - aligned) as usize;
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(start + i).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut v = [0u8; 2];
        let n = data.len().min(2);
        v[..n].copy_from_slice(&data[..n]);
        let value = u16::from_le_bytes(v);
        match offset {
            0 => {
                // Write one to clear.
                self.status &= !value;
                self.update_sci();
            }
            2 => {
                self.enable = value;
                self.update_sci();
            }
            4 => {
                self.control = (value & !SLP_EN) | SCI_EN;
                if value & SLP_EN != 0 {
                    match (value >> 10) & 7 {
                        SLP_TYP_S5 => self.sink.request(PlatformRequest::Shutdown),
                        SLP_TYP_S3 => self.sink.request(PlatformRequest::Suspend),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

impl crate::state::DeviceState for AcpiPm {
    fn state_name(&self) -> &'static str {
        "piix4_pm"
    }

    fn save_state(&self) -> Result<Vec<u8>, crate::state::StateError> {
        Ok(crate::state::StateWriter::new(1)
            .u16(self.status)
            .u16(self.enable)
            .u16(self.control)
            .u32(self.timer())
            .finish())
    }

    fn load_state(&mut self, data: &[u8]) -> Result<(), crate::state::StateError> {
        let mut r = crate::state::StateReader::new(data, "piix4_pm", 1)?;
        self.status = r.u16()?;
        self.enable = r.u16()?;
        self.control = r.u16()? | SCI_EN;
        // The timer goes on from where it was.
        let ticks = u64::from(r.u32()?);
        let elapsed = std::time::Duration::from_nanos(
            (u128::from(ticks) * 1_000_000_000 / PM_TIMER_HZ) as u64,
        );
        self.start = Instant::now()
            .checked_sub(elapsed)
            .unwrap_or_else(Instant::now);
        r.end()?;
        self.update_sci();
        Ok(())
    }
}
