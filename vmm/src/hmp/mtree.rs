//! `info mtree`: the machine's memory regions as QEMU 2.11's mtree_info
//! prints them: every address space's tree (`memory`, `I/O`, one per
//! vCPU, one bus-master space per PCI function), then every region an
//! alias points at. Regions are built from the machine as it is now:
//! the RAM split, the ports and MMIO of the devices vmm builds, and the
//! PCI BARs where the guest has them mapped (with the virtio and MSI-X
//! structures the function's capabilities place in them). With `-f`,
//! each address space's flat view: what the guest reaches at each
//! address once priorities and aliases are resolved, as QEMU renders it.

use super::qtree::{isa_objects, pci_devices, PciDev};
use super::Ctx;
use crate::commands::Vmm;
use crate::hmp::parse::Args;
use crate::qom::tree::Tree;
use devices::pci::config;
use qmp::Error;
use std::fmt::Write as _;
use std::rc::Rc;

/// The in-kernel IOAPIC's MMIO window.
pub(super) const IOAPIC_BASE: u64 = 0xfec0_0000;
pub(super) const IOAPIC_SIZE: u64 = 0x1000;
/// The local APICs' window, where MSI writes land.
const APIC_BASE: u64 = 0xfee0_0000;
const APIC_SIZE: u64 = 0x10_0000;
/// QEMU maps the APIC window over everything else.
const APIC_PRIORITY: i32 = 0x1000;
/// All 2^64 bytes, the size of QEMU's `system` and `pci` regions.
const WHOLE: u128 = 1 << 64;
/// Configuration space: the bus-master enable bit, the capability list.
const COMMAND_MASTER: u16 = 0x4;
const CAPABILITY_LIST: usize = 0x34;
const CAP_ID_MSIX: u8 = 0x11;
const CAP_ID_VENDOR: u8 = 0x09;

#[derive(Clone)]
struct Region {
    name: String,
    addr: u64,
    size: u128,
    priority: i32,
    ram: bool,
    enabled: bool,
    /// A container: only its subregions are reached (QEMU's regions
    /// without ops); the others answer where no subregion does.
    container: bool,
    /// The region this one is a window on, and where in it.
    alias: Option<(Rc<Region>, u64)>,
    children: Vec<Region>,
}

impl Region {
    fn io(name: &str, addr: u64, size: u64) -> Region {
        Region {
            name: name.to_string(),
            addr,
            size: u128::from(size),
            priority: 0,
            ram: false,
            enabled: true,
            container: false,
            alias: None,
            children: Vec::new(),
        }
    }

    fn alias(name: &str, addr: u64, size: u128, target: &Rc<Region>, offset: u64) -> Region {
        Region {
            alias: Some((target.clone(), offset)),
            size,
            ..Region::io(name, addr, 0)
        }
    }

    fn container(name: &str, addr: u64, size: u128) -> Region {
        Region {
            container: true,
            size,
            ..Region::io(name, addr, 0)
        }
    }

    fn priority(mut self, p: i32) -> Region {
        self.priority = p;
        self
    }

    fn with(mut self, children: Vec<Region>) -> Region {
        self.children = children;
        self
    }
}

/// The last byte of a region `size` bytes long at `start` (QEMU's
/// MR_SIZE: an empty region ends where it starts).
fn last(start: u64, size: u128) -> u64 {
    start.wrapping_add(size.saturating_sub(1) as u64)
}

/// One region and, two columns further in, its subregions by address
/// (higher priority first at the same address), as QEMU's
/// mtree_print_mr. Alias targets join `aliases` to be printed later.
fn print_region(
    out: &mut String,
    r: &Region,
    level: usize,
    base: u64,
    aliases: &mut Vec<Rc<Region>>,
) {
    out.push_str(&"  ".repeat(level));
    let start = base.wrapping_add(r.addr);
    let end = last(start, r.size);
    if start < base || end < start {
        out.push_str("[DETECTED OVERFLOW!] ");
    }
    let kind = if r.ram { "ram" } else { "i/o" };
    let disabled = if r.enabled { "" } else { " [disabled]" };
    let _ = write!(
        out,
        "{start:016x}-{end:016x} (prio {}, {kind}): ",
        r.priority
    );
    match &r.alias {
        Some((target, offset)) => {
            if !aliases.iter().any(|a| Rc::ptr_eq(a, target)) {
                aliases.push(target.clone());
            }
            let _ = writeln!(
                out,
                "alias {} @{} {offset:016x}-{:016x}{disabled}",
                r.name,
                target.name,
                last(*offset, r.size)
            );
        }
        None => {
            let _ = writeln!(out, "{}{disabled}", r.name);
        }
    }
    let mut children: Vec<&Region> = r.children.iter().collect();
    children.sort_by(|a, b| a.addr.cmp(&b.addr).then(b.priority.cmp(&a.priority)));
    for c in children {
        print_region(out, c, level + 1, start, aliases);
    }
}

/// One piece of a flat view: guest addresses [start, end) reach
/// `region` from `offset` on.
struct FlatRange {
    start: u128,
    end: u128,
    region: *const Region,
    name: String,
    priority: i32,
    ram: bool,
    offset: u128,
}

/// QEMU's render_memory_region: `r` at `base` (its parent's address),
/// seen through `clip`, adds what it answers for to `view` (kept by
/// address) where nothing rendered before it already answers. Higher
/// priorities render first; at equal priority the later subregion.
fn render(view: &mut Vec<FlatRange>, r: &Region, base: i128, clip: (i128, i128)) {
    if !r.enabled {
        return;
    }
    let base = base + i128::from(r.addr);
    let clip = (clip.0.max(base), clip.1.min(base + r.size as i128));
    if clip.0 >= clip.1 {
        return;
    }
    if let Some((target, offset)) = &r.alias {
        let base = base - i128::from(target.addr) - i128::from(*offset);
        return render(view, target, base, clip);
    }
    let mut order: Vec<usize> = (0..r.children.len()).collect();
    order.sort_by(|&a, &b| {
        r.children[b]
            .priority
            .cmp(&r.children[a].priority)
            .then(b.cmp(&a))
    });
    for i in order {
        render(view, &r.children[i], base, clip);
    }
    if r.container || (!r.ram && r.alias.is_none() && !r.children.is_empty()) {
        return;
    }
    // The gaps of [clip.0, clip.1) that nothing covers yet.
    let mut at = clip.0;
    let mut i = view.partition_point(|f| (f.end as i128) <= at);
    while at < clip.1 {
        let next = view
            .get(i)
            .map_or(clip.1, |f| (f.start as i128).clamp(at, clip.1));
        if next > at {
            view.insert(
                i,
                FlatRange {
                    start: at as u128,
                    end: next as u128,
                    region: r,
                    name: r.name.clone(),
                    priority: r.priority,
                    ram: r.ram,
                    offset: (at - base) as u128,
                },
            );
            i += 1;
        }
        match view.get(i) {
            Some(f) if (f.start as i128) < clip.1 => {
                at = f.end as i128;
                i += 1;
            }
            _ => break,
        }
    }
}

/// The flat view of `root`: rendered, then adjacent pieces of one region
/// joined (QEMU's flatview_simplify).
fn flatten(root: &Region) -> Vec<FlatRange> {
    let mut view = Vec::new();
    render(&mut view, root, 0, (0, WHOLE as i128));
    let mut out: Vec<FlatRange> = Vec::with_capacity(view.len());
    for f in view {
        if let Some(p) = out.last_mut() {
            if std::ptr::eq(p.region, f.region)
                && p.end == f.start
                && p.offset + (p.end - p.start) == f.offset
            {
                p.end = f.end;
                continue;
            }
        }
        out.push(f);
    }
    out
}

/// The region a flat view is made from (QEMU's
/// memory_region_get_flatview_root): through aliases that show their
/// whole target and containers whose one enabled child covers them at
/// 0; None when nothing is enabled.
fn flatview_root(r: &Region) -> Option<&Region> {
    let mut r = r;
    loop {
        if !r.enabled {
            return None;
        }
        if let Some((target, offset)) = &r.alias {
            if *offset == 0 && r.size >= target.size {
                r = target;
                continue;
            }
            return Some(r);
        }
        if r.container || !r.children.is_empty() {
            let mut enabled = r.children.iter().filter(|c| c.enabled);
            match (enabled.next(), enabled.next()) {
                (None, _) => return None,
                (Some(only), None) if only.addr == 0 && r.size >= only.size => {
                    r = only;
                    continue;
                }
                _ => return Some(r),
            }
        }
        return Some(r);
    }
}

/// `info mtree -f`: one flat view per distinct root, with the address
/// spaces that share it (QEMU prints them in its hash table's order,
/// vmm in the order of their first address space).
fn print_flat_views(out: &mut String, spaces: &[(String, Rc<Region>)]) {
    type View<'a> = (Option<&'a Region>, Vec<&'a (String, Rc<Region>)>);
    let mut views: Vec<View<'_>> = Vec::new();
    for space in spaces {
        let root = flatview_root(&space.1);
        let same = |v: &Option<&Region>| match (v, root) {
            (Some(a), Some(b)) => std::ptr::eq(*a, b),
            (None, None) => true,
            _ => false,
        };
        match views.iter_mut().find(|(v, _)| same(v)) {
            Some((_, list)) => list.push(space),
            None => views.push((root, vec![space])),
        }
    }
    for (n, (root, list)) in views.iter().enumerate() {
        let _ = writeln!(out, "FlatView #{n}");
        for (name, r) in list {
            let _ = write!(out, " AS \"{name}\", root: {}", r.name);
            if let Some((target, _)) = &r.alias {
                let _ = write!(out, ", alias {}", target.name);
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            " Root memory region: {}",
            root.map_or("(none)", |r| r.name.as_str())
        );
        let ranges = root.map(flatten).unwrap_or_default();
        if ranges.is_empty() {
            out.push_str("  No rendered FlatView\n\n");
            continue;
        }
        for f in ranges {
            let kind = if f.ram { "ram" } else { "i/o" };
            let _ = write!(
                out,
                "  {:016x}-{:016x} (prio {}, {kind}): {}",
                f.start as u64,
                (f.end - 1) as u64,
                f.priority,
                f.name
            );
            if f.offset != 0 {
                let _ = write!(out, " @{:016x}", f.offset as u64);
            }
            out.push('\n');
        }
        out.push('\n');
    }
}

/// What the guest reaches at physical address `addr`: the region's name
/// and whether it is RAM (None: nothing), as QEMU's memory_region_find
/// on the system memory answers.
pub(super) fn system_region_at(vmm: &Vmm, addr: u64) -> Option<(String, bool)> {
    let spaces = address_spaces(vmm);
    let (_, system) = spaces.first()?;
    flatten(system)
        .into_iter()
        .find(|f| f.start <= u128::from(addr) && u128::from(addr) < f.end)
        .map(|f| (f.name, f.ram))
}

/// The capabilities in a configuration space: (offset, id).
fn capabilities(cfg: &[u8; 256]) -> Vec<(usize, u8)> {
    let mut out = Vec::new();
    let mut at = usize::from(cfg[CAPABILITY_LIST] & 0xfc);
    // A list longer than the space has room for is a loop.
    while at >= 0x40 && out.len() < 48 {
        out.push((at, cfg[at]));
        at = usize::from(cfg[at + 1] & 0xfc);
    }
    out
}

fn cfg_u32(cfg: &[u8; 256], at: usize) -> u32 {
    u32::from_le_bytes([cfg[at], cfg[at + 1], cfg[at + 2], cfg[at + 3]])
}

/// The virtio structures a function's vendor capabilities place in BAR
/// `bar`: (name, offset, length), as QEMU names them.
fn virtio_structures(cfg: &[u8; 256], bar: usize) -> Vec<Region> {
    capabilities(cfg)
        .into_iter()
        .filter(|&(at, id)| id == CAP_ID_VENDOR && usize::from(cfg[at + 4]) == bar)
        .filter_map(|(at, _)| {
            let name = match cfg[at + 3] {
                1 => "virtio-pci-common",
                2 => "virtio-pci-notify",
                3 => "virtio-pci-isr",
                4 => "virtio-pci-device",
                _ => return None,
            };
            let (offset, len) = (cfg_u32(cfg, at + 8), cfg_u32(cfg, at + 12));
            Some(Region::io(name, u64::from(offset), u64::from(len)))
        })
        .collect()
}

/// The MSI-X table and pending bits a function places in BAR `bar`.
fn msix_structures(cfg: &[u8; 256], bar: usize) -> Vec<Region> {
    let mut out = Vec::new();
    for (at, id) in capabilities(cfg) {
        if id != CAP_ID_MSIX {
            continue;
        }
        let entries = u64::from(u16::from_le_bytes([cfg[at + 2], cfg[at + 3]]) & 0x7ff) + 1;
        let (table, pba) = (cfg_u32(cfg, at + 4), cfg_u32(cfg, at + 8));
        if (table & 7) as usize == bar {
            out.push(Region::io(
                "msix-table",
                u64::from(table & !7),
                entries * 16,
            ));
        }
        if (pba & 7) as usize == bar {
            let bits = entries.div_ceil(64) * 64;
            out.push(Region::io("msix-pba", u64::from(pba & !7), bits / 8));
        }
    }
    out
}

/// The region of one mapped BAR, named as QEMU names it.
fn bar_region(d: &PciDev, bar: usize, addr: u64, size: u64) -> Region {
    let virtio = virtio_structures(&d.config, bar);
    let msix = msix_structures(&d.config, bar);
    let name = if !virtio.is_empty() {
        "virtio-pci".to_string()
    } else if !msix.is_empty() {
        format!("{}-msix", d.type_name)
    } else if d.type_name.starts_with("virtio-") && bar == 0 {
        // A transitional device's legacy register block.
        "virtio-pci".to_string()
    } else if d.type_name == "piix3-ide" {
        "piix-bmdma-container".to_string()
    } else {
        format!("{}-bar{bar}", d.type_name)
    };
    let children: Vec<Region> = virtio.into_iter().chain(msix).collect();
    // BARs sit over whatever else is in the PCI space; one holding
    // structures is a container of them, as in QEMU.
    let bar = if children.is_empty() {
        Region::io(&name, addr, size)
    } else {
        Region::container(&name, addr, size.into())
    };
    bar.priority(1).with(children)
}

/// The mapped BARs of every function: (memory ones, I/O ones).
fn bar_regions(pci: &[PciDev]) -> (Vec<Region>, Vec<Region>) {
    let (mut mem, mut io) = (Vec::new(), Vec::new());
    for d in pci {
        for &(bar, is_io, addr, size, _, _) in &d.info.regions {
            if addr == u64::MAX {
                continue;
            }
            let r = bar_region(d, bar, addr, size);
            if is_io {
                io.push(r);
            } else {
                mem.push(r);
            }
        }
    }
    (mem, io)
}

/// The `system` region: RAM below 4 GiB, the PCI space under it all, the
/// IOAPIC and APIC windows, and RAM above 4 GiB.
fn system_region(vmm: &Vmm, pci_bars: Vec<Region>) -> Region {
    let root = Region::container("system", 0, WHOLE);
    let Some(m) = vmm.vm.machine.as_ref() else {
        return root;
    };
    let layout = m.ram_layout();
    let ram = Rc::new(guest_ram_region(vmm, layout.total()));
    let mut children = vec![
        Region::alias("ram-below-4g", 0, layout.below_4g.into(), &ram, 0),
        Region::container("pci", 0, WHOLE)
            .priority(-1)
            .with(pci_bars),
        Region::io("kvm-ioapic", IOAPIC_BASE, IOAPIC_SIZE),
        Region::io("kvm-apic-msi", APIC_BASE, APIC_SIZE).priority(APIC_PRIORITY),
    ];
    if layout.above_4g > 0 {
        children.push(Region::alias(
            "ram-above-4g",
            crate::machine::memory::FOUR_GIB,
            layout.above_4g.into(),
            &ram,
            layout.below_4g,
        ));
    }
    root.with(children)
}

/// `pc.ram`: one RAM region, or with `-numa node,memdev=` a container of
/// the backends' regions end to end (a RAM backend's region is named by
/// its id, a file backend's by its path, as QEMU names them).
fn guest_ram_region(vmm: &Vmm, total: u64) -> Region {
    let memdevs: Vec<(String, u64)> = vmm
        .numa
        .as_ref()
        .map(|n| {
            n.nodes
                .iter()
                .filter_map(|node| Some((node.memdev.clone()?, node.mem)))
                .collect()
        })
        .unwrap_or_default();
    if memdevs.is_empty() {
        return Region {
            ram: true,
            ..Region::io("pc.ram", 0, total)
        };
    }
    let mut at = 0;
    let mut children = Vec::new();
    for (path, size) in memdevs {
        let id = path.rsplit('/').next().unwrap_or(&path).to_string();
        let name = match vmm.qom.type_at(&format!("/objects/{id}")).as_deref() {
            Some("memory-backend-file") => format!("/objects/{id}"),
            _ => id,
        };
        children.push(Region {
            ram: true,
            ..Region::io(&name, at, size)
        });
        at += size;
    }
    Region::container("pc.ram", 0, u128::from(total)).with(children)
}

/// A u64 property of an object of the tree.
fn prop_u64(tree: &Tree, obj: crate::qom::tree::ObjectId, name: &str) -> Option<u64> {
    tree.get(obj, name).ok().and_then(|v| v.as_u64())
}

/// The ports of the ISA devices in the object tree.
fn isa_ports(tree: &Tree) -> Vec<Region> {
    let mut out = Vec::new();
    for obj in isa_objects(tree) {
        let iobase = prop_u64(tree, obj, "iobase").unwrap_or(0);
        match tree.type_name(obj) {
            "mc146818rtc" => out.push(Region::io("rtc", 0x70, 2)),
            "kvm-pit" => out.push(Region::io("kvm-pit", iobase, 4)),
            "isa-serial" => out.push(Region::io("serial", iobase, 8)),
            "i8042" => {
                out.push(Region::io("i8042-data", 0x60, 1));
                out.push(Region::io("i8042-cmd", 0x64, 1));
            }
            "isa-debug-exit" => {
                let size = prop_u64(tree, obj, "iosize").unwrap_or(2);
                out.push(Region::io("isa-debug-exit", iobase, size));
            }
            _ => {}
        }
    }
    out
}

/// The `io` region: KVM's PICs, the ISA devices, the ACPI PM block, PCI
/// configuration and reset, and the mapped I/O BARs.
fn io_region(vmm: &Vmm, pci: &[PciDev], pci_bars: Vec<Region>) -> Region {
    let root = Region::container("io", 0, 0x1_0000);
    if vmm.vm.machine.is_none() {
        return root;
    }
    use devices::acpi_pm::{PM1_CNT_OFFSET, PM1_EVT_OFFSET, PM_BASE, PM_LEN, PM_TMR_OFFSET};
    let mut children = vec![
        Region::io("kvm-pic", 0x20, 2),
        Region::io("kvm-pic", 0xa0, 2),
        Region::io("kvm-elcr", 0x4d0, 1),
        Region::io("kvm-elcr", 0x4d1, 1),
        Region::io("pci-conf-idx", 0xcf8, 4),
        // The reset register shares 0xcf9 with the address register.
        Region::io("piix3-reset-control", 0xcf9, 1).priority(1),
        Region::io("pci-conf-data", 0xcfc, 4),
    ];
    children.extend(isa_ports(&vmm.qom.tree));
    if pci.iter().any(|d| d.type_name == "PIIX4_PM") {
        children.push(
            Region::container("piix4-pm", PM_BASE, PM_LEN.into()).with(vec![
                Region::io("acpi-evt", PM1_EVT_OFFSET, 4),
                Region::io("acpi-cnt", PM1_CNT_OFFSET, 2),
                Region::io("acpi-tmr", PM_TMR_OFFSET, 4),
            ]),
        );
    }
    children.extend(pci_bars);
    root.with(children)
}

/// A function's bus-master space: a window on system memory, open only
/// while the function's bus-master bit is set.
fn bus_master_region(d: &PciDev, system: &Rc<Region>) -> Region {
    let mut window = Region::alias("bus master", 0, WHOLE, system, 0);
    window.enabled = d.config_u16(config::COMMAND) & COMMAND_MASTER != 0;
    Region::container("bus master container", 0, WHOLE).with(vec![window])
}

/// Every address space as (name, root), in the order QEMU creates them.
fn address_spaces(vmm: &Vmm) -> Vec<(String, Rc<Region>)> {
    let pci = pci_devices(vmm);
    let (mem_bars, io_bars) = bar_regions(&pci);
    let system = Rc::new(system_region(vmm, mem_bars));
    let io = Rc::new(io_region(vmm, &pci, io_bars));
    let mut spaces = vec![
        ("memory".to_string(), system.clone()),
        ("I/O".to_string(), io),
    ];
    let cpus = vmm.vm.machine.as_ref().map_or(0, |m| m.cpu_count());
    for i in 0..cpus {
        spaces.push((format!("cpu-memory-{i}"), system.clone()));
    }
    for d in &pci {
        spaces.push((d.type_name.clone(), Rc::new(bus_master_region(d, &system))));
    }
    spaces
}

/// `info mtree [-f]`.
pub(super) fn info_mtree(ctx: &mut Ctx<'_>, args: &Args) -> Result<(), Error> {
    let spaces = address_spaces(ctx.vmm);
    let out = &mut ctx.out;
    let flag = |name| args.get(name) == Some(&crate::hmp::parse::Arg::Bool(true));
    if flag("flatview") {
        print_flat_views(out, &spaces);
        // QEMU's -d dumps the radix tree it looks pages up in; vmm has
        // no such tree to show, and says so rather than invent one.
        if flag("dispatch_tree") {
            out.push_str(
                "(-d: vmm has no dispatch tree; it looks addresses up in the flat views above)\n",
            );
        }
        return Ok(());
    }
    let mut aliases = Vec::new();
    for (name, root) in spaces {
        let _ = writeln!(out, "address-space: {name}");
        print_region(out, &root, 1, 0, &mut aliases);
        out.push('\n');
    }
    // Printing a target may find further aliases: they join the queue.
    let mut i = 0;
    while let Some(target) = aliases.get(i).cloned() {
        let _ = writeln!(out, "memory-region: {}", target.name);
        print_region(out, &target, 1, 0, &mut aliases);
        out.push('\n');
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_print_as_mtree_prints_them() {
        let ram = Rc::new(Region {
            ram: true,
            ..Region::io("pc.ram", 0, 0x2000_0000)
        });
        let root = Region {
            size: WHOLE,
            ..Region::io("system", 0, 0)
        }
        .with(vec![
            Region::io("late", 0x1000, 0x10),
            Region::io("low", 0, 0x10).priority(-1),
            Region::alias("ram-below-4g", 0, 0x2000_0000, &ram, 0),
        ]);
        let mut aliases = Vec::new();
        let mut out = String::new();
        print_region(&mut out, &root, 1, 0, &mut aliases);
        assert_eq!(
            out,
            "  0000000000000000-ffffffffffffffff (prio 0, i/o): system\n\
             \x20   0000000000000000-000000001fffffff (prio 0, i/o): alias ram-below-4g @pc.ram 0000000000000000-000000001fffffff\n\
             \x20   0000000000000000-000000000000000f (prio -1, i/o): low\n\
             \x20   0000000000001000-000000000000100f (prio 0, i/o): late\n"
        );
        assert_eq!(aliases.len(), 1);
        assert_eq!(aliases[0].name, "pc.ram");
    }

    #[test]
    fn flat_views_resolve_priorities_aliases_and_containers() {
        let ram = Rc::new(Region {
            ram: true,
            ..Region::io("ram", 0, 0x4000)
        });
        // A container with RAM through an alias at 0x1000 (its second
        // half), a low-priority I/O region under all of it, and a
        // high-priority one punching a hole in the RAM.
        let root = Region::container("root", 0, 0x10000).with(vec![
            Region::alias("ram-part", 0x1000, 0x2000, &ram, 0x2000),
            Region::io("under", 0, 0x8000).priority(-1),
            Region::io("hole", 0x1800, 0x100).priority(2),
        ]);
        let got: Vec<(u128, u128, String, u128)> = flatten(&root)
            .into_iter()
            .map(|f| (f.start, f.end, f.name, f.offset))
            .collect();
        assert_eq!(
            got,
            [
                (0, 0x1000, "under".to_string(), 0),
                (0x1000, 0x1800, "ram".to_string(), 0x2000),
                (0x1800, 0x1900, "hole".to_string(), 0),
                (0x1900, 0x3000, "ram".to_string(), 0x2900),
                (0x3000, 0x8000, "under".to_string(), 0x3000),
            ]
        );
        // An alias showing all of its target is the target's view.
        let window = Region::container("bus", 0, 0x10000)
            .with(vec![Region::alias("all", 0, 0x4000, &ram, 0)]);
        assert!(std::ptr::eq(flatview_root(&window).expect("root"), &*ram));
    }

    #[test]
    fn capability_structures_of_a_virtio_function() {
        let mut cfg = [0u8; 256];
        cfg[CAPABILITY_LIST] = 0x40;
        // MSI-X: 2 vectors, table in BAR 1 at 0, pending bits at 0x800.
        cfg[0x40..0x4c].copy_from_slice(&[0x11, 0x50, 1, 0, 1, 0, 0, 0, 0x01, 0x08, 0, 0]);
        // virtio common configuration: BAR 4, 0x1000 bytes at 0.
        cfg[0x50..0x60].copy_from_slice(&[9, 0, 16, 1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0]);
        let v = virtio_structures(&cfg, 4);
        assert_eq!(v.len(), 1);
        assert_eq!(
            (v[0].name.as_str(), v[0].size),
            ("virtio-pci-common", 0x1000)
        );
        let m = msix_structures(&cfg, 1);
        let got: Vec<(&str, u64, u128)> = m
            .iter()
            .map(|r| (r.name.as_str(), r.addr, r.size))
            .collect();
        assert_eq!(got, [("msix-table", 0, 32), ("msix-pba", 0x800, 8)]);
    }
}
