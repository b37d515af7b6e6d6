//! The block layer on the command line and for devices: `-blockdev`
//! and `-drive` opened into the block graph, `if=virtio` drives turned
//! into virtio-blk-pci devices as QEMU does, and the adapter from the
//! block crate's backends to the device-side backend trait.

use crate::cmdline::{Config, Opts};
use block::drive::Interface;
use block::{BlockError, BlockGraph};
use qmp::qapi::BlockdevOptions;
use std::io;
use std::sync::Arc;

/// A block backend as virtio-blk (and later devices) see it.
pub struct DiskBackend(pub Arc<block::BlockBackend>);

impl devices::virtio::block::BlockBackend for DiskBackend {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn read_only(&self) -> bool {
        self.0.read_only()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read(offset, buf)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.0.write(offset, buf)
    }

    fn flush(&self) -> io::Result<()> {
        self.0.flush()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.0.discard(offset, len)
    }

    fn on_resize(&self, notify: Box<dyn Fn() + Send + Sync>) {
        self.0.set_resize_notifier(notify);
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.0.write_zeroes(offset, len, false)
    }
}

/// An error of the block layer as the command line prints it: the
/// option, QEMU's text and its hint line.
fn at(location: &str, e: &BlockError) -> String {
    match e.hint() {
        Some(h) => format!("{location}: {}\n{h}", e.message()),
        None => format!("{location}: {}", e.message()),
    }
}

/// Opens every `-blockdev`, then every `-drive`, in order (QEMU's
/// order), and adds a `-device virtio-blk-pci` for each `if=virtio`
/// drive.
pub fn open(config: &mut Config) -> Result<BlockGraph, String> {
    let mut graph = BlockGraph::new();
    for b in &config.blockdevs {
        let opts: BlockdevOptions = if b.keyval {
            qmp::visit::from_keyval(&b.options)
        } else {
            qmp::visit::from_value(&b.options)
        }
        .map_err(|e| format!("{}: {}", b.location, e.desc))?;
        graph.blockdev_add(&opts).map_err(|e| at(&b.location, &e))?;
    }
    let mut virtio = Vec::new();
    for d in &config.drives {
        let drive = graph
            .drive_add(d.id.as_deref(), &d.items)
            .map_err(|e| at(&d.location, &e))?;
        for w in &drive.warnings {
            eprintln!("vmm: {w}");
        }
        if drive.interface == Interface::Virtio {
            let mut items = vec![
                ("driver".to_string(), "virtio-blk-pci".to_string()),
                ("drive".to_string(), drive.backend.name().to_string()),
            ];
            if let Some(s) = &drive.serial {
                items.push(("serial".to_string(), s.clone()));
            }
            virtio.push(Opts {
                id: None,
                items,
                location: d.location.clone(),
            });
        }
    }
    config.devices.extend(virtio);
    Ok(graph)
}

/// The QOM path of a device's block child, as query-block's `qdev`
/// reports it: `/machine/peripheral/ID/virtio-backend`, or the
/// anonymous device's path.
pub fn qdev_path(config: &Config, device: &Opts) -> String {
    match &device.id {
        Some(id) => format!("/machine/peripheral/{id}/virtio-backend"),
        None => {
            let n = config
                .devices
                .iter()
                .take_while(|d| !std::ptr::eq(*d, device))
                .filter(|d| d.id.is_none())
                .count();
            format!("/machine/peripheral-anon/device[{n}]/virtio-backend")
        }
    }
}
