//! Machine properties (`-machine key=value`) and the accelerator.
//!
//! QEMU accepts any key when parsing `-machine` and checks the keys
//! afterwards against the machine object's properties, parsing each
//! value with its string input visitor; so do we, against the
//! properties of QEMU 2.11's x86 `pc` and `q35` machines.

use super::config::{MachineConfig, OnOffAuto, OnOffSplit};
use super::numbers::parse_i64;
use super::opts::parse_size_param;
use super::CmdlineError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PropKind {
    Str,
    Bool,
    Int,
    Size,
    OnOffAuto,
    OnOffSplit,
    /// A property that can be read but not set.
    ReadOnly,
}

/// The settable (and read-only) properties of QEMU 2.11's x86 machines.
const MACHINE_PROPS: &[(&str, PropKind)] = &[
    ("accel", PropKind::Str),
    ("kernel-irqchip", PropKind::OnOffSplit),
    ("kvm-shadow-mem", PropKind::Int),
    ("kernel", PropKind::Str),
    ("initrd", PropKind::Str),
    ("append", PropKind::Str),
    ("dtb", PropKind::Str),
    ("dumpdtb", PropKind::Str),
    ("phandle-start", PropKind::Int),
    ("dt-compatible", PropKind::Str),
    ("dump-guest-core", PropKind::Bool),
    ("mem-merge", PropKind::Bool),
    ("usb", PropKind::Bool),
    ("graphics", PropKind::Bool),
    ("igd-passthru", PropKind::Bool),
    ("firmware", PropKind::Str),
    ("suppress-vmdesc", PropKind::Bool),
    ("enforce-config-section", PropKind::Bool),
    ("max-ram-below-4g", PropKind::Size),
    ("smm", PropKind::OnOffAuto),
    ("vmport", PropKind::OnOffAuto),
    ("nvdimm", PropKind::Bool),
    ("enforce-aligned-dimm", PropKind::ReadOnly),
    ("memory-hotplug-region-size", PropKind::ReadOnly),
];

/// A property value after parsing.
enum PropValue<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Size(u64),
    OnOffAuto(OnOffAuto),
    OnOffSplit(OnOffSplit),
}

/// Applies the machine properties in order, as QEMU does after
/// parsing the command line (errors carry no location there).
pub fn apply_props(machine: &mut MachineConfig) -> Result<(), CmdlineError> {
    let props = machine.props.clone();
    for (name, value) in &props {
        let qom_name = name.replace('_', "-");
        let parsed = parse_prop(&qom_name, value)?;
        store(machine, &qom_name, parsed);
    }
    Ok(())
}

fn parse_prop<'a>(name: &str, value: &'a str) -> Result<PropValue<'a>, CmdlineError> {
    let Some(&(_, kind)) = MACHINE_PROPS.iter().find(|(n, _)| *n == name) else {
        return Err(CmdlineError::new(format!("Property '.{name}' not found")));
    };
    Ok(match kind {
        PropKind::Str => PropValue::Str(value),
        PropKind::Bool => PropValue::Bool(visitor_bool(name, value)?),
        PropKind::Int => PropValue::Int(parse_i64(value).map_err(|_| {
            CmdlineError::new(format!(
                "Parameter '{name}' expects an int64 value or range"
            ))
        })?),
        PropKind::Size => PropValue::Size(parse_size_param(name, value)?),
        PropKind::OnOffAuto => PropValue::OnOffAuto(match value {
            "auto" => OnOffAuto::Auto,
            "on" => OnOffAuto::On,
            "off" => OnOffAuto::Off,
            _ => return Err(invalid_enum(value)),
        }),
        PropKind::OnOffSplit => PropValue::OnOffSplit(match value {
            "on" => OnOffSplit::On,
            "off" => OnOffSplit::Off,
            "split" => OnOffSplit::Split,
            _ => return Err(invalid_enum(value)),
        }),
        PropKind::ReadOnly => {
            return Err(CmdlineError::new(
                "Insufficient permission to perform this operation",
            ))
        }
    })
}

/// QEMU's string input visitor reads a boolean as on/yes/true or
/// off/no/false, in any case.
fn visitor_bool(name: &str, value: &str) -> Result<bool, CmdlineError> {
    let v = value.to_ascii_lowercase();
    match v.as_str() {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        _ => Err(CmdlineError::new(format!(
            "Invalid parameter type for '{name}', expected: boolean"
        ))),
    }
}

fn invalid_enum(value: &str) -> CmdlineError {
    CmdlineError::new(format!("Invalid parameter '{value}'"))
}

fn store(m: &mut MachineConfig, name: &str, value: PropValue<'_>) {
    match (name, value) {
        ("kernel-irqchip", PropValue::OnOffSplit(v)) => m.kernel_irqchip = Some(v),
        ("kvm-shadow-mem", PropValue::Int(v)) => m.kvm_shadow_mem = Some(v),
        ("dump-guest-core", PropValue::Bool(v)) => m.dump_guest_core = v,
        ("mem-merge", PropValue::Bool(v)) => m.mem_merge = v,
        ("usb", PropValue::Bool(v)) => m.usb = v,
        ("graphics", PropValue::Bool(v)) => m.graphics = v,
        ("igd-passthru", PropValue::Bool(v)) => m.igd_passthru = v,
        ("suppress-vmdesc", PropValue::Bool(v)) => m.suppress_vmdesc = v,
        ("enforce-config-section", PropValue::Bool(v)) => m.enforce_config_section = v,
        ("max-ram-below-4g", PropValue::Size(v)) => m.max_ram_below_4g = Some(v),
        ("smm", PropValue::OnOffAuto(v)) => m.smm = v,
        ("vmport", PropValue::OnOffAuto(v)) => m.vmport = v,
        ("nvdimm", PropValue::Bool(v)) => m.nvdimm = v,
        // Strings (accel, kernel, ...) are read back from `props`.
        (_, PropValue::Str(_)) => {}
        _ => {}
    }
}

/// The last value of machine property `name` (`_` and `-` alike).
pub fn prop<'a>(m: &'a MachineConfig, name: &str) -> Option<&'a str> {
    m.props
        .iter()
        .rev()
        .find(|(k, _)| k.replace('_', "-") == name)
        .map(|(_, v)| v.as_str())
}

/// Accelerators QEMU 2.11 knows of, whether this build has them.
fn accel_known(name: &str) -> Option<bool> {
    match name {
        "kvm" => Some(true),
        "tcg" | "xen" | "qtest" => Some(false),
        _ => None,
    }
}

/// Chooses the accelerator from `accel=A[:B...]` the way QEMU's
/// `configure_accelerator` walks the list.  Only KVM is built in, and
/// it is the default.  Returns the messages QEMU prints on the way.
pub fn choose_accel(accel: Option<&str>) -> Result<(String, Vec<String>), CmdlineError> {
    let Some(list) = accel else {
        return Ok(("kvm".to_string(), Vec::new()));
    };
    let mut notes = Vec::new();
    for name in list.split(':').filter(|n| !n.is_empty()) {
        // QEMU reads each name into a 10-byte buffer.
        let name: String = name.chars().take(9).collect();
        match accel_known(&name) {
            Some(true) => return Ok((name, notes)),
            Some(false) => notes.push(format!("{name} not supported for this target")),
            None => notes.push(format!("invalid accelerator {name}")),
        }
    }
    let mut err = CmdlineError::new(format!("-machine accel={list}: No accelerator found"));
    if !notes.is_empty() {
        err = err.with_hint(&notes.join("\n"));
    }
    Err(err)
}
