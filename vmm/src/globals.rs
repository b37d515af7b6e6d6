//! `-global DRIVER.PROP=VALUE`: what vmm applies, with QEMU's errors.
//!
//! QEMU applies a global when a device of that type is created; a
//! property the type lacks is fatal ("can't apply global ..."), a
//! global no device used is a warning. vmm applies the board's PIIX4 PM
//! switches that change what the guest sees (`disable_s3`,
//! `disable_s4`); a global for another device type is refused as not
//! available yet, so that nothing is silently ignored.

use crate::cmdline::{Config, GlobalProperty};

/// What the globals change on the board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoardGlobals {
    /// `PIIX4_PM.disable_s3`: no \_S3 in the DSDT.
    pub s3_enabled: bool,
    /// `kvm-pit.lost_tick_policy`: delay re-injects, discard drops.
    pub pit_reinject: bool,
}

fn prefix(g: &GlobalProperty) -> String {
    format!(
        "can't apply global {}.{}={}: ",
        g.driver, g.property, g.value
    )
}

/// A uint8 property value as QEMU's string visitor reads it.
fn parse_u8(g: &GlobalProperty) -> Result<u8, String> {
    let v = g.value.trim();
    let n = if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else {
        v.parse::<u64>().ok()
    };
    match n {
        None => Err(format!(
            "{}Parameter '{}' expects an integer",
            prefix(g),
            g.property
        )),
        Some(n) => u8::try_from(n)
            .map_err(|_| format!("{}Parameter '{}' expects uint8_t", prefix(g), g.property)),
    }
}

/// `kvm-pit.lost_tick_policy` as the command line sets it (checked by
/// [`board_globals`] when the machine is built).
pub fn pit_policy(config: &Config) -> &'static str {
    match config
        .globals
        .iter()
        .rev()
        .find(|g| g.driver == "kvm-pit" && g.property == "lost_tick_policy")
    {
        Some(g) if g.value == "discard" => "discard",
        _ => "delay",
    }
}

/// `PIIX4_PM.disable_s3` as the command line sets it (checked by
/// [`board_globals`] when the machine is built).
pub fn disable_s3(config: &Config) -> u8 {
    config
        .globals
        .iter()
        .rev()
        .find(|g| g.driver == "PIIX4_PM" && g.property == "disable_s3")
        .and_then(|g| parse_u8(g).ok())
        .unwrap_or(0)
}

/// `kvm-pit`: the in-kernel PIT re-injects lost ticks (`delay`) or
/// drops them (`discard`); QEMU's kvm-pit refuses slew and merge.
/// Returns whether ticks are re-injected.
fn kvm_pit_global(g: &GlobalProperty) -> Result<bool, String> {
    match (g.property.as_str(), g.value.as_str()) {
        ("lost_tick_policy", "delay") => Ok(true),
        ("lost_tick_policy", "discard") => Ok(false),
        ("lost_tick_policy", "slew" | "merge") => {
            Err("Lost tick policy not supported.".to_string())
        }
        ("lost_tick_policy", v) => Err(format!("{}Invalid parameter '{v}'", prefix(g))),
        ("iobase", _) => crate::qom::devices::check_device_props(
            "kvm-pit",
            &crate::qom::devices::KVM_PIT,
            &[(g.property.clone(), g.value.clone())],
        )
        .map(|()| true)
        .map_err(|e| format!("{}{e}", prefix(g))),
        (p, _) => Err(format!("{}Property '.{p}' not found", prefix(g))),
    }
}

/// Applies the globals to the board `machine` vmm builds (None: no
/// board, `-machine none`). Warnings go to stderr as QEMU prints them.
pub fn board_globals(config: &Config, has_board: bool) -> Result<BoardGlobals, String> {
    let mut out = BoardGlobals {
        s3_enabled: true,
        pit_reinject: true,
    };
    for g in &config.globals {
        if g.driver == "kvm-pit" && has_board {
            out.pit_reinject = kvm_pit_global(g)?;
            continue;
        }
        if g.driver != "PIIX4_PM" {
            if crate::qom::types::find(&g.driver).is_none() {
                eprintln!(
                    "vmm: warning: global {}.{} has invalid class name",
                    g.driver, g.property
                );
                continue;
            }
            return Err(format!(
                "{}: not available yet: vmm applies -global only to PIIX4_PM so far",
                g.location
            ));
        }
        if !has_board {
            eprintln!(
                "vmm: warning: global {}.{}={} not used",
                g.driver, g.property, g.value
            );
            continue;
        }
        match g.property.as_str() {
            "disable_s3" => out.s3_enabled = parse_u8(g)? == 0,
            // vmm's DSDT never offers S4, which is what disable_s4=1
            // asks for; a request to offer it cannot be met.
            "disable_s4" => {
                if parse_u8(g)? == 0 {
                    return Err(format!(
                        "{}not available yet: vmm's ACPI tables have no S4 state",
                        prefix(g)
                    ));
                }
            }
            // The rest as -device takes them: QEMU's text for an
            // unknown one, only QEMU's default where vmm lacks the
            // feature.
            _ => crate::qom::devices::check_device_props(
                "PIIX4_PM",
                &crate::qom::devices::PIIX4_PM,
                &[(g.property.clone(), g.value.clone())],
            )
            .map_err(|e| format!("{}{e}", prefix(g)))?,
        }
    }
    Ok(out)
}
