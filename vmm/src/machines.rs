//! The machine types vmm knows, as `query-machines` and `-machine help`
//! list them.

pub struct MachineType {
    pub name: &'static str,
    pub alias: Option<&'static str>,
    pub is_default: bool,
    pub cpu_max: i64,
    pub hotpluggable_cpus: bool,
    pub description: &'static str,
}

pub const MACHINE_TYPES: &[MachineType] = &[
    MachineType {
        name: "pc-i440fx-2.11",
        alias: Some("pc"),
        is_default: true,
        cpu_max: 255,
        hotpluggable_cpus: true,
        description: "Standard PC (i440FX + PIIX, 1996)",
    },
    MachineType {
        name: "none",
        alias: None,
        is_default: false,
        cpu_max: 1,
        hotpluggable_cpus: false,
        description: "empty machine",
    },
];

/// Finds a machine type by name or alias.
pub fn find(name: &str) -> Option<&'static MachineType> {
    MACHINE_TYPES
        .iter()
        .find(|m| m.name == name || m.alias == Some(name))
}
