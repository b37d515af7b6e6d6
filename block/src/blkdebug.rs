//! `blkdebug`: QEMU's error-injection filter. It passes requests to its
//! `image` child and fails them with a chosen errno when a rule says so.
//!
//! Rules come from the `inject-error` and `set-state` options and from a
//! configuration file (`config`, QEMU's ini format, also reached through
//! the `blkdebug:CONFIG:IMAGE` file name). Each rule waits for an event
//! (`write_aio`, `read_aio`, `flush_to_disk`, `pwritev`...) that the
//! block layer raises on this node; rules of the current state (0: any)
//! act when it comes: an `inject-error` rule becomes active (the first
//! one of an event replaces every active rule), a `set-state` rule moves
//! the state machine on (it starts in state 1). From then on every
//! request that touches the rule's sector (or any request without one)
//! fails with the rule's errno; a `once` rule goes away after its first
//! failure. Nothing in the child changes: a failed write writes nothing.
//!
//! `align`, `max-transfer`, `max-write-zero` and `max-discard` shape the
//! requests this node passes down as QEMU's block layer does: reads and
//! writes are widened to the alignment (writes read-modify-write the
//! edges) and split at the maximum, each piece checked against the
//! rules.

use crate::error::{strerror, BlockError, Result};
use crate::node::{Driver, Node};
use qmp::qapi::{BlkdebugEvent, BlockdevOptionsBlkdebug};
use serde_json::{Map, Value};
use std::io;
use std::sync::{Arc, Mutex};

const SECTOR: u64 = 512;
const INT_MAX: u64 = i32::MAX as u64;

#[derive(Clone, Debug)]
enum Action {
    Inject {
        errno: i32,
        /// Byte offset of the sector the rule is about (None: any).
        offset: Option<u64>,
        once: bool,
    },
    SetState {
        new_state: i64,
    },
}

#[derive(Clone, Debug)]
struct Rule {
    id: u64,
    event: BlkdebugEvent,
    /// The state the rule acts in (0: any).
    state: i64,
    action: Action,
}

/// The state machine and the rules, in the order QEMU defines them.
struct Rules {
    state: i64,
    rules: Vec<Rule>,
    /// Ids of the active `inject-error` rules, the first matching one
    /// wins.
    active: Vec<u64>,
}

pub(crate) struct BlkdebugDriver {
    image: Arc<Node>,
    config: Option<String>,
    /// The node's own options (not the child's), flattened, for the
    /// `json:` file name.
    options: Map<String, Value>,
    align: u64,
    max_transfer: u64,
    max_write_zero: u64,
    max_discard: u64,
    rules: Mutex<Rules>,
}

fn event_by_name(name: &str) -> Option<BlkdebugEvent> {
    BlkdebugEvent::ALL
        .iter()
        .copied()
        .find(|e| e.as_str() == name)
}

/// One `[inject-error]` or `[set-state]` group of a configuration file,
/// as its key/value pairs.
struct Group {
    inject: bool,
    items: Vec<(String, String)>,
}

/// Reads QEMU's ini format: `[group]` lines, `key = "value"` lines,
/// comments (`#`) and empty lines.
fn parse_config(text: &str) -> std::result::Result<Vec<Group>, ()> {
    let mut groups: Vec<Group> = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest.split(']').next().unwrap_or("");
            let name = name.split_whitespace().next().unwrap_or("");
            let inject = match name {
                "inject-error" => true,
                "set-state" => false,
                _ => return Err(()),
            };
            groups.push(Group {
                inject,
                items: Vec::new(),
            });
            continue;
        }
        let (key, value) = line.split_once('=').ok_or(())?;
        let key = key.trim();
        let value = value.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(());
        }
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.split_once('"'))
            .map(|(v, _)| v)
            .ok_or(())?;
        let group = groups.last_mut().ok_or(())?;
        group.items.push((key.to_string(), value.to_string()));
    }
    Ok(groups)
}

fn number(v: &str) -> Option<i64> {
    let v = v.trim();
    if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).ok().map(|n| n as i64);
    }
    v.parse::<i64>().ok()
}

fn onoff(v: &str) -> Option<bool> {
    match v {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

/// A rule from a configuration file group.
fn config_rule(g: &Group) -> std::result::Result<(BlkdebugEvent, i64, Action), ()> {
    let mut event = None;
    let (mut state, mut errno, mut sector, mut once, mut new_state) =
        (0i64, i64::from(libc::EIO), -1i64, false, 0i64);
    for (k, v) in &g.items {
        match (k.as_str(), g.inject) {
            ("event", _) => event = Some(event_by_name(v).ok_or(())?),
            ("state", _) => state = number(v).ok_or(())?,
            ("errno", true) => errno = number(v).ok_or(())?,
            ("sector", true) => sector = number(v).ok_or(())?,
            ("once", true) => once = onoff(v).ok_or(())?,
            ("immediately", true) => {
                onoff(v).ok_or(())?;
            }
            ("new_state", false) => new_state = number(v).ok_or(())?,
            _ => return Err(()),
        }
    }
    let event = event.ok_or(())?;
    let action = if g.inject {
        Action::Inject {
            errno: errno as i32,
            offset: (sector != -1).then(|| (sector as u64).wrapping_mul(SECTOR)),
            once,
        }
    } else {
        Action::SetState { new_state }
    };
    Ok((event, state, action))
}

/// Flattens an options object the way QEMU keeps them (`a.b`, `a.0.c`).
fn flatten(prefix: &str, v: &Value, out: &mut Map<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                flatten(&format!("{prefix}{k}."), x, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{prefix}{i}."), x, out);
            }
        }
        _ => {
            out.insert(prefix.trim_end_matches('.').to_string(), v.clone());
        }
    }
}

impl BlkdebugDriver {
    /// Opens the filter over `image` with `o`'s rules and limits, with
    /// QEMU's checks and texts.
    pub(crate) fn open(image: Arc<Node>, o: &BlockdevOptionsBlkdebug) -> Result<BlkdebugDriver> {
        let mut defs: Vec<(BlkdebugEvent, i64, Action)> = Vec::new();
        let mut config_sets = Vec::new();
        if let Some(path) = &o.config {
            let text = std::fs::read_to_string(path).map_err(|e| {
                BlockError::generic(format!(
                    "Could not read blkdebug config file: {}",
                    strerror(&e)
                ))
            })?;
            let parse_err = || BlockError::generic("Could not parse blkdebug config file");
            let groups = parse_config(&text).map_err(|()| parse_err())?;
            for g in &groups {
                let rule = config_rule(g).map_err(|()| parse_err())?;
                if g.inject {
                    defs.push(rule);
                } else {
                    config_sets.push(rule);
                }
            }
        }
        for r in o.inject_error.iter().flatten() {
            let sector = r.sector.unwrap_or(-1);
            defs.push((
                r.event,
                r.state.unwrap_or(0),
                Action::Inject {
                    errno: r.errno.unwrap_or(i64::from(libc::EIO)) as i32,
                    offset: (sector != -1).then(|| (sector as u64).wrapping_mul(SECTOR)),
                    once: r.once.unwrap_or(false),
                },
            ));
        }
        defs.extend(config_sets);
        for r in o.set_state.iter().flatten() {
            defs.push((
                r.event,
                r.state.unwrap_or(0),
                Action::SetState {
                    new_state: r.new_state,
                },
            ));
        }

        let align = o.align.unwrap_or(0) as u64;
        if align != 0 && (align >= INT_MAX || !align.is_power_of_two()) {
            return Err(BlockError::generic(format!(
                "Cannot meet constraints with align {align}"
            )));
        }
        let child_align = if image.flags.direct { SECTOR } else { 1 };
        let eff = align.max(child_align);
        let limit = |name: &str, v: Option<i32>, base: u64| -> Result<u64> {
            let v = v.unwrap_or(0) as i64 as u64;
            if v != 0 && (v >= INT_MAX || !v.is_multiple_of(base)) {
                return Err(BlockError::generic(format!(
                    "Cannot meet constraints with {name} {v}"
                )));
            }
            Ok(v)
        };
        let max_transfer = limit("max-transfer", o.max_transfer, eff)?;
        let opt_write_zero = limit("opt-write-zero", o.opt_write_zero, eff)?;
        let max_write_zero = limit("max-write-zero", o.max_write_zero, opt_write_zero.max(eff))?;
        let opt_discard = limit("opt-discard", o.opt_discard, eff)?;
        let max_discard = limit("max-discard", o.max_discard, opt_discard.max(eff))?;

        let mut options = Map::new();
        let mut own = Map::new();
        o.write_members(&mut own);
        own.remove("image");
        flatten("", &Value::Object(own), &mut options);
        Ok(BlkdebugDriver {
            image,
            config: o.config.clone(),
            options,
            align: eff,
            max_transfer,
            max_write_zero,
            max_discard,
            rules: Mutex::new(Rules {
                state: 1,
                rules: defs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (event, state, action))| Rule {
                        id: i as u64,
                        event,
                        state,
                        action,
                    })
                    .collect(),
                active: Vec::new(),
            }),
        })
    }

    fn rules(&self) -> std::sync::MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// QEMU's rule_check: the first active rule that covers the request
    /// fails it.
    fn check(&self, offset: u64, bytes: u64) -> io::Result<()> {
        let mut r = self.rules();
        let found = r.active.iter().copied().find_map(|id| {
            let rule = r.rules.iter().find(|x| x.id == id)?;
            match rule.action {
                Action::Inject {
                    errno,
                    offset: at,
                    once,
                } => {
                    let hit = match at {
                        None => true,
                        Some(at) => bytes != 0 && at >= offset && at - offset < bytes,
                    };
                    hit.then_some((id, errno, once))
                }
                Action::SetState { .. } => None,
            }
        });
        let Some((id, errno, once)) = found else {
            return Ok(());
        };
        if errno == 0 {
            return Ok(());
        }
        if once {
            r.active.retain(|x| *x != id);
            r.rules.retain(|x| x.id != id);
        }
        Err(io::Error::from_raw_os_error(errno))
    }

    /// Splits `[offset, offset+len)` at `max` (0: no limit).
    fn pieces(offset: u64, len: u64, max: u64) -> impl Iterator<Item = (u64, u64)> {
        let step = if max == 0 { len.max(1) } else { max };
        (0..len.div_ceil(step)).map(move |i| {
            let o = i * step;
            (offset + o, step.min(len - o))
        })
    }

    /// An aligned read, split at max-transfer, each piece checked.
    fn read_aligned(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        for (o, n) in Self::pieces(offset, buf.len() as u64, self.max_transfer) {
            self.check(o, n)?;
            let at = (o - offset) as usize;
            self.image.read(o, &mut buf[at..at + n as usize])?;
        }
        Ok(())
    }

    fn write_aligned(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        for (o, n) in Self::pieces(offset, buf.len() as u64, self.max_transfer) {
            self.check(o, n)?;
            let at = (o - offset) as usize;
            self.image.write(o, &buf[at..at + n as usize])?;
        }
        Ok(())
    }

    /// The aligned range around `[offset, offset+len)`, clipped to the
    /// image's end.
    fn widen(&self, offset: u64, len: u64) -> (u64, u64) {
        let start = offset - offset % self.align;
        let end = (offset + len)
            .div_ceil(self.align)
            .saturating_mul(self.align)
            .min(self.image.size().max(offset + len));
        (start, end - start)
    }

    fn aligned(&self, offset: u64, len: u64) -> bool {
        offset.is_multiple_of(self.align) && len.is_multiple_of(self.align)
    }
}

impl Driver for BlkdebugDriver {
    fn name(&self) -> &'static str {
        "blkdebug"
    }

    fn size(&self) -> u64 {
        self.image.size()
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.aligned(offset, buf.len() as u64) {
            return self.read_aligned(offset, buf);
        }
        let (start, len) = self.widen(offset, buf.len() as u64);
        let mut tmp = vec![0u8; len as usize];
        self.read_aligned(start, &mut tmp)?;
        let at = (offset - start) as usize;
        buf.copy_from_slice(&tmp[at..at + buf.len()]);
        Ok(())
    }

    fn write(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if self.aligned(offset, buf.len() as u64) {
            return self.write_aligned(offset, buf);
        }
        // Read-modify-write of the unaligned edges, with QEMU's events.
        let (start, len) = self.widen(offset, buf.len() as u64);
        let mut tmp = vec![0u8; len as usize];
        let head = !offset.is_multiple_of(self.align);
        let tail = !(offset + buf.len() as u64).is_multiple_of(self.align);
        if head {
            self.debug_event(BlkdebugEvent::PwritevRmwHead);
            self.read_aligned(start, &mut tmp[..self.align.min(len) as usize])?;
            self.debug_event(BlkdebugEvent::PwritevRmwAfterHead);
        }
        if tail {
            self.debug_event(BlkdebugEvent::PwritevRmwTail);
            let t = len.saturating_sub(self.align);
            self.read_aligned(start + t, &mut tmp[t as usize..])?;
            self.debug_event(BlkdebugEvent::PwritevRmwAfterTail);
        }
        let at = (offset - start) as usize;
        tmp[at..at + buf.len()].copy_from_slice(buf);
        self.write_aligned(start, &tmp)
    }

    fn flush(&self) -> io::Result<()> {
        self.check(0, 0)?;
        self.image.flush()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        for (o, n) in Self::pieces(offset, len, self.max_discard) {
            self.check(o, n)?;
            self.image.discard(o, n)?;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> io::Result<()> {
        for (o, n) in Self::pieces(offset, len, self.max_write_zero) {
            self.check(o, n)?;
            self.image.write_zeroes(o, n, may_unmap)?;
        }
        Ok(())
    }

    fn truncate(&self, size: u64) -> Result<()> {
        self.image.driver.truncate(size)
    }

    fn filename(&self) -> String {
        let image = self.image.driver.filename();
        let plain = self.options.keys().all(|k| k == "config");
        if plain {
            return format!("blkdebug:{}:{image}", self.config.as_deref().unwrap_or(""));
        }
        let mut o = Map::new();
        o.insert("driver".into(), "blkdebug".into());
        let mut child = Map::new();
        child.insert("driver".into(), self.image.driver_name().into());
        if !self.image.driver_name().starts_with("null") {
            child.insert("filename".into(), image.into());
        }
        o.insert("image".into(), Value::Object(child));
        for (k, v) in &self.options {
            o.insert(k.clone(), v.clone());
        }
        format!("json:{}", Value::Object(o))
    }

    fn actual_size(&self) -> Option<u64> {
        self.image.driver.actual_size()
    }

    fn debug_event(&self, event: BlkdebugEvent) {
        let mut r = self.rules();
        let current = r.state;
        let mut new_state = current;
        let mut injected = false;
        let mut activated = Vec::new();
        // QEMU keeps each event's rules newest first.
        for rule in r.rules.iter().rev() {
            if rule.event != event || (rule.state != 0 && rule.state != current) {
                continue;
            }
            match rule.action {
                Action::Inject { .. } => {
                    injected = true;
                    activated.insert(0, rule.id);
                }
                Action::SetState { new_state: s } => new_state = s,
            }
        }
        if injected {
            r.active = activated;
        }
        r.state = new_state;
    }
}

impl BlkdebugDriver {
    /// An event this node raises on itself (read-modify-write steps).
    fn debug_event(&self, event: BlkdebugEvent) {
        Driver::debug_event(self, event);
    }
}

#[cfg(test)]
mod tests {
    use crate::BlockGraph;
    use qmp::qapi::BlockdevOptions;
    use serde_json::json;

    fn image(tag: &str, len: u64) -> String {
        let dir = std::env::temp_dir().join(format!("blkdebug-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let p = dir.join("disk.img");
        std::fs::File::create(&p)
            .and_then(|f| f.set_len(len))
            .expect("image");
        p.to_string_lossy().into_owned()
    }

    fn open(g: &mut BlockGraph, v: serde_json::Value) -> std::sync::Arc<crate::Node> {
        let o: BlockdevOptions = qmp::visit::from_value(&v).expect("valid options");
        g.blockdev_add(&o).expect("opens")
    }

    fn errno(r: std::io::Result<()>) -> Option<i32> {
        r.err().and_then(|e| e.raw_os_error())
    }

    #[test]
    fn write_aio_once_under_raw() {
        let path = image("once", 1 << 20);
        let mut g = BlockGraph::new();
        let disk = open(
            &mut g,
            json!({"driver": "raw", "node-name": "disk", "file": {
                "driver": "blkdebug", "node-name": "dbg",
                "image": {"driver": "file", "filename": path},
                "inject-error": [{"event": "write_aio", "errno": 28, "once": true}]}}),
        );
        let mut buf = [0u8; 512];
        // Reads before any write event pass.
        assert_eq!(errno(disk.read(0, &mut buf)), None);
        assert_eq!(errno(disk.write(512, &[7u8; 512])), Some(28));
        // The failed write left the image alone; the rule is gone.
        assert_eq!(std::fs::read(&path).expect("image")[512], 0);
        assert_eq!(errno(disk.write(512, &[7u8; 512])), None);
        assert_eq!(std::fs::read(&path).expect("image")[512], 7);
        let dbg = g.find_node("dbg").expect("node");
        assert!(dbg
            .driver
            .filename()
            .starts_with("json:{\"driver\":\"blkdebug\""));
        assert_eq!(
            disk.file_child().map(|n| n.name().to_string()),
            Some("dbg".into())
        );
    }

    #[test]
    fn sector_rules_and_states() {
        let path = image("sector", 1 << 20);
        let mut g = BlockGraph::new();
        let disk = open(
            &mut g,
            json!({"driver": "raw", "node-name": "disk", "file": {
                "driver": "blkdebug",
                "image": {"driver": "file", "filename": path},
                "inject-error": [{"event": "read_aio", "sector": 8, "state": 2}],
                "set-state": [{"event": "flush_to_disk", "new_state": 2}]}}),
        );
        let mut buf = [0u8; 4096];
        // State 1: the rule waits.
        assert_eq!(errno(disk.read(4096, &mut buf)), None);
        disk.flush().expect("flush");
        assert_eq!(errno(disk.read(0, &mut buf[..512])), None);
        // Covers sector 8 (byte 4096): EIO, every time.
        assert_eq!(errno(disk.read(4096, &mut buf)), Some(libc::EIO));
        assert_eq!(errno(disk.read(3584, &mut buf[..1024])), Some(libc::EIO));
        assert_eq!(errno(disk.read(8192, &mut buf)), None);
    }

    #[test]
    fn config_file_and_alignment() {
        let path = image("config", 1 << 20);
        let conf = format!("{path}.conf");
        std::fs::write(
            &conf,
            "# write errors\n[inject-error]\nevent = \"pwritev\"\nerrno = \"5\"\nsector = \"1\"\n",
        )
        .expect("config");
        let mut g = BlockGraph::new();
        let dbg = open(
            &mut g,
            json!({"driver": "blkdebug", "node-name": "dbg", "config": conf, "align": 4096,
                   "image": {"driver": "file", "filename": path}}),
        );
        // An unaligned write is widened: sector 1 is in its block.
        assert_eq!(errno(dbg.write(3072, &[1u8; 512])), Some(libc::EIO));
        assert_eq!(errno(dbg.write(8192 + 100, &[9u8; 10])), None);
        let data = std::fs::read(&path).expect("image");
        assert_eq!(&data[8292..8302], &[9u8; 10]);
        assert_eq!(data[8291], 0);
        assert_eq!(data[8302], 0);

        std::fs::write(&conf, "[inject-error]\nevent = \"nonsense\"\n").expect("config");
        let o: BlockdevOptions = qmp::visit::from_value(&json!({
            "driver": "blkdebug", "node-name": "bad", "config": conf,
            "image": {"driver": "file", "filename": path}}))
        .expect("valid options");
        assert_eq!(
            g.blockdev_add(&o).err().map(|e| e.message().to_string()),
            Some("Could not parse blkdebug config file".to_string())
        );
        let o: BlockdevOptions = qmp::visit::from_value(&json!({
            "driver": "blkdebug", "node-name": "bad", "align": 3,
            "image": {"driver": "file", "filename": path}}))
        .expect("valid options");
        assert_eq!(
            g.blockdev_add(&o).err().map(|e| e.message().to_string()),
            Some("Cannot meet constraints with align 3".to_string())
        );
    }

    #[test]
    fn backend_error_policies() {
        use qmp::qapi::{BlockDeviceIoStatus, BlockErrorAction, BlockdevOnError};
        let mut g = BlockGraph::new();
        let root = open(&mut g, json!({"driver": "null-co", "node-name": "n"}));
        let b = g
            .add_backend(
                "drive0",
                Some(root),
                (crate::perm::CONSISTENT_READ, crate::perm::ALL),
                true,
                BlockdevOnError::Report,
                BlockdevOnError::Enospc,
            )
            .expect("backend");
        assert_eq!(b.error_action(false, libc::ENOSPC), BlockErrorAction::Stop);
        assert_eq!(b.error_action(false, libc::EIO), BlockErrorAction::Report);
        assert_eq!(b.error_action(true, libc::ENOSPC), BlockErrorAction::Report);
        // No device: no I/O status, no `nospace` in the event.
        assert_eq!(b.iostatus(), None);
        let ev = b.record_error(BlockErrorAction::Report, true, libc::EIO);
        assert_eq!(
            (ev.device.as_str(), ev.node_name.as_str(), ev.nospace),
            ("drive0", "n", None)
        );
        assert_eq!(ev.reason, "Input/output error");
        b.enable_iostatus();
        assert_eq!(b.iostatus(), Some(BlockDeviceIoStatus::Ok));
        let ev = b.record_error(BlockErrorAction::Stop, false, libc::ENOSPC);
        assert_eq!(ev.nospace, Some(true));
        assert_eq!(b.iostatus(), Some(BlockDeviceIoStatus::Nospace));
        // The first error stays until a reset.
        b.record_error(BlockErrorAction::Stop, false, libc::EIO);
        assert_eq!(b.iostatus(), Some(BlockDeviceIoStatus::Nospace));
        b.iostatus_reset();
        assert_eq!(b.iostatus(), Some(BlockDeviceIoStatus::Ok));
        b.set_on_error(BlockdevOnError::Auto, BlockdevOnError::Report);
        assert_eq!(b.iostatus(), None);
        assert_eq!(b.on_error(true), BlockdevOnError::Report);
        b.set_on_error(BlockdevOnError::Stop, BlockdevOnError::Auto);
        assert_eq!(b.error_action(true, libc::EIO), BlockErrorAction::Stop);
        assert_eq!(b.iostatus(), Some(BlockDeviceIoStatus::Ok));
    }
}
