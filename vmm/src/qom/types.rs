//! The type registry: every QOM type vmm builds, with QEMU 2.11's names,
//! parents, abstract flags and interfaces, so that qom-list-types and
//! device-list-properties answer as QEMU's do.

/// One registered type.
#[derive(Debug)]
pub struct TypeDef {
    pub name: &'static str,
    /// None only for the roots (`object`, `interface`).
    pub parent: Option<&'static str>,
    pub is_abstract: bool,
    /// Interfaces this type itself declares (inherited ones come from
    /// its parents).
    pub interfaces: &'static [&'static str],
}

const fn ty(
    name: &'static str,
    parent: &'static str,
    is_abstract: bool,
    interfaces: &'static [&'static str],
) -> TypeDef {
    TypeDef {
        name,
        parent: Some(parent),
        is_abstract,
        interfaces,
    }
}

pub const TYPE_OBJECT: &str = "object";
pub const TYPE_DEVICE: &str = "device";
pub const TYPE_CONTAINER: &str = "container";
pub const TYPE_USER_CREATABLE: &str = "user-creatable";
pub const TYPE_MEMORY_BACKEND: &str = "memory-backend";
pub const TYPE_MEMORY_REGION: &str = "qemu:memory-region";
pub const TYPE_IRQ: &str = "irq";

const USER_CREATABLE: &[&str] = &[TYPE_USER_CREATABLE];

/// Everything vmm registers. Interfaces are abstract: QEMU never lists
/// them among instantiable types.
pub const TYPES: &[TypeDef] = &[
    TypeDef {
        name: TYPE_OBJECT,
        parent: None,
        is_abstract: true,
        interfaces: &[],
    },
    TypeDef {
        name: "interface",
        parent: None,
        is_abstract: true,
        interfaces: &[],
    },
    ty(TYPE_USER_CREATABLE, "interface", true, &[]),
    ty("hotplug-handler", "interface", true, &[]),
    ty("nmi", "interface", true, &[]),
    ty(TYPE_CONTAINER, TYPE_OBJECT, false, &[]),
    ty(TYPE_MEMORY_REGION, TYPE_OBJECT, false, &[]),
    ty(TYPE_IRQ, TYPE_OBJECT, false, &[]),
    // Machines: QEMU names a machine type's class `NAME-machine`.
    ty("machine", TYPE_OBJECT, true, &[]),
    ty(
        "generic-pc-machine",
        "machine",
        true,
        &["hotplug-handler", "nmi"],
    ),
    ty("pc-i440fx-2.11-machine", "generic-pc-machine", false, &[]),
    ty("none-machine", "machine", false, &[]),
    // Devices.
    ty(TYPE_DEVICE, TYPE_OBJECT, true, &[]),
    ty("sys-bus-device", TYPE_DEVICE, true, &[]),
    ty("isa-device", TYPE_DEVICE, true, &[]),
    ty("pci-device", TYPE_DEVICE, true, &[]),
    ty("isa-serial", "isa-device", false, &[]),
    ty("i8042", "isa-device", false, &[]),
    ty("mc146818rtc", "isa-device", false, &[]),
    ty("isa-debug-exit", "isa-device", false, &[]),
    ty("pit-common", "isa-device", true, &[]),
    ty("kvm-pit", "pit-common", false, &[]),
    ty("i440FX", "pci-device", false, &[]),
    ty("pci-piix3", "pci-device", true, &[]),
    ty("PIIX3", "pci-piix3", false, &[]),
    ty("pci-ide", "pci-device", true, &[]),
    ty("piix3-ide", "pci-ide", false, &[]),
    ty("PIIX4_PM", "pci-device", false, &["hotplug-handler"]),
    ty("pci-host-bridge", "sys-bus-device", true, &[]),
    ty("i440FX-pcihost", "pci-host-bridge", false, &[]),
    ty("virtio-pci", "pci-device", true, &[]),
    ty("virtio-blk-pci", "virtio-pci", false, &[]),
    ty("virtio-device", TYPE_DEVICE, true, &[]),
    ty("virtio-blk-device", "virtio-device", false, &[]),
    // Buses.
    ty("bus", TYPE_OBJECT, true, &[]),
    ty("PCI", "bus", false, &[]),
    ty("virtio-bus", "bus", true, &[]),
    ty("virtio-pci-bus", "virtio-bus", false, &[]),
    // CPUs: `MODEL-x86_64-cpu`; `host` derives from `max` as in QEMU.
    ty("cpu", TYPE_DEVICE, true, &[]),
    ty("x86_64-cpu", "cpu", true, &[]),
    ty("max-x86_64-cpu", "x86_64-cpu", false, &[]),
    ty("host-x86_64-cpu", "max-x86_64-cpu", false, &[]),
    ty("qemu64-x86_64-cpu", "x86_64-cpu", false, &[]),
    ty("kvm64-x86_64-cpu", "x86_64-cpu", false, &[]),
    // User-creatable objects.
    ty(TYPE_MEMORY_BACKEND, TYPE_OBJECT, true, USER_CREATABLE),
    ty("memory-backend-ram", TYPE_MEMORY_BACKEND, false, &[]),
    ty("memory-backend-file", TYPE_MEMORY_BACKEND, false, &[]),
    ty("secret", TYPE_OBJECT, false, USER_CREATABLE),
    ty("iothread", TYPE_OBJECT, false, USER_CREATABLE),
    ty("throttle-group", TYPE_OBJECT, false, USER_CREATABLE),
    ty("rng-backend", TYPE_OBJECT, true, USER_CREATABLE),
    ty("rng-random", "rng-backend", false, &[]),
    ty("rng-egd", "rng-backend", false, &[]),
    // The abstract base is not user-creatable itself; each kind is.
    ty("tls-creds", TYPE_OBJECT, true, &[]),
    ty("tls-creds-x509", "tls-creds", false, USER_CREATABLE),
    ty("tls-creds-anon", "tls-creds", false, USER_CREATABLE),
];

pub fn find(name: &str) -> Option<&'static TypeDef> {
    TYPES.iter().find(|t| t.name == name)
}

/// The QOM type of a CPU model (`qemu64` -> `qemu64-x86_64-cpu`).
pub fn cpu_type(model: &str) -> String {
    format!("{model}-x86_64-cpu")
}

/// The QOM type of a machine type (`pc-i440fx-2.11` -> `...-machine`).
pub fn machine_type(name: &str) -> String {
    format!("{name}-machine")
}

/// Whether `name` is `target` or derives from it, through parents or
/// interfaces (QEMU's object_class_dynamic_cast).
pub fn is_a(name: &str, target: &str) -> bool {
    let mut current = find(name);
    while let Some(t) = current {
        if t.name == target || t.interfaces.iter().any(|i| is_a(i, target)) {
            return true;
        }
        current = t.parent.and_then(find);
    }
    false
}

/// qom-list-types: concrete types unless `include_abstract`, limited to
/// those that are (or implement) `implements` when given. An unknown
/// `implements` matches nothing, as in QEMU.
pub fn list(implements: Option<&str>, include_abstract: bool) -> Vec<&'static TypeDef> {
    TYPES
        .iter()
        .filter(|t| include_abstract || !t.is_abstract)
        .filter(|t| implements.is_none_or(|i| is_a(t.name, i)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parent_and_interface_is_registered() {
        for t in TYPES {
            if let Some(p) = t.parent {
                assert!(find(p).is_some(), "{}: parent {p}", t.name);
            }
            for i in t.interfaces {
                assert!(is_a(i, "interface"), "{}: {i} is no interface", t.name);
            }
        }
    }

    #[test]
    fn ancestry_and_interfaces() {
        assert!(is_a("isa-serial", "device"));
        assert!(is_a("host-x86_64-cpu", "x86_64-cpu"));
        assert!(is_a("memory-backend-ram", TYPE_USER_CREATABLE));
        assert!(is_a("pc-i440fx-2.11-machine", "nmi"));
        assert!(!is_a("secret", "device"));
        assert!(list(Some("bogus"), true).is_empty());
        assert!(list(None, false).iter().all(|t| !t.is_abstract));
    }
}
