//! `-numa`: the guest's NUMA nodes, their memory, their CPUs and the
//! distances between them, decoded and checked as QEMU 2.11 does it
//! (its options visitor for NumaOptions, then numa.c's rules and texts).
//! The machine turns the result into ACPI SRAT/SLIT tables and, with
//! `memdev=`, builds guest RAM from the named memory backends.

use crate::cmdline::numbers::{parse_i64, parse_size, parse_u64};
use crate::cmdline::Opts;

/// QEMU's MAX_NODES.
pub const MAX_NODES: usize = 128;
/// The distance of a node to itself (NUMA_DISTANCE_MIN).
pub const DISTANCE_MIN: u8 = 10;
/// Nodes whose memory QEMU sizes itself get multiples of 8 MiB (the pc
/// machine's numa_mem_align_shift), the last one the rest.
const AUTO_ALIGN: u64 = 8 << 20;
/// The longest range `cpus=A-B` may give (OPTS_VISITOR_RANGE_MAX).
const RANGE_MAX: u64 = 65536;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    /// Bytes of RAM in the node.
    pub mem: u64,
    /// `memdev=`: the memory backend (an id or QOM path) the node's RAM
    /// comes from.
    pub memdev: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaConfig {
    /// Node N at index N.
    pub nodes: Vec<NumaNode>,
    /// The node of each possible CPU, by CPU index (up to maxcpus).
    pub cpu_node: Vec<u16>,
    /// `-numa dist`: the full table, [src][dst], when any was given.
    pub distances: Option<Vec<Vec<u8>>>,
    /// Start-up warnings QEMU prints (CPUs left out of the mapping).
    pub warnings: Vec<String>,
}

/// Where each possible CPU sits: (socket, core, thread), as the pc
/// machine numbers its CPU slots.
#[derive(Debug, Clone, Copy)]
pub struct CpuSlots {
    pub maxcpus: u32,
    pub cores: u32,
    pub threads: u32,
}

impl CpuSlots {
    pub fn props(&self, index: u32) -> (i64, i64, i64) {
        let threads = self.threads.max(1);
        let cores = self.cores.max(1);
        (
            i64::from(index / (threads * cores)),
            i64::from((index / threads) % cores),
            i64::from(index % threads),
        )
    }
}

/// The options visitor's view of one `-numa` set: values by name, each
/// consumed once; what is left over is an invalid parameter.
struct Visit<'a> {
    opts: &'a Opts,
    used: Vec<&'a str>,
}

impl<'a> Visit<'a> {
    fn new(opts: &'a Opts) -> Visit<'a> {
        Visit {
            opts,
            used: Vec::new(),
        }
    }

    /// The last value of `name` (a scalar takes the last one given).
    fn scalar(&mut self, name: &'a str) -> Option<&'a str> {
        let v = self.opts.get(name)?;
        self.used.push(name);
        Some(v)
    }

    fn all(&mut self, name: &'a str) -> Vec<&'a str> {
        self.used.push(name);
        self.opts
            .items
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn uint(&mut self, name: &'a str, max: u64, type_name: &str) -> Result<Option<u64>, String> {
        let Some(s) = self.scalar(name) else {
            return Ok(None);
        };
        let v =
            parse_uint(s).ok_or_else(|| format!("Parameter '{name}' expects a uint64 value"))?;
        if v > max {
            return Err(format!("Parameter '{name}' expects {type_name}"));
        }
        Ok(Some(v))
    }

    fn int(&mut self, name: &'a str) -> Result<Option<i64>, String> {
        let Some(s) = self.scalar(name) else {
            return Ok(None);
        };
        parse_i64(s)
            .map(Some)
            .map_err(|_| format!("Parameter '{name}' expects an int64 value"))
    }

    fn required_uint(&mut self, name: &'a str, max: u64, type_name: &str) -> Result<u64, String> {
        self.uint(name, max, type_name)?
            .ok_or_else(|| format!("Parameter '{name}' is missing"))
    }

    /// Every parameter was consumed, or the first one that was not is
    /// invalid.
    fn finish(&self) -> Result<(), String> {
        match self
            .opts
            .items
            .iter()
            .find(|(k, _)| !self.used.contains(&k.as_str()))
        {
            Some((k, _)) => Err(format!("Invalid parameter '{k}'")),
            None => Ok(()),
        }
    }
}

/// An unsigned number as QEMU's parse_uint takes it: no sign.
fn parse_uint(s: &str) -> Option<u64> {
    if s.trim_start().starts_with('-') {
        return None;
    }
    parse_u64(s).ok()
}

/// `cpus=` values: numbers and `A-B` ranges, each checked as uint16.
fn cpu_list(values: &[&str]) -> Result<Vec<u16>, String> {
    let range_err = || "Parameter 'cpus' expects a uint64 value or range".to_string();
    let mut out = Vec::new();
    for v in values {
        let (lo, hi) = match parse_uint(v) {
            Some(n) => (n, n),
            None => {
                let (a, b) = v.split_once('-').ok_or_else(range_err)?;
                let a = parse_uint(a).ok_or_else(range_err)?;
                let b = parse_uint(b).ok_or_else(range_err)?;
                if a > b || b - a >= RANGE_MAX {
                    return Err(range_err());
                }
                (a, b)
            }
        };
        for n in lo..=hi {
            out.push(u16::try_from(n).map_err(|_| "Parameter 'cpus' expects uint16".to_string())?);
        }
    }
    Ok(out)
}

/// `mem=`: a size; a bare number counts in MiB, as QEMU keeps for
/// compatibility.
fn node_mem(s: &str) -> Result<u64, String> {
    let err = || "Parameter 'mem' expects a size value".to_string();
    let bytes = parse_size(s).map_err(|_| err())?;
    if s.ends_with(|c: char| c.is_ascii_digit() || c == '.') {
        return parse_size(&format!("{s}M")).map_err(|_| err());
    }
    Ok(bytes)
}

#[derive(Default)]
struct Builder {
    nodes: Vec<Option<NumaNode>>,
    count: usize,
    /// Whether nodes use memdev= (decided by the first node).
    memdevs: Option<bool>,
    /// The node of each CPU slot, once assigned.
    cpu_node: Vec<Option<u16>>,
    distance: Vec<Vec<u8>>,
    have_distance: bool,
}

impl Builder {
    fn present(&self, node: usize) -> bool {
        self.nodes.get(node).is_some_and(Option::is_some)
    }

    /// Puts the CPU slots matching the given ids (None: any) in `node`,
    /// as QEMU's machine_set_cpu_numa_node.
    fn assign_cpus(
        &mut self,
        slots: &CpuSlots,
        node: u16,
        socket: Option<i64>,
        core: Option<i64>,
        thread: Option<i64>,
    ) -> Result<(), String> {
        let mut matched = false;
        for i in 0..slots.maxcpus {
            let (s, c, t) = slots.props(i);
            if socket.is_some_and(|x| x != s)
                || core.is_some_and(|x| x != c)
                || thread.is_some_and(|x| x != t)
            {
                continue;
            }
            let slot = &mut self.cpu_node[i as usize];
            if let Some(n) = *slot {
                if n != node {
                    return Err(format!("CPU is already assigned to node-id: {n}"));
                }
            }
            *slot = Some(node);
            matched = true;
        }
        if matched {
            Ok(())
        } else {
            Err("no match found".into())
        }
    }

    fn node(
        &mut self,
        v: &mut Visit<'_>,
        slots: &CpuSlots,
        memdev_size: &dyn Fn(&str) -> Option<u64>,
    ) -> Result<(), String> {
        let nodeid = v.uint("nodeid", u64::from(u16::MAX), "uint16")?;
        let cpus = {
            let values = v.all("cpus");
            cpu_list(&values)?
        };
        let mem = v.scalar("mem").map(node_mem).transpose()?;
        let memdev = v.scalar("memdev").map(str::to_string);
        v.finish()?;
        let nodenr = nodeid.map_or(self.count, |n| n as usize);
        if nodenr >= MAX_NODES {
            return Err(format!("Max number of NUMA nodes reached: {nodenr}"));
        }
        if self.present(nodenr) {
            return Err(format!("Duplicate NUMA nodeid: {nodenr}"));
        }
        for cpu in cpus {
            if u32::from(cpu) >= slots.maxcpus {
                return Err(format!(
                    "CPU index ({cpu}) should be smaller than maxcpus ({})",
                    slots.maxcpus
                ));
            }
            let (s, c, t) = slots.props(u32::from(cpu));
            self.assign_cpus(slots, nodenr as u16, Some(s), Some(c), Some(t))?;
        }
        if mem.is_some() && memdev.is_some() {
            return Err("cannot specify both mem= and memdev=".into());
        }
        let uses_memdev = *self.memdevs.get_or_insert(memdev.is_some());
        if memdev.is_some() != uses_memdev {
            return Err("memdev option must be specified for either all or no nodes".into());
        }
        let mem = match &memdev {
            // QEMU's text for a backend it cannot find, ambiguous or not.
            Some(id) => memdev_size(id).ok_or_else(|| format!("memdev={id} is ambiguous"))?,
            None => mem.unwrap_or(0),
        };
        if self.nodes.len() <= nodenr {
            self.nodes.resize(nodenr + 1, None);
        }
        self.nodes[nodenr] = Some(NumaNode { mem, memdev });
        self.count += 1;
        Ok(())
    }

    fn dist(&mut self, v: &mut Visit<'_>) -> Result<(), String> {
        let src = v.required_uint("src", u64::from(u16::MAX), "uint16")? as usize;
        let dst = v.required_uint("dst", u64::from(u16::MAX), "uint16")? as usize;
        let val = v.required_uint("val", u64::from(u8::MAX), "uint8")? as u8;
        v.finish()?;
        if src >= MAX_NODES || dst >= MAX_NODES {
            return Err(format!(
                "Invalid node {}, max possible could be {MAX_NODES}",
                src.max(dst)
            ));
        }
        if !self.present(src) || !self.present(dst) {
            return Err("Source/Destination NUMA node is missing. Please use '-numa node' option to declare it first.".into());
        }
        if val < DISTANCE_MIN {
            return Err(format!(
                "NUMA distance ({val}) is invalid, it shouldn't be less than {DISTANCE_MIN}."
            ));
        }
        if src == dst && val != DISTANCE_MIN {
            return Err(format!(
                "Local distance of node {src} should be {DISTANCE_MIN}."
            ));
        }
        self.distance[src][dst] = val;
        self.have_distance = true;
        Ok(())
    }

    fn cpu(&mut self, v: &mut Visit<'_>, slots: &CpuSlots) -> Result<(), String> {
        let node = v.int("node-id")?;
        let socket = v.int("socket-id")?;
        let core = v.int("core-id")?;
        let thread = v.int("thread-id")?;
        v.finish()?;
        let Some(node) = node else {
            return Err("Missing mandatory node-id property".into());
        };
        if !usize::try_from(node).is_ok_and(|n| self.present(n)) {
            return Err(format!("Invalid node-id={node}, NUMA node must be defined with -numa node,nodeid=ID before it's used with -numa cpu,node-id=ID"));
        }
        self.assign_cpus(slots, node as u16, socket, core, thread)
    }
}

/// Decodes and checks every `-numa` against the CPUs and RAM size;
/// `memdev_size` gives the size of a memory backend by id or path. An
/// error names the option it comes from where QEMU's does. Without any
/// `-numa` there are no nodes (None).
pub fn configure(
    sets: &[Opts],
    slots: CpuSlots,
    ram_size: u64,
    memdev_size: &dyn Fn(&str) -> Option<u64>,
) -> Result<Option<NumaConfig>, String> {
    if sets.is_empty() {
        return Ok(None);
    }
    let mut b = Builder {
        cpu_node: vec![None; slots.maxcpus as usize],
        distance: vec![vec![0; MAX_NODES]; MAX_NODES],
        ..Builder::default()
    };
    for set in sets {
        let mut v = Visit::new(set);
        let r = match v.scalar("type") {
            None => Err("Parameter 'type' is missing".to_string()),
            Some("node") => b.node(&mut v, &slots, memdev_size),
            Some("dist") => b.dist(&mut v),
            Some("cpu") => b.cpu(&mut v, &slots),
            Some(other) => Err(format!("Invalid parameter '{other}'")),
        };
        r.map_err(|e| format!("{}: {e}", set.location))?;
    }
    // Node ids must leave no gaps; the highest missing one is reported.
    if let Some(missing) = (0..b.nodes.len()).rev().find(|&n| !b.present(n)) {
        return Err(format!("numa: Node ID missing: {missing}"));
    }
    let mut nodes: Vec<NumaNode> = b.nodes.into_iter().flatten().collect();
    let count = nodes.len() as u64;
    if nodes.iter().all(|n| n.mem == 0) {
        // Spread RAM over the nodes in aligned parts, carrying each
        // node's rounding over to the next.
        let share = ram_size / count;
        let mut carried = 0;
        let mut used = 0;
        for n in nodes.iter_mut().take(count as usize - 1) {
            let mem = (share + carried) & !(AUTO_ALIGN - 1);
            carried = share + carried - mem;
            n.mem = mem;
            used += mem;
        }
        if let Some(last) = nodes.last_mut() {
            last.mem = ram_size - used;
        }
    }
    let total: u64 = nodes.iter().map(|n| n.mem).sum();
    if total != ram_size {
        return Err(format!(
            "total memory for NUMA nodes (0x{total:x}) should equal RAM size (0x{ram_size:x})"
        ));
    }
    let distances = b
        .have_distance
        .then(|| complete_distances(&b.distance, nodes.len()))
        .transpose()?;
    // CPUs no -numa placed: by socket when none was placed, else node 0
    // with QEMU's warnings.
    let any_placed = b.cpu_node.iter().any(Option::is_some);
    let mut left_out = Vec::new();
    let cpu_node = b
        .cpu_node
        .iter()
        .enumerate()
        .map(|(i, n)| match n {
            Some(n) => *n,
            None if !any_placed => (slots.props(i as u32).0 as u64 % count) as u16,
            None => {
                let (s, c, t) = slots.props(i as u32);
                left_out.push(format!(
                    "CPU {i} [socket-id: {s}, core-id: {c}, thread-id: {t}]"
                ));
                0
            }
        })
        .collect();
    let mut warnings = Vec::new();
    if !left_out.is_empty() {
        warnings.push(format!(
            "CPU(s) not present in any NUMA nodes: {}",
            left_out.join(", ")
        ));
        warnings.push("All CPU(s) up to maxcpus should be described in NUMA config, ability to start up with partial NUMA mappings is obsoleted and will be removed in future".into());
    }
    Ok(Some(NumaConfig {
        nodes,
        cpu_node,
        distances,
        warnings,
    }))
}

/// The distance table from what `-numa dist` gave: one direction of a
/// pair is enough while every pair is symmetric; once one pair differs,
/// every direction must be given.
// Each pair is read in both directions, so indices read best.
#[allow(clippy::needless_range_loop)]
fn complete_distances(given: &[Vec<u8>], count: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut asymmetric = false;
    for src in 0..count {
        for dst in src..count {
            let (a, b) = (given[src][dst], given[dst][src]);
            if a == 0 && b == 0 && src != dst {
                return Err(format!("The distance between node {src} and {dst} is missing, at least one distance value between each nodes should be provided."));
            }
            if a != 0 && b != 0 && a != b {
                asymmetric = true;
            }
        }
    }
    if asymmetric {
        for (src, row) in given.iter().enumerate().take(count) {
            if row
                .iter()
                .take(count)
                .enumerate()
                .any(|(dst, d)| src != dst && *d == 0)
            {
                return Err("At least one asymmetrical pair of distances is given, please provide distances for both directions of all node pairs.".into());
            }
        }
    }
    Ok((0..count)
        .map(|src| {
            (0..count)
                .map(|dst| match given[src][dst] {
                    0 if src == dst => DISTANCE_MIN,
                    0 => given[dst][src],
                    d => d,
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &str) -> Opts {
        let mut items = Vec::new();
        for (i, part) in s.split(',').enumerate() {
            match part.split_once('=') {
                Some((k, v)) => items.push((k.to_string(), v.to_string())),
                None if i == 0 => items.push(("type".to_string(), part.to_string())),
                None => items.push((part.to_string(), "on".to_string())),
            }
        }
        Opts {
            id: None,
            items,
            location: format!("-numa {s}"),
        }
    }

    const SLOTS: CpuSlots = CpuSlots {
        maxcpus: 4,
        cores: 2,
        threads: 1,
    };
    const MIB: u64 = 1 << 20;

    fn configure_with(args: &[&str], ram: u64) -> Result<Option<NumaConfig>, String> {
        let sets: Vec<Opts> = args.iter().map(|a| opts(a)).collect();
        configure(&sets, SLOTS, ram, &|id| (id == "m0").then_some(64 * MIB))
    }

    #[test]
    fn memory_is_spread_in_8_mib_steps_and_cpus_by_socket() {
        let c = configure_with(&["node", "node", "node"], 100 * MIB)
            .unwrap()
            .unwrap();
        let mems: Vec<u64> = c.nodes.iter().map(|n| n.mem).collect();
        assert_eq!(mems, [32 * MIB, 32 * MIB, 36 * MIB]);
        // Sockets 0, 0, 1, 1 (two cores each) over three nodes.
        assert_eq!(c.cpu_node, [0, 0, 1, 1]);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn bare_mem_counts_in_mib_and_cpus_take_ranges() {
        let c = configure_with(&["node,mem=96,cpus=0-1", "node,mem=32M,cpus=2"], 128 * MIB)
            .unwrap()
            .unwrap();
        assert_eq!(c.nodes[0].mem, 96 * MIB);
        assert_eq!(c.cpu_node, [0, 0, 1, 0]);
        assert_eq!(
            c.warnings[0],
            "CPU(s) not present in any NUMA nodes: CPU 3 [socket-id: 1, core-id: 1, thread-id: 0]"
        );
    }

    #[test]
    fn qemu_texts_for_bad_nodes() {
        let e = |args: &[&str]| configure_with(args, 128 * MIB).unwrap_err();
        assert_eq!(
            e(&["node,nodeid=0", "node,nodeid=0"]),
            "-numa node,nodeid=0: Duplicate NUMA nodeid: 0"
        );
        assert_eq!(e(&["node,nodeid=1"]), "numa: Node ID missing: 0");
        assert_eq!(
            e(&["node,mem=64M,memdev=m0"]),
            "-numa node,mem=64M,memdev=m0: cannot specify both mem= and memdev="
        );
        assert_eq!(
            e(&["node,memdev=m0", "node,mem=64"]),
            "-numa node,mem=64: memdev option must be specified for either all or no nodes"
        );
        assert_eq!(
            e(&["node,memdev=mx"]),
            "-numa node,memdev=mx: memdev=mx is ambiguous"
        );
        assert_eq!(
            e(&["node,memdev=m0"]),
            "total memory for NUMA nodes (0x4000000) should equal RAM size (0x8000000)"
        );
        assert_eq!(
            e(&["node,cpus=4"]),
            "-numa node,cpus=4: CPU index (4) should be smaller than maxcpus (4)"
        );
        assert_eq!(
            e(&["node,foo=1"]),
            "-numa node,foo=1: Invalid parameter 'foo'"
        );
        assert_eq!(e(&["nodes"]), "-numa nodes: Invalid parameter 'nodes'");
        assert_eq!(
            e(&["node,nodeid=70000"]),
            "-numa node,nodeid=70000: Parameter 'nodeid' expects uint16"
        );
        assert_eq!(
            e(&["node,cpus=1-x"]),
            "-numa node,cpus=1-x: Parameter 'cpus' expects a uint64 value or range"
        );
    }

    #[test]
    fn distances_complete_symmetrically_and_are_checked() {
        let c = configure_with(&["node", "node", "dist,src=0,dst=1,val=20"], 128 * MIB)
            .unwrap()
            .unwrap();
        assert_eq!(c.distances, Some(vec![vec![10, 20], vec![20, 10]]));
        let e = |args: &[&str]| configure_with(args, 128 * MIB).unwrap_err();
        assert_eq!(
            e(&["node", "node", "node", "dist,src=0,dst=1,val=20"]),
            "The distance between node 0 and 2 is missing, at least one distance value between each nodes should be provided."
        );
        assert_eq!(
            e(&["node", "node", "dist,src=0,dst=1,val=5"]),
            "-numa dist,src=0,dst=1,val=5: NUMA distance (5) is invalid, it shouldn't be less than 10."
        );
        assert_eq!(
            e(&["node", "dist,src=0,dst=0,val=11"]),
            "-numa dist,src=0,dst=0,val=11: Local distance of node 0 should be 10."
        );
        assert_eq!(
            e(&["node", "dist,src=0,dst=1,val=20"]),
            "-numa dist,src=0,dst=1,val=20: Source/Destination NUMA node is missing. Please use '-numa node' option to declare it first."
        );
        assert_eq!(
            e(&["node", "dist,src=0,val=20"]),
            "-numa dist,src=0,val=20: Parameter 'dst' is missing"
        );
    }

    #[test]
    fn numa_cpu_places_sockets_and_refuses_reassignment() {
        let c = configure_with(
            &[
                "node",
                "node",
                "cpu,node-id=1,socket-id=0",
                "cpu,node-id=0,socket-id=1",
            ],
            128 * MIB,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.cpu_node, [1, 1, 0, 0]);
        let e = |args: &[&str]| configure_with(args, 128 * MIB).unwrap_err();
        assert_eq!(
            e(&["node,cpus=0", "node", "cpu,node-id=1,socket-id=0"]),
            "-numa cpu,node-id=1,socket-id=0: CPU is already assigned to node-id: 0"
        );
        assert_eq!(
            e(&["node", "cpu,socket-id=0"]),
            "-numa cpu,socket-id=0: Missing mandatory node-id property"
        );
        assert_eq!(
            e(&["node", "cpu,node-id=3"]),
            "-numa cpu,node-id=3: Invalid node-id=3, NUMA node must be defined with -numa node,nodeid=ID before it's used with -numa cpu,node-id=ID"
        );
        assert_eq!(
            e(&["node", "cpu,node-id=0,socket-id=9"]),
            "-numa cpu,node-id=0,socket-id=9: no match found"
        );
    }
}
