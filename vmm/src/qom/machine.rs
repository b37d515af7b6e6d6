//! The tree QEMU has after start, for what vmm builds: `/machine` with
//! its `peripheral`, `peripheral-anon` and `unattached` containers, the
//! CPUs at `/machine/unattached/device[N]` (the qom_path query-cpus
//! reports), the board's PCI functions and legacy ISA devices after
//! them, the i440FX host bridge at `/machine/i440fx` with its bus
//! `pci.0`, `-device` devices under `peripheral`/`peripheral-anon`, and
//! the `/objects` and `/chardevs` containers.

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
    /// Each CPU's NUMA node, by index (empty without `-numa`).
    pub nodes: Vec<u16>,
}

/// One function on PCI bus 0, as the machine has it (query-pci's view).
pub struct PciFunction {
    pub slot: u8,
    pub function: u8,
    pub vendor: u16,
    pub device: u16,
}

impl From<&::devices::pci::host::FunctionInfo> for PciFunction {
    fn from(f: &::devices::pci::host::FunctionInfo) -> PciFunction {
        PciFunction {
            slot: f.slot,
            function: f.function,
            vendor: f.vendor,
            device: f.device,
        }
    }
}

/// The QOM type of a PCI function the `pc` board creates itself, by its
/// vendor and device ID.
pub fn board_pci_type(vendor: u16, device: u16) -> Option<&'static str> {
    Some(match (vendor, device) {
        (0x8086, 0x1237) => "i440FX",
        (0x8086, 0x7000) => "PIIX3",
        (0x8086, 0x7010) => "piix3-ide",
        (0x8086, 0x7113) => "PIIX4_PM",
        _ => return None,
    })
}

/// A `-device virtio-blk-pci` (or `-drive if=virtio`) device.
pub struct VirtioBlkDevice {
    /// Where the machine placed it.
    pub slot: u8,
    pub drive: String,
    pub serial: String,
    pub logical_block_size: u64,
    pub physical_block_size: u64,
    pub num_queues: u64,
    pub config_wce: bool,
    /// cyls, heads, secs as realize leaves them (given or guessed).
    pub geometry: (u32, u32, u32),
    /// `disable-legacy` as realize leaves it: `auto` resolved, to `off` on
    /// the conventional PCI bus.
    pub disable_legacy: &'static str,
    /// The canonical path of the iothread it runs on (`iothread=`).
    pub iothread: Option<String>,
}

pub enum PeripheralKind {
    DebugExit { iobase: u16, iosize: u16 },
    VirtioBlk(VirtioBlkDevice),
}

/// A `-device` or `device_add` device the tree shows.
pub struct Peripheral {
    pub id: Option<String>,
    /// `/machine/peripheral/ID` or `/machine/peripheral-anon/device[N]`.
    pub path: String,
    pub kind: PeripheralKind,
    /// Added by device_add (QEMU marks every device created after
    /// machine init so, even before the guest first runs).
    pub hotplugged: bool,
}

/// The slot of `addr=SLOT[.FN]` (hex, `0x` allowed).
pub fn pci_slot(addr: &str) -> Option<u8> {
    let slot = addr.split('.').next().unwrap_or(addr);
    u8::from_str_radix(slot.trim_start_matches("0x"), 16)
        .ok()
        .filter(|n| *n < 32)
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
    /// Every function on PCI bus 0 (none without a machine).
    pub pci: Vec<PciFunction>,
    /// `-global PIIX4_PM.disable_s3`.
    pub disable_s3: u8,
    /// `-m`, in bytes (the PCI holes follow from it).
    pub ram_size: u64,
    /// `-global kvm-pit.lost_tick_policy` (delay or discard).
    pub pit_policy: &'static str,
}

fn common_device_props(
    store: PropertyStore,
    hotpluggable: bool,
    hotplugged: bool,
) -> PropertyStore {
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
            Value::from(hotplugged),
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
    let mut store = common_device_props(PropertyStore::for_device(id, type_name), false, false);
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

/// The i440FX host's PCI holes, as QEMU 2.11's pc-i440fx-2.11 computes
/// them from the RAM split (x-pci-hole64-fix on, a 2 GiB 64-bit hole
/// above the RAM, aligned to 1 GiB).
fn pci_host_props(store: PropertyStore, ram_size: u64) -> PropertyStore {
    let layout = crate::machine::memory::RamLayout::pc(ram_size);
    const GIB: u64 = 1 << 30;
    const HOLE64_SIZE: u64 = 1 << 31;
    let hole64_start = (crate::machine::memory::FOUR_GIB + layout.above_4g).div_ceil(GIB) * GIB;
    let hole64_end = (hole64_start + HOLE64_SIZE).div_ceil(GIB) * GIB;
    let ro = |n: &str, t: &str| PropInfo::new(n, t, Access::ReadOnly);
    store
        .with(
            PropInfo::new("short_root_bus", "uint32", Access::ReadWrite),
            Value::from(0),
        )
        .with(ro("pci-hole-start", "uint32"), Value::from(layout.below_4g))
        .with(ro("pci-hole-end", "uint32"), Value::from(0xfec0_0000u64))
        .with(ro("pci-hole64-start", "uint64"), Value::from(hole64_start))
        .with(ro("pci-hole64-end", "uint64"), Value::from(hole64_end))
        .with(
            PropInfo::new("pci-hole64-size", "size", Access::ReadWrite),
            Value::from(HOLE64_SIZE),
        )
        .with(
            PropInfo::new("x-pci-hole64-fix", "bool", Access::ReadWrite),
            Value::from(true),
        )
}

/// The I/O regions a device's instance init creates: (addr, size).
fn memory_region(device: &str, name: &str) -> PropertyStore {
    let (addr, size) = match (device, name) {
        ("i440FX-pcihost", "pci-conf-idx[0]") => (0xcf8u64, 4u64),
        ("i440FX-pcihost", "pci-conf-data[0]") => (0xcfc, 4),
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
    common_device_props(PropertyStore::for_device(None, &type_name), true, false)
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
        .with(
            // -1: no NUMA node (QEMU's CPU_UNSET_NUMA_NODE_ID).
            PropInfo::new("node-id", "int32", Access::ReadWrite),
            Value::from(t.nodes.get(index as usize).map_or(-1, |n| i32::from(*n))),
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
    /// runs (so vCPUs and board devices exist), with `pci` on its bus.
    pub fn from_config(
        config: &crate::cmdline::Config,
        has_machine: bool,
        pci: Vec<PciFunction>,
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
                nodes: Vec::new(),
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
            pci,
            disable_s3: crate::globals::disable_s3(config),
            ram_size: config.memory.size,
            pit_policy: crate::globals::pit_policy(config),
        }
    }
}

/// The PCI bus `pci.0` and what is on it, as devices join it.
pub struct PciBus {
    bus: ObjectId,
    /// Whether the bus has a hotplug handler (PIIX4 PM): only then are
    /// the devices on it hotpluggable.
    hotplug: bool,
    children: usize,
}

impl PciBus {
    /// `/machine/i440fx` (the host bridge) with its bus `pci.0`.
    fn new(tree: &mut Tree, machine: ObjectId, pci: &[PciFunction], ram_size: u64) -> PciBus {
        let host_type = "i440FX-pcihost";
        let host = tree
            .add_child(
                machine,
                "i440fx",
                host_type,
                Box::new(pci_host_props(
                    common_device_props(PropertyStore::for_device(None, host_type), false, false),
                    ram_size,
                )),
            )
            .unwrap_or(ROOT);
        for (extra, _) in devices::instance_extras(host_type) {
            let region = memory_region(host_type, extra);
            let _ = tree.add_child(host, extra, types::TYPE_MEMORY_REGION, Box::new(region));
        }
        let bus = tree
            .add_child(host, "pci.0", "PCI", Box::new(bus_state()))
            .unwrap_or(ROOT);
        tree.add_link(bus, "hotplug-handler", "hotplug-handler", None);
        PciBus {
            bus,
            hotplug: pci
                .iter()
                .any(|f| board_pci_type(f.vendor, f.device) == Some("PIIX4_PM")),
            children: 0,
        }
    }

    /// A realized PCI device at `devfn` named `name` under `parent`, with
    /// pci-device's properties, then `extra` ones; linked from the bus.
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        tree: &mut Tree,
        parent: ObjectId,
        name: &str,
        id: Option<String>,
        type_name: &str,
        devfn: u8,
        class_hotpluggable: bool,
        hotplugged: bool,
        multifunction: bool,
        romfile: &str,
        extra: Vec<(PropInfo, Value)>,
    ) -> ObjectId {
        let qdev = |n: &str, t: &str| PropInfo::new(n, t, Access::ReadWrite);
        let mut store = common_device_props(
            PropertyStore::for_device(id, type_name),
            class_hotpluggable && self.hotplug,
            hotplugged,
        )
        .with(qdev("addr", "int32"), Value::from(devfn))
        .with(qdev("romfile", "str"), Value::from(romfile))
        .with(qdev("rombar", "uint32"), Value::from(1))
        .with(qdev("multifunction", "bool"), Value::from(multifunction))
        .with(qdev("command_serr_enable", "bool"), Value::from(true))
        .with(qdev("x-pcie-lnksta-dllla", "bool"), Value::from(true))
        .with(qdev("x-pcie-extcap-init", "bool"), Value::from(true));
        for (info, value) in extra {
            store = store.with(info, value);
        }
        let dev = tree
            .add_child(parent, name, type_name, Box::new(store))
            .unwrap_or(ROOT);
        tree.add_link(dev, "parent_bus", "bus", Some(self.bus));
        tree.add_link(
            self.bus,
            &format!("child[{}]", self.children),
            type_name,
            Some(dev),
        );
        self.children += 1;
        if type_name == "PIIX4_PM" {
            tree.set_link(self.bus, "hotplug-handler", Some(dev));
        }
        dev
    }
}

/// A bus: realized with its parent device.
fn bus_state() -> PropertyStore {
    PropertyStore::new().with(
        PropInfo::new("realized", "bool", Access::ReadOnly),
        Value::from(true),
    )
}

/// The properties virtio-blk-pci shares with its virtio-blk-device.
fn virtio_blk_props(v: &VirtioBlkDevice) -> Vec<(PropInfo, Value)> {
    let qdev = |n: &str, t: &str| PropInfo::new(n, t, Access::ReadWrite);
    vec![
        (qdev("drive", "str"), Value::from(v.drive.clone())),
        (qdev("serial", "str"), Value::from(v.serial.clone())),
        (
            qdev("logical_block_size", "uint16"),
            Value::from(v.logical_block_size),
        ),
        (
            qdev("physical_block_size", "uint16"),
            Value::from(v.physical_block_size),
        ),
        (qdev("num-queues", "uint16"), Value::from(v.num_queues)),
        (qdev("config-wce", "bool"), Value::from(v.config_wce)),
        (qdev("cyls", "uint32"), Value::from(v.geometry.0)),
        (qdev("heads", "uint32"), Value::from(v.geometry.1)),
        (qdev("secs", "uint32"), Value::from(v.geometry.2)),
    ]
}

/// The proxy's properties: the shared ones and its own transport's.
fn virtio_blk_pci_props(v: &VirtioBlkDevice) -> Vec<(PropInfo, Value)> {
    let mut props = virtio_blk_props(v);
    props.push((
        PropInfo::new("disable-legacy", "OnOffAuto", Access::ReadWrite),
        Value::from(v.disable_legacy),
    ));
    props
}

/// virtio-blk-pci at `path`: the PCI proxy, its `virtio-backend` (the
/// virtio-blk-device) and the `virtio-bus` between them.
fn add_virtio_blk(tree: &mut Tree, pci: &mut PciBus, p: &Peripheral, v: &VirtioBlkDevice) {
    let (container, name) = p
        .path
        .rsplit_once('/')
        .unwrap_or(("/machine/peripheral-anon", &p.path));
    let parent = tree.container(container);
    let proxy = pci.add(
        tree,
        parent,
        name,
        p.id.clone(),
        "virtio-blk-pci",
        v.slot << 3,
        true,
        p.hotplugged,
        false,
        "efi-virtio.rom",
        virtio_blk_pci_props(v),
    );
    let mut backend = common_device_props(
        PropertyStore::for_device(None, "virtio-blk-device"),
        false,
        p.hotplugged,
    );
    for (info, value) in virtio_blk_props(v) {
        backend = backend.with(info, value);
    }
    let backend = tree
        .add_child(
            proxy,
            "virtio-backend",
            "virtio-blk-device",
            Box::new(backend),
        )
        .unwrap_or(ROOT);
    let bus = tree
        .add_child(proxy, "virtio-bus", "virtio-pci-bus", Box::new(bus_state()))
        .unwrap_or(ROOT);
    tree.add_link(bus, "hotplug-handler", "hotplug-handler", None);
    tree.add_link(bus, "child[0]", "virtio-blk-device", Some(backend));
    tree.add_link(backend, "parent_bus", "bus", Some(bus));
    // The device's iothread link, and the proxy's alias of it.
    let iothread = v.iothread.as_deref().and_then(|p| tree.resolve(p).ok());
    tree.add_link(backend, "iothread", "iothread", iothread);
    tree.add_link(proxy, "iothread", "iothread", iothread);
}

/// The tree for `d`, and its PCI bus where the machine has one.
/// The tree's root with the machine object and its containers, before
/// the machine's devices: `-object`s are created here first (guest RAM
/// may be made of memory backends), then [`populate`] adds the rest.
pub fn build_root(d: &MachineDescription) -> Tree {
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
    tree
}

/// The machine's buses and board devices, in the order QEMU's pc
/// machine creates them.
pub fn populate(tree: &mut Tree, d: &MachineDescription) -> Option<PciBus> {
    let machine = tree.container("/machine");
    let unattached = tree.container("/machine/unattached");
    let mut pci = d
        .cpus
        .is_some()
        .then(|| PciBus::new(tree, machine, &d.pci, d.ram_size));
    if let Some(t) = &d.cpus {
        for i in 0..t.count {
            let _ = tree.add_child(
                unattached,
                "device[*]",
                &types::cpu_type(&t.model),
                Box::new(cpu_state(i, t)),
            );
        }
    }
    // The board's PCI functions, as pc creates them after the CPUs.
    if let Some(bus) = &mut pci {
        for f in &d.pci {
            let Some(type_name) = board_pci_type(f.vendor, f.device) else {
                continue;
            };
            // PIIX4_PM's own properties, as vmm has them: no S4, no
            // SMBus, no ACPI PCI or memory hotplug.
            let extra = if type_name == "PIIX4_PM" {
                let qdev = |n: &str, t: &str| PropInfo::new(n, t, Access::ReadWrite);
                vec![
                    (qdev("disable_s3", "uint8"), Value::from(d.disable_s3)),
                    (qdev("disable_s4", "uint8"), Value::from(1)),
                    (qdev("s4_val", "uint8"), Value::from(2)),
                    (qdev("smb_io_base", "uint32"), Value::from(0)),
                    (
                        qdev("acpi-pci-hotplug-with-bridge-support", "bool"),
                        Value::from(false),
                    ),
                    (qdev("memory-hotplug-support", "bool"), Value::from(false)),
                ]
            } else {
                Vec::new()
            };
            bus.add(
                tree,
                unattached,
                "device[*]",
                None,
                type_name,
                (f.slot << 3) | f.function,
                false,
                false,
                type_name == "PIIX3",
                "",
                extra,
            );
        }
    }
    if d.cpus.is_some() {
        // The board's ISA devices, as the pc machine creates them.
        add_device(
            tree,
            unattached,
            "device[*]",
            None,
            "mc146818rtc",
            &[Value::from(2000), Value::from("discard")],
        );
        // The in-kernel PIT (KVM's, with its lost ticks re-injected:
        // QEMU's `delay`).
        add_device(
            tree,
            unattached,
            "device[*]",
            None,
            "kvm-pit",
            &[Value::from(0x40), Value::from(d.pit_policy)],
        );
        // COM1-COM4 at their PC ports and interrupts, one per -serial.
        let com = [(0x3f8, 4), (0x2f8, 3), (0x3e8, 4), (0x2e8, 3)];
        for (index, (chardev, (iobase, irq))) in d.serials.iter().zip(com).enumerate() {
            add_device(
                tree,
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
        add_device(tree, unattached, "device[*]", None, "i8042", &[]);
    }
    pci
}

/// A `-device` or `device_add` device joins the tree (`pci`: the
/// machine's PCI bus; a PCI device needs it).
pub fn add_peripheral(tree: &mut Tree, pci: Option<&mut PciBus>, p: &Peripheral) {
    match (&p.kind, pci) {
        (PeripheralKind::DebugExit { iobase, iosize }, _) => {
            let (container, name) = p.path.rsplit_once('/').unwrap_or(("", &p.path));
            let parent = tree.container(container);
            add_device(
                tree,
                parent,
                name,
                p.id.clone(),
                "isa-debug-exit",
                &[Value::from(*iobase), Value::from(*iosize)],
            );
        }
        (PeripheralKind::VirtioBlk(v), Some(bus)) => add_virtio_blk(tree, bus, p, v),
        (PeripheralKind::VirtioBlk(_), None) => {}
    }
}
