//! `info qtree`: the buses and devices of the machine as QEMU 2.11's
//! qbus_print/qdev_print show them. Each bus lists its devices newest
//! first (QEMU inserts a bus's children at the head); each device shows
//! its GPIO lines, the qdev properties of its class and then of each
//! parent class (values from the object tree, QEMU's defaults where vmm
//! keeps none), what its bus knows of it (ISA interrupts, PCI class, ids
//! and BARs as programmed now, sysbus MMIO), then its own buses.
//!
//! Only what vmm builds is shown: no HPET, fw_cfg, DMA, floppy, speaker,
//! port92, vmport, SMBus or IDE buses.

use super::Ctx;
use crate::commands::Vmm;
use crate::hmp::parse::Args;
use crate::qom::tree::{ObjectId, Tree};
use devices::pci::host::FunctionInfo;
use qmp::Error;
use serde_json::Value;
use std::fmt::Write as _;

/// How QEMU's human-readable property printer shows a property's type.
#[derive(Clone, Copy)]
enum Kind {
    /// Any integer: `N (0xN)`, the hex of its 64-bit two's complement.
    Num,
    Bool,
    /// Strings, enums and links: quoted.
    Str,
    /// `N (human size)`.
    Size,
    /// A PCI device and function: `SS.F`.
    Devfn,
}

/// A property's default, for values vmm does not keep in its tree.
#[derive(Clone, Copy)]
enum Fallback {
    N(i64),
    B(bool),
    S(&'static str),
}

type Prop = (&'static str, Kind, Fallback);

use Fallback::{B, N, S};
use Kind::{Bool, Devfn, Num, Size, Str};

/// pci-device's properties (every PCI function ends with these).
const PCI_PROPS: &[Prop] = &[
    ("addr", Devfn, N(-1)),
    ("romfile", Str, S("")),
    ("rombar", Num, N(1)),
    ("multifunction", Bool, B(false)),
    ("command_serr_enable", Bool, B(true)),
    ("x-pcie-lnksta-dllla", Bool, B(true)),
    ("x-pcie-extcap-init", Bool, B(true)),
];

const VIRTIO_BLK_PCI_PROPS: &[Prop] = &[
    ("class", Num, N(0)),
    ("ioeventfd", Bool, B(true)),
    ("vectors", Num, N(0xffff_ffff)),
];

const VIRTIO_PCI_PROPS: &[Prop] = &[
    ("virtio-pci-bus-master-bug-migration", Bool, B(false)),
    ("disable-legacy", Str, S("auto")),
    ("disable-modern", Bool, B(false)),
    ("migrate-extra", Bool, B(true)),
    ("modern-pio-notify", Bool, B(false)),
    ("x-disable-pcie", Bool, B(false)),
    ("page-per-vq", Bool, B(false)),
    ("x-ignore-backend-features", Bool, B(false)),
    ("ats", Bool, B(false)),
    ("x-pcie-deverr-init", Bool, B(true)),
    ("x-pcie-lnkctl-init", Bool, B(true)),
    ("x-pcie-pm-init", Bool, B(true)),
];

const VIRTIO_BLK_PROPS: &[Prop] = &[
    ("drive", Str, S("")),
    ("logical_block_size", Num, N(512)),
    ("physical_block_size", Num, N(512)),
    ("min_io_size", Num, N(0)),
    ("opt_io_size", Num, N(0)),
    ("discard_granularity", Num, N(0xffff_ffff)),
    ("write-cache", Str, S("auto")),
    ("share-rw", Bool, B(false)),
    ("rerror", Str, S("auto")),
    ("werror", Str, S("auto")),
    ("cyls", Num, N(0)),
    ("heads", Num, N(0)),
    ("secs", Num, N(0)),
    ("serial", Str, S("")),
    ("config-wce", Bool, B(true)),
    ("scsi", Bool, B(false)),
    ("request-merging", Bool, B(true)),
    ("num-queues", Num, N(1)),
    ("iothread", Str, S("")),
];

/// virtio-device's feature bits.
const VIRTIO_DEVICE_PROPS: &[Prop] = &[
    ("indirect_desc", Bool, B(true)),
    ("event_idx", Bool, B(true)),
    ("notify_on_empty", Bool, B(true)),
    ("any_layout", Bool, B(true)),
    ("iommu_platform", Bool, B(false)),
];

const PIIX4_PM_PROPS: &[Prop] = &[
    ("smb_io_base", Num, N(0)),
    ("disable_s3", Num, N(0)),
    ("disable_s4", Num, N(0)),
    ("s4_val", Num, N(2)),
    ("acpi-pci-hotplug-with-bridge-support", Bool, B(true)),
    ("memory-hotplug-support", Bool, B(true)),
];

const I440FX_PCIHOST_PROPS: &[Prop] = &[
    ("pci-hole64-size", Size, N(1 << 31)),
    ("short_root_bus", Num, N(0)),
    ("x-pci-hole64-fix", Bool, B(true)),
];

const ISA_SERIAL_PROPS: &[Prop] = &[
    ("index", Num, N(0xffff_ffff)),
    ("iobase", Num, N(0xffff_ffff)),
    ("irq", Num, N(0xffff_ffff)),
    ("chardev", Str, S("")),
    ("wakeup", Num, N(0)),
];

const RTC_PROPS: &[Prop] = &[
    ("base_year", Num, N(1980)),
    ("lost_tick_policy", Str, S("discard")),
];

const KVM_PIT_PROPS: &[Prop] = &[
    ("iobase", Num, N(0xffff_ffff)),
    ("lost_tick_policy", Str, S("delay")),
];

const DEBUG_EXIT_PROPS: &[Prop] = &[("iobase", Num, N(0x501)), ("iosize", Num, N(2))];

const KVM_IOAPIC_PROPS: &[Prop] = &[("gsi_base", Num, N(0))];

/// The class property lists of a device type, its own class first.
fn class_props(type_name: &str) -> Vec<&'static [Prop]> {
    match type_name {
        "virtio-blk-pci" => vec![VIRTIO_BLK_PCI_PROPS, VIRTIO_PCI_PROPS, PCI_PROPS],
        "virtio-blk-device" => vec![VIRTIO_BLK_PROPS, VIRTIO_DEVICE_PROPS],
        "PIIX4_PM" => vec![PIIX4_PM_PROPS, PCI_PROPS],
        "i440FX" | "PIIX3" | "piix3-ide" => vec![PCI_PROPS],
        "i440FX-pcihost" => vec![I440FX_PCIHOST_PROPS],
        "isa-serial" => vec![ISA_SERIAL_PROPS],
        "mc146818rtc" => vec![RTC_PROPS],
        "kvm-pit" => vec![KVM_PIT_PROPS],
        "isa-debug-exit" => vec![DEBUG_EXIT_PROPS],
        "kvm-ioapic" => vec![KVM_IOAPIC_PROPS],
        _ => Vec::new(),
    }
}

/// QEMU's size_to_str: three significant digits and a binary unit.
fn size_to_str(v: u64) -> String {
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    // The unit is chosen so that the number stays below 1000 (1000-1023
    // still count as the smaller unit, as in QEMU).
    let mut i = 0;
    while i + 1 < SUFFIXES.len() && (v as f64) / 1024f64.powi(i as i32) >= 1000.0 {
        i += 1;
    }
    let x = v as f64 / 1024f64.powi(i as i32);
    format!("{} {}B", g3(x), SUFFIXES[i])
}

/// printf's `%0.3g` for a value below 1024.
fn g3(x: f64) -> String {
    if x >= 999.5 {
        return "1e+03".to_string();
    }
    let digits = if x >= 99.95 {
        0
    } else if x >= 9.995 {
        1
    } else {
        2
    };
    let s = format!("{x:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// One property's value as qdev_print_props shows it.
fn format_value(kind: Kind, v: &Value) -> String {
    match kind {
        Kind::Num => {
            let n = v
                .as_i64()
                .or_else(|| v.as_u64().map(|u| u as i64))
                .unwrap_or(0);
            format!("{n} (0x{:x})", n as u64)
        }
        Kind::Bool => match v {
            Value::Bool(b) => b.to_string(),
            Value::String(s) => (s == "on" || s == "true").to_string(),
            _ => "false".to_string(),
        },
        Kind::Str => format!("\"{}\"", v.as_str().unwrap_or("")),
        Kind::Size => {
            let n = v.as_u64().unwrap_or(0);
            format!("{n} ({})", size_to_str(n))
        }
        Kind::Devfn => match v.as_i64() {
            Some(d) if d >= 0 => format!("{:02x}.{:x}", d >> 3, d & 7),
            _ => "<unset>".to_string(),
        },
    }
}

fn default_value(d: Fallback) -> Value {
    match d {
        N(n) => Value::from(n),
        B(b) => Value::from(b),
        S(s) => Value::from(s),
    }
}

/// A device of the tree, ready to print.
struct Dev {
    type_name: String,
    id: String,
    /// `gpio-in "" 24` and the like, without indentation.
    gpios: Vec<String>,
    props: Vec<(String, String)>,
    /// What the device's bus prints about it.
    bus_lines: Vec<String>,
    buses: Vec<BusNode>,
}

struct BusNode {
    name: String,
    type_name: String,
    /// Newest first, as QEMU prints them.
    devices: Vec<Dev>,
}

fn print_bus(out: &mut String, bus: &BusNode, indent: usize) {
    let _ = writeln!(out, "{:indent$}bus: {}", "", bus.name);
    let indent = indent + 2;
    let _ = writeln!(out, "{:indent$}type {}", "", bus.type_name);
    for d in &bus.devices {
        print_dev(out, d, indent);
    }
}

fn print_dev(out: &mut String, dev: &Dev, indent: usize) {
    let _ = writeln!(
        out,
        "{:indent$}dev: {}, id \"{}\"",
        "", dev.type_name, dev.id
    );
    let indent = indent + 2;
    for g in &dev.gpios {
        let _ = writeln!(out, "{:indent$}{g}", "");
    }
    for (name, value) in &dev.props {
        let _ = writeln!(out, "{:indent$}{name} = {value}", "");
    }
    for l in &dev.bus_lines {
        let _ = writeln!(out, "{:indent$}{l}", "");
    }
    for b in &dev.buses {
        print_bus(out, b, indent);
    }
}

/// The `id=` of a device: QEMU keeps `-device ...,id=X` devices at
/// /machine/peripheral/X, and only those have one.
fn qdev_id(tree: &Tree, obj: ObjectId) -> String {
    let path = tree.canonical_path(obj);
    match path.strip_prefix("/machine/peripheral/") {
        Some(id) if !id.contains('/') => id.to_string(),
        _ => String::new(),
    }
}

/// The class properties of `obj` with their values: from the tree where
/// vmm keeps them, else from `computed`, else QEMU's default.
fn props_of(
    tree: &Tree,
    obj: Option<ObjectId>,
    type_name: &str,
    computed: &[(&str, Value)],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for list in class_props(type_name) {
        for (name, kind, default) in list {
            let known = obj.and_then(|o| tree.get(o, name).ok());
            let value = known
                .or_else(|| {
                    computed
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                })
                .unwrap_or_else(|| default_value(*default));
            out.push((name.to_string(), format_value(*kind, &value)));
        }
    }
    out
}

/// A device from the object tree.
fn tree_dev(tree: &Tree, obj: ObjectId, computed: &[(&str, Value)]) -> Dev {
    let type_name = tree.type_name(obj).to_string();
    Dev {
        props: props_of(tree, Some(obj), &type_name, computed),
        id: qdev_id(tree, obj),
        type_name,
        gpios: Vec::new(),
        bus_lines: Vec::new(),
        buses: Vec::new(),
    }
}

/// A PCI function of the machine, with its object in the tree.
pub(super) struct PciDev {
    pub obj: ObjectId,
    pub type_name: String,
    pub info: FunctionInfo,
    pub config: [u8; 256],
}

impl PciDev {
    pub fn config_u16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.config[off], self.config[off + 1]])
    }
}

/// The machine's PCI functions in the order they were created (the
/// order of the bus's `child[N]` links in the object tree).
pub(super) fn pci_devices(vmm: &Vmm) -> Vec<PciDev> {
    let tree = &vmm.qom.tree;
    let Some(machine) = vmm.vm.machine.as_ref() else {
        return Vec::new();
    };
    let Ok(bus) = tree.resolve("/machine/i440fx/pci.0") else {
        return Vec::new();
    };
    let functions = machine.pci_functions();
    let mut out = Vec::new();
    for n in 0.. {
        let Ok(Value::String(path)) = tree.get(bus, &format!("child[{n}]")) else {
            break;
        };
        let Ok(obj) = tree.resolve(&path) else {
            continue;
        };
        let Some(devfn) = tree.get(obj, "addr").ok().and_then(|v| v.as_u64()) else {
            continue;
        };
        let (slot, function) = ((devfn >> 3) as u8, (devfn & 7) as u8);
        let Some(info) = functions
            .iter()
            .find(|f| f.slot == slot && f.function == function)
        else {
            continue;
        };
        let Some(config) = machine.pci_config((slot, function)) else {
            continue;
        };
        out.push(PciDev {
            obj,
            type_name: tree.type_name(obj).to_string(),
            info: info.clone(),
            config,
        });
    }
    out
}

/// What the PCI bus prints of a function (QEMU's pcibus_dev_print): its
/// class, address and ids, then every BAR as it is mapped now (an
/// unmapped one at all-ones).
fn pci_bus_lines(d: &PciDev) -> Vec<String> {
    let f = &d.info;
    let class = match f.class_description {
        Some(desc) => desc.to_string(),
        None => format!("Class {:04x}", f.class),
    };
    let mut lines = vec![format!(
        "class {class}, addr 00:{:02x}.{:x}, pci id {:04x}:{:04x} (sub {:04x}:{:04x})",
        f.slot,
        f.function,
        f.vendor,
        f.device,
        d.config_u16(devices::pci::config::SUBSYSTEM_VENDOR_ID),
        d.config_u16(devices::pci::config::SUBSYSTEM_ID),
    )];
    for &(bar, io, addr, size, _, _) in &f.regions {
        let last = addr.wrapping_add(size).wrapping_sub(1);
        lines.push(format!(
            "bar {bar}: {} at 0x{addr:x} [0x{last:x}]",
            if io { "i/o" } else { "mem" }
        ));
    }
    lines
}

/// A virtio-blk-pci: the proxy on pci.0 and, on its virtio-bus, the
/// virtio-blk-device.
fn virtio_blk_pci(tree: &Tree, d: &PciDev) -> Dev {
    let backend = tree.child(d.obj, "virtio-backend");
    let queues = backend
        .and_then(|b| tree.get(b, "num-queues").ok())
        .and_then(|v| v.as_i64())
        .unwrap_or(1);
    // Left unset, QEMU gives a virtio-blk-pci a vector per queue and one
    // for configuration changes.
    let mut dev = tree_dev(tree, d.obj, &[("vectors", Value::from(queues + 1))]);
    dev.bus_lines = pci_bus_lines(d);
    dev.buses.push(BusNode {
        name: "virtio-bus".into(),
        type_name: "virtio-pci-bus".into(),
        devices: backend
            .map(|b| tree_dev(tree, b, &[]))
            .into_iter()
            .collect(),
    });
    dev
}

/// The ISA devices of the object tree, in the order they were created:
/// the board's, then `-device` ones.
pub(super) fn isa_objects(tree: &Tree) -> Vec<ObjectId> {
    const ISA: [&str; 5] = [
        "mc146818rtc",
        "kvm-pit",
        "isa-serial",
        "i8042",
        "isa-debug-exit",
    ];
    let mut out = Vec::new();
    for container in [
        "/machine/unattached",
        "/machine/peripheral-anon",
        "/machine/peripheral",
    ] {
        let Ok(c) = tree.resolve(container) else {
            continue;
        };
        out.extend(
            tree.children(c)
                .map(|(_, id)| id)
                .filter(|id| ISA.contains(&tree.type_name(*id))),
        );
    }
    out
}

/// The in-kernel PICs: KVM's, at the PC's ports, master then slave.
fn kvm_i8259s() -> Vec<Dev> {
    [(0x20, 0x4d0, 0xf8, true), (0xa0, 0x4d1, 0xde, false)]
        .into_iter()
        .map(|(iobase, elcr, mask, master)| Dev {
            type_name: "kvm-i8259".into(),
            id: String::new(),
            gpios: Vec::new(),
            props: vec![
                ("iobase".into(), format_value(Num, &Value::from(iobase))),
                ("elcr_addr".into(), format_value(Num, &Value::from(elcr))),
                ("elcr_mask".into(), format_value(Num, &Value::from(mask))),
                ("master".into(), master.to_string()),
            ],
            bus_lines: Vec::new(),
            buses: Vec::new(),
        })
        .collect()
}

/// The ISA bus behind the PIIX3, newest device first.
fn isa_bus(tree: &Tree) -> BusNode {
    let mut devices = kvm_i8259s();
    for obj in isa_objects(tree) {
        let mut dev = tree_dev(tree, obj, &[]);
        match dev.type_name.as_str() {
            // vmm has no HPET, so the RTC drives ISA IRQ 8 itself.
            "mc146818rtc" => {
                dev.gpios.push("gpio-out \"\" 1".into());
                dev.bus_lines.push("isa irq 8".into());
            }
            "kvm-pit" => dev.gpios.push("gpio-in \"\" 1".into()),
            "isa-serial" => {
                if let Some(irq) = tree.get(obj, "irq").ok().and_then(|v| v.as_i64()) {
                    dev.bus_lines.push(format!("isa irq {irq}"));
                }
            }
            "i8042" => {
                dev.gpios.push("gpio-out \"a20\" 1".into());
                dev.bus_lines.push("isa irqs 1,12".into());
            }
            _ => {}
        }
        devices.push(dev);
    }
    devices.reverse();
    BusNode {
        name: "isa.0".into(),
        type_name: "ISA".into(),
        devices,
    }
}

/// pci.0 and what is on it, newest first.
fn pci_bus(vmm: &Vmm) -> BusNode {
    let tree = &vmm.qom.tree;
    let mut devices: Vec<Dev> = pci_devices(vmm)
        .iter()
        .map(|d| {
            if d.type_name == "virtio-blk-pci" {
                return virtio_blk_pci(tree, d);
            }
            let mut dev = tree_dev(tree, d.obj, &[]);
            dev.bus_lines = pci_bus_lines(d);
            if d.type_name == "PIIX3" {
                dev.buses.push(isa_bus(tree));
            }
            dev
        })
        .collect();
    devices.reverse();
    BusNode {
        name: "pci.0".into(),
        type_name: "PCI".into(),
        devices,
    }
}

/// The system bus: the host bridge, then (newer) the in-kernel IOAPIC.
fn system_bus(vmm: &Vmm) -> BusNode {
    let mut devices = Vec::new();
    let tree = &vmm.qom.tree;
    if let (Some(_), Ok(host)) = (vmm.vm.machine.as_ref(), tree.resolve("/machine/i440fx")) {
        let ioapic = Dev {
            type_name: "kvm-ioapic".into(),
            id: String::new(),
            gpios: vec!["gpio-in \"\" 24".into()],
            props: props_of(tree, None, "kvm-ioapic", &[]),
            bus_lines: vec![format!(
                "mmio {:016x}/{:016x}",
                super::mtree::IOAPIC_BASE,
                super::mtree::IOAPIC_SIZE
            )],
            buses: Vec::new(),
        };
        let mut pcihost = tree_dev(tree, host, &[]);
        pcihost.buses.push(pci_bus(vmm));
        devices.push(ioapic);
        devices.push(pcihost);
    }
    BusNode {
        name: "main-system-bus".into(),
        type_name: "System".into(),
        devices,
    }
}

/// `info qtree`.
pub(super) fn info_qtree(ctx: &mut Ctx<'_>, _: &Args) -> Result<(), Error> {
    let bus = system_bus(ctx.vmm);
    print_bus(&mut ctx.out, &bus, 0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_qemu_size_to_str_prints_them() {
        assert_eq!(size_to_str(1 << 31), "2 GiB");
        assert_eq!(size_to_str(512), "512 B");
        assert_eq!(size_to_str(1536), "1.5 KiB");
        assert_eq!(size_to_str(10 << 20), "10 MiB");
        assert_eq!(size_to_str(100 << 20), "100 MiB");
        assert_eq!(size_to_str(u64::MAX), "16 EiB");
    }

    #[test]
    fn values_as_qdev_print_props_prints_them() {
        assert_eq!(format_value(Num, &Value::from(1016)), "1016 (0x3f8)");
        assert_eq!(format_value(Num, &Value::from(0)), "0 (0x0)");
        assert_eq!(
            format_value(Num, &Value::from(-1)),
            "-1 (0xffffffffffffffff)"
        );
        assert_eq!(format_value(Devfn, &Value::from(0x0b)), "01.3");
        assert_eq!(format_value(Str, &Value::from("d0")), "\"d0\"");
        assert_eq!(format_value(Bool, &Value::from(true)), "true");
    }
}
