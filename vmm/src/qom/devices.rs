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

/// The qdev (static) properties of a concrete device type vmm has.
pub fn qdev_properties(type_name: &str) -> Option<Vec<PropInfo>> {
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
        _ => return None,
    })
}

/// Children and links a device's instance init creates: (name, type).
pub fn instance_extras(type_name: &str) -> Vec<(&'static str, String)> {
    match type_name {
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
