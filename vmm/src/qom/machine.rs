//! The tree QEMU has after start, for what vmm builds: `/machine` with
//! its `peripheral`, `peripheral-anon` and `unattached` containers, the
//! CPUs at `/machine/unattached/device[N]` (the qom_path query-cpus
//! reports), the legacy ISA devices after them, `-device` devices under
//! `peripheral`/`peripheral-anon`, and the `/objects` and `/chardevs`
//! containers.

use super::devices;
use super::props::{Access, NoProperties, PropInfo, PropertyStore};
use super::tree::{ObjectId, Tree, ROOT};
use super::types;
use serde_json::Value;

/// vCPUs as `-smp` and `-cpu` describe them.
pub struct CpuTopology {
    /// `-cpu` model (`qemu64`, `host`, `kvm64`).
    pub model: String,
    pub count: u32,
    pub cores: u32,
    pub threads: u32,
}

/// `-device isa-debug-exit,...`.
pub struct DebugExitDevice {
    pub id: Option<String>,
    pub iobase: u16,
    pub iosize: u16,
}

/// What the machine has, as main.rs knows it after building it.
pub struct MachineDescription {
    /// The machine type's full name (an alias resolved).
    pub machine_type: String,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub append: Option<String>,
    /// None when no KVM machine runs (`-machine none`, no kernel yet).
    pub cpus: Option<CpuTopology>,
    /// The chardev label behind each serial port, COM1 first.
    pub serials: Vec<String>,
    pub debug_exit: Option<DebugExitDevice>,
}

fn common_device_props(store: PropertyStore, hotpluggable: bool) -> PropertyStore {
    store
        .with(
            PropInfo::new("realized", "bool", Access::ReadWrite),
            Value::from(true),
        )
        .with(
            PropInfo::new("hotpluggable", "bool", Access::ReadOnly),
            Value::from(hotpluggable),
        )
        .with(
            PropInfo::new("hotplugged", "bool", Access::ReadWrite),
            Value::from(false),
        )
}

/// A realized device with its qdev property values (in the order of its
/// class's table), its instance-init children and links.
fn add_device(
    tree: &mut Tree,
    parent: ObjectId,
    name: &str,
    id: Option<String>,
    type_name: &str,
    values: &[Value],
) -> ObjectId {
    let mut store = common_device_props(PropertyStore::for_device(id, type_name), false);
    let table = devices::qdev_properties(type_name).unwrap_or_default();
    for (info, value) in table.into_iter().zip(values) {
        store = store.with(info, value.clone());
    }
    let dev = tree
        .add_child(parent, name, type_name, Box::new(store))
        .unwrap_or(ROOT);
    for (extra, kind) in devices::instance_extras(type_name) {
        if kind.starts_with("link<") {
            tree.add_link(dev, extra, types::TYPE_IRQ, None);
        } else {
            let region = memory_region(type_name, extra);
            let _ = tree.add_child(dev, extra, types::TYPE_MEMORY_REGION, Box::new(region));
        }
    }
    dev
}

/// The I/O regions a device's instance init creates: (addr, size).
fn memory_region(device: &str, name: &str) -> PropertyStore {
    let (addr, size) = match (device, name) {
        ("i8042", "i8042-data[0]") => (0x60u64, 1u64),
        ("i8042", "i8042-cmd[0]") => (0x64, 1),
        _ => (0, 0),
    };
    PropertyStore::new()
        .with(
            PropInfo::new("addr", "uint64", Access::ReadOnly),
            Value::from(addr),
        )
        .with(
            PropInfo::new("priority", "uint32", Access::ReadOnly),
            Value::from(0),
        )
        .with(
            PropInfo::new("size", "uint64", Access::ReadOnly),
            Value::from(size),
        )
}

fn cpu_state(index: u32, t: &CpuTopology) -> PropertyStore {
    let threads = t.threads.max(1);
    let cores = t.cores.max(1);
    let type_name = types::cpu_type(&t.model);
    common_device_props(PropertyStore::for_device(None, &type_name), true)
        .with(
            PropInfo::new("apic-id", "uint32", Access::ReadWrite),
            Value::from(
                crate::machine::cpuid::Topology {
                    sockets: 1,
                    cores,
                    threads,
                }
                .apic_id(index),
            ),
        )
        .with(
            PropInfo::new("socket-id", "int32", Access::ReadWrite),
            Value::from(index / (cores * threads)),
        )
        .with(
            PropInfo::new("core-id", "int32", Access::ReadWrite),
            Value::from((index / threads) % cores),
        )
        .with(
            PropInfo::new("thread-id", "int32", Access::ReadWrite),
            Value::from(index % threads),
        )
}

fn machine_state(d: &MachineDescription) -> PropertyStore {
    let s = |v: &Option<String>| Value::from(v.clone().unwrap_or_default());
    PropertyStore::new()
        .with(
            PropInfo::new("kernel", "string", Access::ReadWrite),
            s(&d.kernel),
        )
        .with(
            PropInfo::new("initrd", "string", Access::ReadWrite),
            s(&d.initrd),
        )
        .with(
            PropInfo::new("append", "string", Access::ReadWrite),
            s(&d.append),
        )
        .with(
            PropInfo::new("dump-guest-core", "bool", Access::ReadWrite),
            Value::from(true),
        )
        .with(
            PropInfo::new("mem-merge", "bool", Access::ReadWrite),
            Value::from(true),
        )
}

impl MachineDescription {
    /// What the command line asks for; `has_machine`: a KVM machine
    /// runs (so vCPUs and board devices exist).
    pub fn from_config(
        config: &crate::cmdline::Config,
        has_machine: bool,
        debug_exit: Option<(u16, u16)>,
    ) -> MachineDescription {
        use crate::cmdline::SerialTarget;
        let machine_type = crate::machines::find(&config.machine.type_name)
            .map_or(config.machine.type_name.as_str(), |m| m.name)
            .to_string();
        let model = config
            .cpu_model
            .as_deref()
            .and_then(|c| c.split(',').next())
            .unwrap_or("qemu64")
            .to_string();
        MachineDescription {
            machine_type,
            kernel: config.kernel.clone(),
            initrd: config.initrd.clone(),
            append: config.append.clone(),
            cpus: has_machine.then(|| CpuTopology {
                model,
                count: config.smp.cpus.max(1),
                cores: config.smp.cores,
                threads: config.smp.threads,
            }),
            serials: if has_machine {
                config
                    .serials
                    .iter()
                    .map(|s| match &s.target {
                        SerialTarget::New(c) => c.id.clone(),
                        SerialTarget::Existing(id) => id.clone(),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            debug_exit: debug_exit.filter(|_| has_machine).map(|(iobase, iosize)| {
                DebugExitDevice {
                    id: config
                        .devices
                        .iter()
                        .find(|d| d.get("driver") == Some("isa-debug-exit"))
                        .and_then(|d| d.id.clone()),
                    iobase,
                    iosize,
                }
            }),
        }
    }
}

pub fn build(d: &MachineDescription) -> Tree {
    let mut tree = Tree::new();
    let machine_type = types::machine_type(&d.machine_type);
    let machine = tree
        .add_child(ROOT, "machine", &machine_type, Box::new(machine_state(d)))
        .unwrap_or(ROOT);
    for c in ["peripheral-anon", "peripheral", "unattached"] {
        let _ = tree.add_child(machine, c, types::TYPE_CONTAINER, Box::new(NoProperties));
    }
    tree.container("/objects");
    tree.container("/chardevs");
    let unattached = tree.container("/machine/unattached");
    if let Some(t) = &d.cpus {
        for i in 0..t.count {
            let _ = tree.add_child(
                unattached,
                "device[*]",
                &types::cpu_type(&t.model),
                Box::new(cpu_state(i, t)),
            );
        }
        // The board's ISA devices, as the pc machine creates them.
        add_device(
            &mut tree,
            unattached,
            "device[*]",
            None,
            "mc146818rtc",
            &[Value::from(2000), Value::from("discard")],
        );
        // COM1-COM4 at their PC ports and interrupts, one per -serial.
        let com = [(0x3f8, 4), (0x2f8, 3), (0x3e8, 4), (0x2e8, 3)];
        for (index, (chardev, (iobase, irq))) in d.serials.iter().zip(com).enumerate() {
            add_device(
                &mut tree,
                unattached,
                "device[*]",
                None,
                "isa-serial",
                &[
                    Value::from(index),
                    Value::from(iobase),
                    Value::from(irq),
                    Value::from(chardev.clone()),
                    Value::from(0),
                ],
            );
        }
        add_device(&mut tree, unattached, "device[*]", None, "i8042", &[]);
    }
    if let Some(x) = &d.debug_exit {
        let (parent, name) = match &x.id {
            Some(id) => (tree.container("/machine/peripheral"), id.clone()),
            None => (
                tree.container("/machine/peripheral-anon"),
                "device[*]".to_string(),
            ),
        };
        add_device(
            &mut tree,
            parent,
            &name,
            x.id.clone(),
            "isa-debug-exit",
            &[Value::from(x.iobase), Value::from(x.iosize)],
        );
    }
    tree
}
