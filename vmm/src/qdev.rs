//! Creating devices: `-device` at start-up and `device_add`, one path
//! with QEMU 2.11's checks in its order (qdev-monitor.c): the driver,
//! the bus, hotplug, the place in the tree, the properties, then the
//! device itself on the machine and in the tree.

use crate::cmdline::Opts;
use crate::machine::{Machine, VirtioBlkSpec};
use crate::qom::machine::{Peripheral, PeripheralKind, VirtioBlkDevice};
use crate::qom::{devices, types, Qom};
use ::devices::virtio::block::Geometry;
use qmp::Error;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Where a device is created and when.
pub struct Plug<'a> {
    /// None with `-machine none`: no buses.
    pub machine: Option<&'a mut Machine>,
    pub qom: &'a mut Qom,
    pub block: &'a mut block::BlockGraph,
    /// device_add: QEMU creates it as a hot-plugged device (even before
    /// the guest first runs), where the command line cold-plugs.
    pub hotplug: bool,
    /// The guest has not run yet (`prelaunch`).
    pub prelaunch: bool,
}

/// QEMU's short names of the device types vmm has.
const ALIASES: &[(&str, &str)] = &[("virtio-blk", "virtio-blk-pci")];

/// Registered device types QEMU 2.11 does not let a user create: parts
/// of the board, wired up by it.
const NOT_USER_CREATABLE: &[&str] = &[
    "i440FX",
    "PIIX3",
    "PIIX4_PM",
    "i440FX-pcihost",
    "kvm-pit",
    "mc146818rtc",
];

/// QEMU 2.11 device types that vmm's device issues will bring: asked
/// for, they are "not available yet" rather than unknown.
const PLANNED: &[&str] = &[
    "e1000",
    "virtio-net-pci",
    "virtio-balloon-pci",
    "virtio-serial-pci",
    "virtconsole",
    "virtserialport",
    "ide-hd",
    "ide-cd",
    "ide-drive",
    "i6300esb",
    "ib700",
    "tpm-tis",
    "pvpanic",
    "VGA",
    "cirrus-vga",
    "usb-tablet",
];

/// The device types vmm builds, with the bus each plugs into: (type
/// name, bus type, bus name).
const BUILT: &[(&str, &str, &str)] = &[
    ("virtio-blk-pci", "PCI", "pci.0"),
    ("isa-debug-exit", "ISA", "isa.0"),
];

/// `driver=` to a device type, with qdev_get_device_class's errors.
fn device_type(driver: &str) -> Result<&'static str, Error> {
    let alias = types::find(driver)
        .is_none()
        .then(|| ALIASES.iter().find(|(a, _)| *a == driver).map(|(_, t)| *t))
        .flatten();
    let name = alias.unwrap_or(driver);
    if PLANNED.contains(&name) {
        return Err(not_built(name));
    }
    let Some(t) = types::find(name).filter(|t| types::is_a(t.name, types::TYPE_DEVICE)) else {
        return Err(Error::generic(match alias {
            Some(t) => format!("'{driver}' (alias '{t}') is not a valid device model name"),
            None => format!("'{driver}' is not a valid device model name"),
        }));
    };
    if t.is_abstract {
        return Err(Error::generic(
            "Parameter 'driver' expects non-abstract device type",
        ));
    }
    if NOT_USER_CREATABLE.contains(&t.name) {
        return Err(Error::generic(
            "Parameter 'driver' expects pluggable device type",
        ));
    }
    Ok(t.name)
}

/// A QEMU device type vmm does not build yet.
fn not_built(type_name: &str) -> Error {
    Error::generic(format!(
        "not available yet: device '{type_name}' has not landed in vmm"
    ))
}

/// The bus a device of `type_name` goes on: its type and name, with
/// qdev_device_add's errors for `bus=`.
fn find_bus(
    type_name: &str,
    bus: Option<&str>,
    has_machine: bool,
) -> Result<(&'static str, &'static str), Error> {
    let Some(&(_, bus_type, bus_name)) = BUILT.iter().find(|(t, _, _)| *t == type_name) else {
        return Err(not_built(type_name));
    };
    let Some(path) = bus else {
        if !has_machine {
            return Err(Error::generic(format!(
                "No '{bus_type}' bus found for device '{type_name}'"
            )));
        }
        return Ok((bus_type, bus_name));
    };
    // The buses the pc machine has, by name (and pci.0 by its QOM
    // path, as vmm took it before).
    let named = match path {
        "pci.0" | "/machine/i440fx/pci.0" => Some("PCI"),
        "isa.0" => Some("ISA"),
        _ => None,
    };
    match named.filter(|_| has_machine) {
        None => Err(Error::generic(format!("Bus '{path}' not found"))),
        Some(t) if t != bus_type => Err(Error::generic(format!(
            "Device '{type_name}' can't go on {t} bus"
        ))),
        Some(_) => Ok((bus_type, bus_name)),
    }
}

/// vmm has no ACPI PCI hotplug yet: a device can be added only before
/// the guest first runs, and never removed. ISA buses take no hotplug
/// in QEMU either.
fn check_hotplug(p: &Plug<'_>, type_name: &str, bus: (&str, &str)) -> Result<(), Error> {
    if !p.hotplug {
        return Ok(());
    }
    if bus.0 == "ISA" {
        return Err(bus_no_hotplug(bus.1));
    }
    if !p.prelaunch {
        return Err(device_no_hotplug(type_name));
    }
    Ok(())
}

/// QEMU's QERR_BUS_NO_HOTPLUG.
fn bus_no_hotplug(bus: &str) -> Error {
    Error::generic(format!("Bus '{bus}' does not support hotplugging"))
}

/// QEMU's QERR_DEVICE_NO_HOTPLUG.
fn device_no_hotplug(type_name: &str) -> Error {
    Error::generic(format!("Device '{type_name}' does not support hotplugging"))
}

/// Creates the device `opts` describes (`driver=`, `bus=`, properties;
/// its id in `opts.id`). The caller has checked the id.
pub fn device_add(p: &mut Plug<'_>, opts: &Opts) -> Result<(), Error> {
    let driver = opts
        .get("driver")
        .ok_or_else(|| Error::generic("Parameter 'driver' is missing"))?;
    let type_name = device_type(driver)?;
    let bus = find_bus(type_name, opts.get("bus"), p.machine.is_some())?;
    check_hotplug(p, type_name, bus)?;
    let path = p.qom.new_device_path(opts.id.as_deref());
    let kind = match type_name {
        "isa-debug-exit" => add_debug_exit(p, opts)?,
        _ => add_virtio_blk(p, opts, &path)?,
    };
    p.qom.add_peripheral(&Peripheral {
        id: opts.id.clone(),
        path,
        kind,
        hotplugged: p.hotplug,
    });
    Ok(())
}

/// The machine, which find_bus made sure exists.
fn machine<'m>(p: &'m mut Plug<'_>) -> Result<&'m mut Machine, Error> {
    p.machine
        .as_deref_mut()
        .ok_or_else(|| Error::generic("no machine"))
}

/// `isa-debug-exit,iobase=N,iosize=N` (QEMU's defaults 0x501, 2).
fn add_debug_exit(p: &mut Plug<'_>, d: &Opts) -> Result<PeripheralKind, Error> {
    devices::check_device_props("isa-debug-exit", &devices::ISA_DEBUG_EXIT, &d.items)
        .map_err(Error::generic)?;
    let num = |name: &str, default: u64| -> Result<u16, Error> {
        let v = d
            .get_number(name)
            .map_err(|e| Error::generic(e.to_string()))?
            .unwrap_or(default);
        u16::try_from(v).map_err(|_| {
            Error::generic(format!(
                "Property 'isa-debug-exit.{name}' doesn't take value {v}"
            ))
        })
    };
    let (iobase, iosize) = (num("iobase", 0x501)?, num("iosize", 2)?);
    machine(p)?
        .add_debug_exit(iobase, iosize)
        .map_err(|e| Error::generic(e.to_string()))?;
    Ok(PeripheralKind::DebugExit { iobase, iosize })
}

/// What `virtio-blk-pci,drive=ID[,addr=][,num-queues=][,serial=]
/// [,logical_block_size=][,physical_block_size=][,config-wce=]
/// [,disable-legacy=][,request-merging=]` asks for, checked.
struct VirtioBlkProps {
    config: ::devices::virtio::block::BlockConfig,
    slot: Option<u8>,
    legacy: bool,
    drive: String,
}

fn virtio_blk_props(d: &Opts) -> Result<VirtioBlkProps, String> {
    devices::check_device_props("virtio-blk-pci", &devices::VIRTIO_BLK_PCI, &d.items)?;
    let prop_err = |e: crate::cmdline::CmdlineError| e.to_string();
    // `auto` is a transitional device on the pc machine's conventional
    // PCI bus, as in QEMU; `on` a modern-only one.
    let legacy = match d.get("disable-legacy") {
        None | Some("auto") | Some("off") => true,
        Some("on") => false,
        Some(v) => {
            return Err(format!(
                "Parameter 'disable-legacy' does not accept value '{v}'"
            ))
        }
    };
    let num = |name: &str, default: u64| -> Result<u64, String> {
        Ok(d.get_number(name).map_err(prop_err)?.unwrap_or(default))
    };
    let block_size = |name: &str| -> Result<u32, String> {
        let v = num(name, 512)?;
        if !(512..=32768).contains(&v) || !v.is_power_of_two() {
            return Err(format!(
                "Property virtio-blk-device.{name} doesn't take value {v} (must be a power of two between 512 and 32768)"
            ));
        }
        Ok(v as u32)
    };
    let num_queues = num("num-queues", 1)?;
    if num_queues == 0 || num_queues > 64 {
        return Err("num-queues property must be larger than 0 and at most 64".into());
    }
    let slot =
        match d.get("addr") {
            None => None,
            Some(a) => Some(crate::qom::machine::pci_slot(a).ok_or_else(|| {
                format!("Property 'virtio-blk-pci.addr' doesn't take value '{a}'")
            })?),
        };
    let config = ::devices::virtio::block::BlockConfig {
        num_queues: num_queues as u16,
        logical_block_size: block_size("logical_block_size")?,
        physical_block_size: block_size("physical_block_size")?,
        serial: d.get("serial").unwrap_or_default().to_string(),
        config_wce: d.get_bool("config-wce").map_err(prop_err)?.unwrap_or(true),
        request_merging: d
            .get_bool("request-merging")
            .map_err(prop_err)?
            .unwrap_or(true),
        geometry: given_geometry(&num)?,
        // Resolved against the object tree when the device is added.
        iothread: None,
    };
    crate::blockdev::error_policies(d)?;
    let drive = d.get("drive").ok_or("drive property not set")?.to_string();
    Ok(VirtioBlkProps {
        config,
        slot,
        legacy,
        drive,
    })
}

/// `iothread=PATH`: the iothread object the path names, as QEMU's link
/// property resolves it (with its texts for an unknown, ambiguous or
/// wrong-typed path), claimed for this device's I/O loop; with its
/// canonical path.
fn claim_iothread(
    qom: &crate::qom::Qom,
    path: &str,
) -> Result<(::devices::platform::IoThreadHandle, String), Error> {
    use crate::qom::objects::iothread::IoThread;
    use crate::qom::tree::ResolveError;
    let tree = &qom.tree;
    let obj = match tree.resolve(path) {
        Ok(obj) => obj,
        Err(ResolveError::Ambiguous) => tree
            .resolve(&format!("/objects/{path}"))
            .ok()
            .filter(|o| tree.type_name(*o) == "iothread")
            .ok_or_else(|| {
                Error::generic(format!(
                    "Path '{path}' does not uniquely identify an object"
                ))
            })?,
        Err(ResolveError::NotFound) => {
            return Err(Error::device_not_found(format!(
                "Device '{path}' not found"
            )))
        }
    };
    let Some(iothread) = tree.state(obj).as_any().downcast_ref::<IoThread>() else {
        return Err(Error::generic(
            "Invalid parameter type for 'iothread', expected: iothread",
        ));
    };
    let handle = iothread
        .claim()
        .ok_or_else(|| Error::generic(format!("iothread '{path}' has no thread")))?;
    Ok((handle, tree.canonical_path(obj)))
}

/// The QOM type of what occupies PCI slot `slot`, for QEMU's error.
fn pci_occupant(machine: &Machine, slot: u8) -> &'static str {
    machine
        .pci_functions()
        .iter()
        .find(|f| f.slot == slot)
        .and_then(|f| crate::qom::machine::board_pci_type(f.vendor, f.device))
        .unwrap_or("virtio-blk-pci")
}

/// The slot a PCI device will take, with pci.c's errors.
fn pci_slot(machine: &Machine, asked: Option<u8>, type_name: &str) -> Result<u8, String> {
    match asked {
        Some(slot) if machine.pci_slot_in_use(slot) => Err(format!(
            "PCI: slot {slot} function 0 not available for {type_name}, in use by {}",
            pci_occupant(machine, slot)
        )),
        Some(slot) => Ok(slot),
        None => machine
            .free_pci_slot()
            .ok_or_else(|| format!("PCI: no slot/function available for {type_name}, all in use")),
    }
}

/// `cyls`, `heads`, `secs` as given (all 0: guess later), each checked
/// against QEMU's limits once any is given (blkconf_geometry).
fn given_geometry(num: &dyn Fn(&str, u64) -> Result<u64, String>) -> Result<Geometry, String> {
    let (cyls, heads, secs) = (num("cyls", 0)?, num("heads", 0)?, num("secs", 0)?);
    if (cyls, heads, secs) == (0, 0, 0) {
        return Ok(Geometry::default());
    }
    for (name, value, max) in [
        ("cyls", cyls, 65535),
        ("heads", heads, 255),
        ("secs", secs, 255),
    ] {
        if !(1..=max).contains(&value) {
            return Err(format!("{name} must be between 1 and {max}"));
        }
    }
    // In range: each fits in 32 bits.
    Ok(Geometry {
        cylinders: cyls as u32,
        heads: heads as u32,
        sectors: secs as u32,
    })
}

/// virtio-blk-pci on its drive: checked first, then the drive is
/// attached and the function added (the drive let go if that fails).
fn add_virtio_blk(p: &mut Plug<'_>, d: &Opts, path: &str) -> Result<PeripheralKind, Error> {
    let props = virtio_blk_props(d).map_err(Error::generic)?;
    let slot = pci_slot(machine(p)?, props.slot, "virtio-blk-pci").map_err(Error::generic)?;
    let blk = p
        .block
        .attach_device(&props.drive, &format!("{path}/virtio-backend"), true)
        .map_err(|e| Error::generic(e.message()))?
        .ok_or_else(|| {
            Error::generic(format!(
                "Property 'virtio-blk-device.drive' can't find value '{}'",
                props.drive
            ))
        })?;
    let iothread = match d.get("iothread") {
        Some(path) => match claim_iothread(p.qom, path) {
            Ok(found) => Some(found),
            Err(e) => {
                p.block.detach_device(&blk);
                return Err(e);
            }
        },
        None => None,
    };
    let sink = machine(p)?.event_sink();
    let disk =
        crate::blockdev::DiskBackend::attach(blk.clone(), d, sink).map_err(Error::generic)?;
    let mut config = props.config.clone();
    let iothread_path = iothread.as_ref().map(|(_, path)| path.clone());
    config.iothread = iothread.map(|(handle, _)| handle);
    if config.geometry == Geometry::default() {
        // Read below the backend, as QEMU's guess is not I/O the
        // statistics count.
        let mut mbr = [0u8; 512];
        let root = blk.root();
        let read = root
            .as_ref()
            .is_some_and(|n| n.size() >= 512 && n.read(0, &mut mbr).is_ok());
        config.geometry = Geometry::guess(blk.size(), read.then_some(&mbr));
    }
    let geometry = config.geometry;
    let spec = VirtioBlkSpec {
        backend: Arc::new(disk),
        config,
        slot: Some(slot),
        id: d.id.clone().unwrap_or_default(),
        legacy: props.legacy,
    };
    if let Err(e) = machine(p)?.add_virtio_blk(spec) {
        p.block.detach_device(&blk);
        return Err(Error::generic(e.to_string()));
    }
    Ok(PeripheralKind::VirtioBlk(VirtioBlkDevice {
        slot,
        drive: props.drive,
        serial: props.config.serial,
        logical_block_size: u64::from(props.config.logical_block_size),
        physical_block_size: u64::from(props.config.physical_block_size),
        num_queues: u64::from(props.config.num_queues),
        config_wce: props.config.config_wce,
        geometry: (geometry.cylinders, geometry.heads, geometry.sectors),
        disable_legacy: if props.legacy { "off" } else { "on" },
        iothread: iothread_path,
    }))
}

/// device_add's arguments as `-device` options, as QEMU's
/// qemu_opts_from_qdict makes them: the id checked (well formed, not
/// taken), strings as they are, numbers in decimal, booleans on/off,
/// anything else dropped.
pub fn opts_from_qmp(args: &Map<String, Value>, qom: &Qom) -> Result<Opts, Error> {
    let id = args.get("id").and_then(Value::as_str);
    if let Some(id) = id {
        if !crate::cmdline::id_wellformed(id) {
            return Err(Error::generic("Parameter 'id' expects an identifier"));
        }
        if qom.has_device_id(id) {
            return Err(Error::generic(format!("Duplicate ID '{id}' for device")));
        }
    }
    let items = args
        .iter()
        .filter(|(k, _)| *k != "id")
        .filter_map(|(k, v)| {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => if *b { "on" } else { "off" }.to_string(),
                _ => return None,
            };
            Some((k.clone(), s))
        })
        .collect();
    Ok(Opts {
        id: id.map(str::to_string),
        items,
        location: String::new(),
    })
}

/// device_del: QEMU finds the device (an id under
/// /machine/peripheral, or an absolute path) and refuses what cannot
/// be unplugged; vmm can unplug nothing yet.
pub fn device_del(qom: &Qom, id: &str) -> Result<(), Error> {
    let path = if id.starts_with('/') {
        id.to_string()
    } else {
        format!("/machine/peripheral/{id}")
    };
    let Some(type_name) = qom.type_at(&path) else {
        return Err(Error::device_not_found(format!("Device '{id}' not found")));
    };
    if !types::is_a(&type_name, types::TYPE_DEVICE) {
        return Err(Error::generic(format!("{id} is not a hotpluggable device")));
    }
    // QEMU asks the device's bus first, then its class.
    let bus = [
        ("isa-device", "isa.0"),
        ("virtio-device", "virtio-bus"),
        ("sys-bus-device", "main-system-bus"),
    ]
    .into_iter()
    .find(|(t, _)| types::is_a(&type_name, t));
    match bus {
        Some((_, bus)) => Err(bus_no_hotplug(bus)),
        None => Err(device_no_hotplug(&type_name)),
    }
}

/// The categories of QEMU's device list, in its order.
const CATEGORIES: &[&str] = &["Storage", "Input", "Misc", "Uncategorized"];

/// The device types a user may create, as `-device help` lists them:
/// (name, category, bus type).
const LISTED: &[(&str, &str, Option<&str>)] = &[
    ("piix3-ide", "Storage", Some("PCI")),
    ("virtio-blk-device", "Storage", Some("virtio-bus")),
    ("virtio-blk-pci", "Storage", Some("PCI")),
    ("i8042", "Input", Some("ISA")),
    ("isa-serial", "Input", Some("ISA")),
    ("isa-debug-exit", "Misc", Some("ISA")),
];

/// One line of the device list: `name "T", bus B, alias "A"`.
fn device_line(name: &str, bus: Option<&str>) -> String {
    let mut line = format!("name \"{name}\"");
    if let Some(bus) = bus {
        line.push_str(&format!(", bus {bus}"));
    }
    if let Some((alias, _)) = ALIASES.iter().find(|(_, t)| *t == name) {
        line.push_str(&format!(", alias \"{alias}\""));
    }
    line
}

/// `device_add help` (HMP): the device types by category, each sorted
/// by name, as QEMU's qdev_print_devinfos prints them; CPU models are
/// uncategorized.
pub fn device_list() -> String {
    let cpus: Vec<&str> = types::list(Some("cpu"), false)
        .into_iter()
        .map(|t| t.name)
        .collect();
    let mut out = String::new();
    for category in CATEGORIES {
        let mut lines: Vec<(&str, String)> = LISTED
            .iter()
            .filter(|(_, c, _)| c == category)
            .map(|(n, _, bus)| (*n, device_line(n, *bus)))
            .collect();
        if *category == "Uncategorized" {
            lines.extend(cpus.iter().map(|n| (*n, device_line(n, None))));
        }
        if lines.is_empty() {
            continue;
        }
        lines.sort_by_key(|(n, _)| n.to_lowercase());
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("{category} devices:\n"));
        for (_, l) in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

/// `device_add DRIVER,help` (HMP): the type's properties, one
/// `DRIVER.NAME=TYPE (DESCRIPTION)` a line, as qdev_device_help prints
/// them.
pub fn device_help(driver: &str) -> Result<String, Error> {
    let name = match types::find(driver) {
        Some(_) => driver,
        None => ALIASES
            .iter()
            .find(|(a, _)| *a == driver)
            .map_or(driver, |(_, t)| *t),
    };
    let mut out = String::new();
    for p in devices::list_properties(name)? {
        out.push_str(&format!("{name}.{}={}", p.name, p.r#type));
        match p.description {
            Some(d) => out.push_str(&format!(" ({d})\n")),
            None => out.push('\n'),
        }
    }
    Ok(out)
}
