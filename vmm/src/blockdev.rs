//! The block layer on the command line and for devices: `-blockdev`
//! and `-drive` opened into the block graph, `if=virtio` drives turned
//! into virtio-blk-pci devices as QEMU does, and the adapter from the
//! block crate's backends to the device-side backend trait.

use crate::cmdline::{Config, Opts};
use crate::machine::vcpu::EventSink;
use crate::machine::MachineEvent;
use block::drive::Interface;
use block::{BlockError, BlockGraph};
use qmp::qapi::{BlockErrorAction, BlockdevOnError, BlockdevOptions};
use std::io;
use std::sync::Arc;

/// A block backend as virtio-blk (and later devices) see it. Failed
/// requests reach the main loop through `events` (BLOCK_IO_ERROR, and
/// the stop of the `stop`/`enospc` policies).
pub struct DiskBackend {
    blk: Arc<block::BlockBackend>,
    events: EventSink,
    /// The last host file handed out, with the root node and write-back
    /// setting it was made for: the I/O thread asks for it on every pass,
    /// and it changes only with the graph.
    host: std::sync::Mutex<Option<CachedHostFile>>,
}

struct CachedHostFile {
    root: Arc<block::Node>,
    write_cache: bool,
    file: Option<devices::virtio::block::HostFile>,
}

impl DiskBackend {
    /// The device `dev` (a `-device virtio-blk-pci`) attached to `blk`:
    /// its `rerror`/`werror` properties replace the drive's policies
    /// (`auto`, the default, keeps them), as QEMU's
    /// blkconf_apply_backend_options does.
    pub fn attach(
        blk: Arc<block::BlockBackend>,
        dev: &Opts,
        events: EventSink,
    ) -> Result<DiskBackend, String> {
        let (rerror, werror) = error_policies(dev)?;
        blk.set_on_error(rerror, werror);
        Ok(DiskBackend {
            blk,
            events,
            host: std::sync::Mutex::new(None),
        })
    }
}

/// A device's `rerror` and `werror` properties (`auto` when absent).
pub fn error_policies(dev: &Opts) -> Result<(BlockdevOnError, BlockdevOnError), String> {
    let policy = |name: &str| -> Result<BlockdevOnError, String> {
        match dev.get(name) {
            None => Ok(BlockdevOnError::Auto),
            Some(v) => BlockdevOnError::ALL
                .iter()
                .copied()
                .find(|p| p.as_str() == v)
                .ok_or_else(|| format!("Invalid parameter '{v}'")),
        }
    };
    Ok((policy("rerror")?, policy("werror")?))
}

impl devices::virtio::block::BlockBackend for DiskBackend {
    fn size(&self) -> u64 {
        self.blk.size()
    }

    fn read_only(&self) -> bool {
        self.blk.read_only()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.blk.read(offset, buf)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.blk.write(offset, buf)
    }

    fn flush(&self) -> io::Result<()> {
        self.blk.flush()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.blk.discard(offset, len)
    }

    fn on_resize(&self, notify: Box<dyn Fn() + Send + Sync>) {
        self.blk.set_resize_notifier(notify);
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.blk.write_zeroes(offset, len, false)
    }

    fn error_action(&self, is_read: bool, errno: i32) -> BlockErrorAction {
        self.blk.error_action(is_read, errno)
    }

    fn report_error(&self, action: BlockErrorAction, is_read: bool, errno: i32) {
        let event = self.blk.record_error(action, is_read, errno);
        (self.events)(MachineEvent::BlockIoError {
            event,
            stop: action == BlockErrorAction::Stop,
        });
    }

    fn host_file(&self) -> Option<devices::virtio::block::HostFile> {
        let root = self.blk.root()?;
        let write_cache = self.blk.write_cache();
        let mut cached = self.host.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cached.as_ref() {
            if Arc::ptr_eq(&c.root, &root) && c.write_cache == write_cache {
                return c.file.clone();
            }
        }
        let file = self
            .blk
            .host_extent()
            .map(|extent| devices::virtio::block::HostFile {
                fd: extent.fd(),
                base: extent.base,
                align: extent.align,
                native_aio: extent.native_aio,
                done: Arc::new(HostIo {
                    blk: self.blk.clone(),
                    extent,
                }),
            });
        *cached = Some(CachedHostFile {
            root,
            write_cache,
            file: file.clone(),
        });
        file
    }
}

/// Accounting for requests virtio-blk sent to the host file directly;
/// holds the file open while they are in flight.
struct HostIo {
    blk: Arc<block::BlockBackend>,
    extent: block::HostExtent,
}

impl devices::virtio::block::HostIoDone for HostIo {
    fn done(&self, write: bool, offset: u64, len: u64, requests: u32, started: std::time::Instant) {
        self.blk
            .host_io_done(&self.extent, write, offset, len, requests, started);
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
