//! Device types' properties as QEMU 2.11 lists them: the qdev properties
//! of each class, plus what its instance init adds (memory regions as
//! children, GPIO outputs as links). device-list-properties answers from
//! here, and the devices in the tree carry the same properties.

use super::props::{Access, PropInfo};
use super::types;
use qmp::qapi::DevicePropertyInfo;
use qmp::Error;

/// QEMU's description of a chardev property.
const CHARDEV_DESCRIPTION: &str = "ID of a chardev to use as a backend";

fn qdev(name: &str, type_name: &str) -> PropInfo {
    PropInfo::new(name, type_name, Access::ReadWrite)
}

/// What `-device` does with a property vmm lists for a device type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropPolicy {
    /// vmm applies the value.
    Applied,
    /// Any value is taken: it changes nothing a guest can see, in QEMU
    /// either (PCIe-only bits on a PCI bus, ioeventfd, migration
    /// compatibility flags), or it has no meaning without firmware
    /// (bootindex).
    NoEffect,
    /// Only QEMU's default value (given in the canonical form below)
    /// is possible; another value is refused as not available yet.
    DefaultOnly(&'static str),
}

/// A property of a device type: name, QAPI type, description, policy.
pub type DeviceProp = (&'static str, &'static str, Option<&'static str>, PropPolicy);

use PropPolicy::{Applied, DefaultOnly, NoEffect};

const ONOFF: Option<&str> = Some("on/off");
const ERROR_POLICY: Option<&str> = Some("Error handling policy, report/ignore/enospc/stop/auto");
const BLOCK_SIZE: Option<&str> = Some("A power of two between 512 and 32768");

/// QEMU 2.11's virtio-blk-pci properties, in the order its
/// device-list-properties gives them.
pub const VIRTIO_BLK_PCI: [DeviceProp; 48] = [
    ("secs", "uint32", None, Applied),
    ("request-merging", "bool", ONOFF, Applied),
    ("min_io_size", "uint16", None, DefaultOnly("0")),
    ("event_idx", "bool", ONOFF, DefaultOnly("on")),
    ("serial", "str", None, Applied),
    ("heads", "uint32", None, Applied),
    ("ioeventfd", "bool", ONOFF, NoEffect),
    ("multifunction", "bool", ONOFF, DefaultOnly("off")),
    ("rombar", "uint32", None, NoEffect),
    ("scsi", "bool", ONOFF, DefaultOnly("off")),
    ("cyls", "uint32", None, Applied),
    ("x-disable-pcie", "bool", ONOFF, NoEffect),
    ("logical_block_size", "uint16", BLOCK_SIZE, Applied),
    ("indirect_desc", "bool", ONOFF, DefaultOnly("on")),
    ("iothread", "link<iothread>", None, Applied),
    ("disable-modern", "bool", None, DefaultOnly("off")),
    (
        "drive",
        "str",
        Some("Node name or ID of a block device to use as a backend"),
        Applied,
    ),
    ("disable-legacy", "OnOffAuto", Some("on/off/auto"), Applied),
    ("command_serr_enable", "bool", ONOFF, NoEffect),
    ("x-pcie-lnkctl-init", "bool", ONOFF, NoEffect),
    ("werror", "BlockdevOnError", ERROR_POLICY, Applied),
    ("bootindex", "int32", None, NoEffect),
    (
        "discard_granularity",
        "uint32",
        None,
        DefaultOnly("4294967295"),
    ),
    ("rerror", "BlockdevOnError", ERROR_POLICY, Applied),
    ("page-per-vq", "bool", ONOFF, DefaultOnly("off")),
    ("x-pcie-deverr-init", "bool", ONOFF, NoEffect),
    ("x-pcie-pm-init", "bool", ONOFF, NoEffect),
    ("any_layout", "bool", ONOFF, DefaultOnly("on")),
    ("x-pcie-lnksta-dllla", "bool", ONOFF, NoEffect),
    ("share-rw", "bool", None, DefaultOnly("off")),
    ("physical_block_size", "uint16", BLOCK_SIZE, Applied),
    ("config-wce", "bool", ONOFF, Applied),
    ("class", "uint32", None, DefaultOnly("0")),
    (
        "addr",
        "int32",
        Some("Slot and optional function number, example: 06.0 or 06"),
        Applied,
    ),
    ("migrate-extra", "bool", ONOFF, NoEffect),
    ("modern-pio-notify", "bool", ONOFF, DefaultOnly("off")),
    ("vectors", "uint32", None, DefaultOnly("4294967295")),
    ("iommu_platform", "bool", ONOFF, DefaultOnly("off")),
    ("x-pcie-extcap-init", "bool", ONOFF, NoEffect),
    (
        "virtio-backend",
        "child<virtio-blk-device>",
        None,
        DefaultOnly(""),
    ),
    (
        "x-ignore-backend-features",
        "bool",
        None,
        DefaultOnly("off"),
    ),
    ("notify_on_empty", "bool", ONOFF, DefaultOnly("on")),
    (
        "write-cache",
        "OnOffAuto",
        Some("on/off/auto"),
        DefaultOnly("auto"),
    ),
    ("num-queues", "uint16", None, Applied),
    ("opt_io_size", "uint32", None, DefaultOnly("0")),
    ("ats", "bool", ONOFF, DefaultOnly("off")),
    (
        "virtio-pci-bus-master-bug-migration",
        "bool",
        ONOFF,
        NoEffect,
    ),
    ("romfile", "str", None, NoEffect),
];

/// QEMU 2.11's PIIX4_PM properties (a board device: set only through
/// `-global`, see globals.rs). disable_s3 and disable_s4 are applied;
/// vmm has no SMBus, ACPI PCI or memory hotplug, and no S4.
pub const PIIX4_PM: [DeviceProp; 13] = [
    ("memory-hotplug-support", "bool", None, DefaultOnly("off")),
    ("rombar", "uint32", None, NoEffect),
    ("x-pcie-lnksta-dllla", "bool", ONOFF, NoEffect),
    (
        "acpi-pci-hotplug-with-bridge-support",
        "bool",
        None,
        DefaultOnly("off"),
    ),
    ("multifunction", "bool", ONOFF, DefaultOnly("off")),
    ("romfile", "str", None, NoEffect),
    ("disable_s4", "uint8", None, Applied),
    ("disable_s3", "uint8", None, Applied),
    ("x-pcie-extcap-init", "bool", ONOFF, NoEffect),
    ("command_serr_enable", "bool", ONOFF, NoEffect),
    ("s4_val", "uint8", None, DefaultOnly("2")),
    ("smb_io_base", "uint32", None, DefaultOnly("0")),
    (
        "addr",
        "int32",
        Some("Slot and optional function number, example: 06.0 or 06"),
        DefaultOnly("1.3"),
    ),
];

/// kvm-pit's properties: the PIT stays at 0x40; the lost tick policy
/// (delay or discard) is applied, see globals.rs.
pub const KVM_PIT: [DeviceProp; 2] = [
    ("iobase", "uint32", None, DefaultOnly("64")),
    ("lost_tick_policy", "LostTickPolicy", None, Applied),
];

/// isa-debug-exit's properties (both applied).
pub const ISA_DEBUG_EXIT: [DeviceProp; 2] = [
    ("iobase", "uint32", None, Applied),
    ("iosize", "uint32", None, Applied),
];

/// The canonical form of a property value for comparing it with a
/// default: booleans as on/off, numbers in decimal.
fn canonical(type_name: &str, v: &str) -> Option<String> {
    match type_name {
        "bool" => match v {
            "on" | "yes" | "true" | "y" => Some("on".into()),
            "off" | "no" | "false" | "n" => Some("off".into()),
            _ => None,
        },
        t if t.starts_with("uint") || t.starts_with("int") => {
            let n = if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                i128::from_str_radix(h, 16).ok()
            } else {
                v.parse::<i128>().ok()
            }?;
            Some(n.to_string())
        }
        _ => Some(v.to_string()),
    }
}

/// Checks the properties a `-device` gives against its type's list:
/// unknown ones with QEMU's text, values vmm cannot honour as not
/// available yet. `driver`, `id` and `bus` (qdev's own options, see
/// qdev.rs) are not properties.
pub fn check_device_props(
    driver: &str,
    table: &[DeviceProp],
    items: &[(String, String)],
) -> Result<(), String> {
    for (k, v) in items {
        if k == "driver" || k == "id" || k == "bus" {
            continue;
        }
        let Some((name, ty, _, policy)) = table.iter().find(|p| p.0 == k) else {
            return Err(format!("Property '.{k}' not found"));
        };
        if let DefaultOnly(default) = policy {
            let default_c = canonical(ty, default).unwrap_or_default();
            let is_default = canonical(ty, v).as_deref() == Some(default_c.as_str());
            if !is_default {
                return Err(format!(
                    "not available yet: {driver} property '{name}={v}' is not supported by vmm"
                ));
            }
        }
    }
    Ok(())
}

/// The qdev (static) properties of a concrete device type vmm has.
pub fn qdev_properties(type_name: &str) -> Option<Vec<PropInfo>> {
    let table: &[DeviceProp] = match type_name {
        "virtio-blk-pci" => &VIRTIO_BLK_PCI,
        "PIIX4_PM" => &PIIX4_PM,
        _ => &[],
    };
    if !table.is_empty() {
        return Some(
            table
                .iter()
                .map(|(n, t, d, _)| {
                    let p = qdev(n, t);
                    match d {
                        Some(d) => p.described(d),
                        None => p,
                    }
                })
                .collect(),
        );
    }
    Some(match type_name {
        "isa-serial" => vec![
            qdev("index", "uint32"),
            qdev("iobase", "uint32"),
            qdev("irq", "uint32"),
            qdev("chardev", "str").described(CHARDEV_DESCRIPTION),
            qdev("wakeup", "uint8"),
        ],
        "i8042" => vec![],
        "mc146818rtc" => vec![
            qdev("base_year", "int32"),
            qdev("lost_tick_policy", "LostTickPolicy"),
        ],
        "isa-debug-exit" => vec![qdev("iobase", "uint32"), qdev("iosize", "uint32")],
        "kvm-pit" => vec![
            qdev("iobase", "uint32"),
            qdev("lost_tick_policy", "LostTickPolicy"),
        ],
        // Its qdev property, then the PCI holes its instance adds.
        "i440FX-pcihost" => vec![
            qdev("short_root_bus", "uint32"),
            qdev("pci-hole64-end", "uint64"),
            qdev("pci-hole-end", "uint32"),
            qdev("pci-hole-start", "uint32"),
            qdev("pci-hole64-start", "uint64"),
            qdev("pci-hole64-size", "size"),
            qdev("x-pci-hole64-fix", "bool"),
        ],
        _ => return None,
    })
}

/// Children and links a device's instance init creates: (name, type).
pub fn instance_extras(type_name: &str) -> Vec<(&'static str, String)> {
    match type_name {
        "i440FX-pcihost" => vec![
            (
                "pci-conf-idx[0]",
                format!("child<{}>", types::TYPE_MEMORY_REGION),
            ),
            (
                "pci-conf-data[0]",
                format!("child<{}>", types::TYPE_MEMORY_REGION),
            ),
        ],
        "i8042" => vec![
            (
                "i8042-data[0]",
                format!("child<{}>", types::TYPE_MEMORY_REGION),
            ),
            (
                "i8042-cmd[0]",
                format!("child<{}>", types::TYPE_MEMORY_REGION),
            ),
            ("a20[0]", format!("link<{}>", types::TYPE_IRQ)),
        ],
        _ => Vec::new(),
    }
}

/// device-list-properties, with QEMU's errors. QEMU leaves out the
/// properties every device has (type, realized, hotpluggable,
/// hotplugged, parent_bus) and the legacy-* string forms.
pub fn list_properties(typename: &str) -> Result<Vec<DevicePropertyInfo>, Error> {
    let Some(t) = types::find(typename) else {
        return Err(Error::device_not_found(format!(
            "Device '{typename}' not found"
        )));
    };
    if !types::is_a(t.name, types::TYPE_DEVICE) {
        return Err(Error::generic("Parameter 'typename' expects device"));
    }
    if t.is_abstract {
        return Err(Error::generic(
            "Parameter 'typename' expects non-abstract device type",
        ));
    }
    let Some(props) = qdev_properties(typename) else {
        return Err(Error::generic(format!(
            "device-list-properties of '{typename}' is not supported by vmm yet"
        )));
    };
    let mut out: Vec<DevicePropertyInfo> = instance_extras(typename)
        .into_iter()
        .map(|(name, type_name)| DevicePropertyInfo {
            name: name.to_string(),
            r#type: type_name,
            description: None,
        })
        .collect();
    out.extend(props.into_iter().map(|p| DevicePropertyInfo {
        name: p.name,
        r#type: p.type_name,
        description: p.description.map(str::to_string),
    }));
    Ok(out)
}
