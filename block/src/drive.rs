//! `-drive`: QEMU's legacy drive option, turned into a node tree and a
//! named backend as QEMU 2.11's blockdev_init does.

use crate::backend::BlockBackend;
use crate::error::{BlockError, Result};
use crate::graph::BlockGraph;
use crate::perm;
use qmp::qapi::{BlockdevOnError, BlockdevOptions};
use serde_json::{Map, Value};
use std::os::unix::fs::FileTypeExt;
use std::sync::Arc;

/// Where a drive goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Interface {
    /// `if=none`: a device names it with `drive=`.
    None,
    /// `if=virtio`: vmm adds a virtio-blk-pci device for it.
    Virtio,
}

/// One opened `-drive`.
pub struct Drive {
    pub backend: Arc<BlockBackend>,
    pub interface: Interface,
    pub index: u32,
    /// `serial=` (for the device the drive gets).
    pub serial: Option<String>,
    /// Warnings to print, as QEMU does (format probing).
    pub warnings: Vec<String>,
}

/// Parameters -drive handles itself; the rest go to the root node's
/// options (`node-name`, `file.locking`, `offset` ...).
const OWN: &[&str] = &[
    "file",
    "format",
    "if",
    "index",
    "unit",
    "bus",
    "media",
    "cache",
    "aio",
    "readonly",
    "read-only",
    "werror",
    "rerror",
    "discard",
    "detect-zeroes",
    "snapshot",
    "serial",
    "copy-on-read",
    "stats-account-invalid",
    "stats-account-failed",
    "cache.direct",
    "cache.no-flush",
    "cache.writeback",
    "addr",
    "boot",
    "trans",
    "cyls",
    "heads",
    "secs",
];

fn on_error(value: &str, read: bool) -> Result<BlockdevOnError> {
    Ok(match value {
        "ignore" => BlockdevOnError::Ignore,
        "enospc" if !read => BlockdevOnError::Enospc,
        "stop" => BlockdevOnError::Stop,
        "report" => BlockdevOnError::Report,
        _ => {
            return Err(BlockError::generic(format!(
                "'{value}' invalid {} error action",
                if read { "read" } else { "write" }
            )))
        }
    })
}

fn bool_opt(name: &str, v: &str) -> Result<bool> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(BlockError::generic(format!(
            "Parameter '{name}' expects 'on' or 'off'"
        ))),
    }
}

fn onoff(b: bool) -> Value {
    Value::String(if b { "on" } else { "off" }.to_string())
}

/// The format a file's first bytes name, as far as vmm knows formats.
pub(crate) fn probe_format(filename: &str) -> Option<&'static str> {
    use std::io::Read;
    let mut head = [0u8; 512];
    let mut f = std::fs::File::open(filename).ok()?;
    let n = f.read(&mut head).ok()?;
    let h = &head[..n];
    let formats: &[(&[u8], &str)] = &[
        (b"QFI\xfb", "qcow2"),
        (b"QED\0", "qed"),
        (b"KDMV", "vmdk"),
        (b"conectix", "vpc"),
        (b"vhdxfile", "vhdx"),
        (b"LUKS\xba\xbe", "luks"),
    ];
    for (magic, name) in formats {
        if h.starts_with(magic) {
            return Some(name);
        }
    }
    None
}

impl BlockGraph {
    /// `snapshot=on`: a temporary qcow2 image over `base` takes the
    /// writes (QEMU's bdrv_append_temp_snapshot). The file is unlinked
    /// once open, so nothing is left behind however vmm ends.
    fn temporary_overlay(
        &mut self,
        base: std::sync::Arc<crate::Node>,
    ) -> Result<std::sync::Arc<crate::Node>> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::var("TMPDIR").unwrap_or_else(|_| "/var/tmp".to_string());
        let path = format!(
            "{dir}/vl.{}.{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let create = crate::CreateOptions {
            size: base.size(),
            ..Default::default()
        };
        self.create_qcow2(&path, &create)
            .map_err(|e| e.prepend("Could not create temporary overlay: "))?;
        let mut o = Map::new();
        o.insert("driver".into(), "qcow2".into());
        let mut f = Map::new();
        f.insert("driver".into(), "file".into());
        f.insert("filename".into(), path.clone().into());
        o.insert("file".into(), Value::Object(f));
        o.insert("backing".into(), base.name().into());
        let opts: BlockdevOptions =
            qmp::visit::from_value(&Value::Object(o)).map_err(|e| BlockError::generic(e.desc))?;
        let r = self.open_tree(&opts, None, false);
        let _ = std::fs::remove_file(&path);
        r
    }

    /// Opens one `-drive` (`id` and its parameters in order).
    pub fn drive_add(&mut self, id: Option<&str>, items: &[(String, String)]) -> Result<Drive> {
        let get = |k: &str| {
            items
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        let interface = match get("if").unwrap_or("ide") {
            "none" => Interface::None,
            "virtio" => Interface::Virtio,
            i @ ("ide" | "scsi" | "floppy" | "pflash" | "mtd" | "sd") => {
                return Err(BlockError::generic(format!(
                    "not available yet: if={i} drives need their controller, which has not landed in vmm (use if=none with -device, or if=virtio)"
                )))
            }
            other => {
                return Err(BlockError::generic(format!(
                    "unsupported bus type '{other}'"
                )))
            }
        };
        if get("media") == Some("cdrom") {
            return Err(BlockError::generic(
                "not available yet: CD-ROM drives arrive with IDE",
            ));
        }
        let snapshot = get("snapshot")
            .map(|v| bool_opt("snapshot", v))
            .transpose()?
            == Some(true);
        if get("copy-on-read")
            .map(|v| bool_opt("copy-on-read", v))
            .transpose()?
            == Some(true)
        {
            return Err(BlockError::generic(
                "not available yet: copy-on-read needs backing files, which have not landed in vmm",
            ));
        }
        let iface_name = match interface {
            Interface::None => "none",
            Interface::Virtio => "virtio",
        };
        let index = match get("index") {
            Some(i) => i
                .parse::<u32>()
                .map_err(|_| BlockError::generic(format!("Invalid index '{i}'")))?,
            None => (0..)
                .find(|i| {
                    !self
                        .drive_slots
                        .iter()
                        .any(|(n, x)| n == iface_name && x == i)
                })
                .unwrap_or(0),
        };
        if self
            .drive_slots
            .iter()
            .any(|(n, x)| n == iface_name && *x == index)
        {
            return Err(BlockError::generic(format!(
                "drive with bus=0, unit={index} (index={index}) exists"
            )));
        }
        let name = id
            .map(str::to_string)
            .unwrap_or_else(|| format!("{iface_name}{index}"));

        // Cache modes: (direct, writeback, no-flush).
        let (mut direct, mut writeback, mut no_flush) = (false, true, false);
        if let Some(c) = get("cache") {
            (direct, writeback, no_flush) = match c {
                "none" | "off" => (true, true, false),
                "writeback" => (false, true, false),
                "writethrough" => (false, false, false),
                "directsync" => (true, false, false),
                "unsafe" => (false, true, true),
                _ => return Err(BlockError::generic("invalid cache option")),
            };
        }
        if let Some(v) = get("cache.direct") {
            direct = bool_opt("cache.direct", v)?;
        }
        if let Some(v) = get("cache.writeback") {
            writeback = bool_opt("cache.writeback", v)?;
        }
        if let Some(v) = get("cache.no-flush") {
            no_flush = bool_opt("cache.no-flush", v)?;
        }
        let aio = match get("aio") {
            None | Some("threads") => None,
            Some("native") => Some("native"),
            Some(_) => return Err(BlockError::generic("invalid aio option")),
        };
        let read_only = match get("readonly").or(get("read-only")) {
            Some(v) => bool_opt("readonly", v)?,
            None => false,
        };
        let on_write = get("werror")
            .map(|v| on_error(v, false))
            .transpose()?
            .unwrap_or(BlockdevOnError::Enospc);
        let on_read = get("rerror")
            .map(|v| on_error(v, true))
            .transpose()?
            .unwrap_or(BlockdevOnError::Report);
        let discard = match get("discard") {
            None | Some("ignore") | Some("off") => "ignore",
            Some("unmap") | Some("on") => "unmap",
            Some(_) => return Err(BlockError::generic("Invalid discard option")),
        };
        let detect_zeroes = match get("detect-zeroes") {
            None => "off",
            Some(v @ ("off" | "on" | "unmap")) => v,
            Some(v) => return Err(BlockError::generic(format!("Invalid parameter '{v}'"))),
        };
        if detect_zeroes == "unmap" && discard != "unmap" {
            return Err(BlockError::generic(
                "setting detect-zeroes to unmap is not allowed without setting discard operation to unmap",
            ));
        }

        let mut warnings = Vec::new();
        let root = match get("file").filter(|f| !f.is_empty()) {
            None => None,
            Some(file) => {
                // `blkdebug:CONFIG:IMAGE`: the blkdebug protocol over the
                // image (QEMU's blkdebug_parse_filename).
                let (image, blkdebug) = match file.strip_prefix("blkdebug:") {
                    Some(rest) => {
                        let (config, image) = rest.split_once(':').ok_or_else(|| {
                            BlockError::generic("blkdebug requires both config file and image path")
                        })?;
                        (image, Some(config))
                    }
                    None => (file, None),
                };
                let device = std::fs::metadata(image)
                    .map(|m| m.file_type().is_block_device() || m.file_type().is_char_device())
                    .unwrap_or(false);
                let protocol = if device { "host_device" } else { "file" };
                let format = match get("format") {
                    Some(f) => f.to_string(),
                    None => match probe_format(image) {
                        Some(f) => f.to_string(),
                        None => {
                            if std::path::Path::new(image).exists() {
                                warnings.push(format!(
                                    "WARNING: Image format was not specified for '{file}' and probing guessed raw.\n         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n         Specify the 'raw' format explicitly to remove the restrictions."
                                ));
                            }
                            "raw".to_string()
                        }
                    },
                };
                let mut proto = Map::new();
                proto.insert("driver".into(), protocol.into());
                proto.insert("filename".into(), image.into());
                if let Some(a) = aio {
                    proto.insert("aio".into(), a.into());
                }
                let protocol = match blkdebug {
                    None => protocol,
                    Some(config) => {
                        let mut b = Map::new();
                        b.insert("driver".into(), "blkdebug".into());
                        if !config.is_empty() {
                            b.insert("config".into(), config.into());
                        }
                        b.insert("image".into(), Value::Object(proto));
                        proto = b;
                        "blkdebug"
                    }
                };
                let mut top = Map::new();
                let mut extra_file = Map::new();
                for (k, v) in items {
                    if OWN.contains(&k.as_str()) {
                        continue;
                    }
                    match k.strip_prefix("file.") {
                        Some(rest) => {
                            extra_file.insert(rest.to_string(), v.clone().into());
                        }
                        None => {
                            top.insert(k.clone(), v.clone().into());
                        }
                    }
                }
                let mut opts = if format == protocol || format == "file" || format == "host_device"
                {
                    proto.insert("driver".into(), format.clone().into());
                    proto.extend(top);
                    proto.extend(extra_file);
                    proto
                } else {
                    proto.extend(extra_file);
                    top.insert("driver".into(), format.clone().into());
                    top.insert("file".into(), Value::Object(proto));
                    top
                };
                // With snapshot=on the image itself is only read: writes
                // go to a temporary overlay.
                opts.insert("read-only".into(), onoff(read_only || snapshot));
                let mut cache = Map::new();
                cache.insert("direct".into(), onoff(direct));
                cache.insert("no-flush".into(), onoff(no_flush));
                opts.insert("cache".into(), Value::Object(cache));
                opts.insert("discard".into(), discard.into());
                opts.insert("detect-zeroes".into(), detect_zeroes.into());
                let opts: BlockdevOptions = qmp::visit::from_keyval(&Value::Object(opts))
                    .map_err(|e| BlockError::generic(e.desc))?;
                if self.find_node(&name).is_some() {
                    return Err(BlockError::generic(format!(
                        "Device name '{name}' conflicts with an existing node name"
                    )));
                }
                let node = self.open_tree(&opts, None, false)?;
                if snapshot {
                    Some(self.temporary_overlay(node)?)
                } else {
                    Some(node)
                }
            }
        };
        let mut p = perm::CONSISTENT_READ;
        if !read_only && root.is_some() {
            p |= perm::WRITE;
        }
        let backend = match self.add_backend(
            &name,
            root.clone(),
            (p, perm::ALL),
            writeback,
            on_read,
            on_write,
        ) {
            Ok(b) => b,
            Err(e) => {
                // The tree goes with the failure.
                drop(root);
                self.sweep();
                return Err(e);
            }
        };
        self.drive_slots.push((iface_name.to_string(), index));
        Ok(Drive {
            backend,
            interface,
            index,
            serial: get("serial").map(str::to_string),
            warnings,
        })
    }
}
