//! What the graph does with images as a whole: creating a qcow2 image
//! in a file, and internal snapshots of a device's image, with QEMU's
//! rules and texts.

use crate::error::{strerror, BlockError, Result};
use crate::graph::BlockGraph;
use crate::node::Node;
pub use crate::qcow2::CreateOptions;
use qmp::qapi::{BlockdevOptions, SnapshotInfo};
use std::sync::Arc;

impl BlockGraph {
    /// A node on `filename` (protocol `file`), outside the graph's
    /// named nodes, for creating an image in it.
    fn scratch_file_node(&mut self, filename: &str) -> Result<Arc<Node>> {
        let mut o = serde_json::Map::new();
        o.insert("driver".into(), "file".into());
        o.insert("filename".into(), filename.into());
        let opts: BlockdevOptions = qmp::visit::from_value(&serde_json::Value::Object(o))
            .map_err(|e| BlockError::generic(e.desc))?;
        self.open_tree(&opts, None, false)
    }

    /// Creates (or overwrites) `filename` as a qcow2 image.
    pub fn create_qcow2(&mut self, filename: &str, opts: &CreateOptions) -> Result<()> {
        if let Err(e) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(filename)
        {
            return Err(BlockError::generic(format!(
                "Could not create '{filename}': {}",
                strerror(&e)
            )));
        }
        let node = self.scratch_file_node(filename)?;
        let r = crate::qcow2::create(node.clone(), opts);
        drop(node);
        self.sweep();
        r
    }

    /// QEMU's qmp_get_root_bs: a backend's root or a root node by name.
    fn root_bs(&self, name: &str) -> Result<Arc<Node>> {
        let node = self.lookup_bs(Some(name), Some(name))?;
        if !self.is_root(&node) {
            return Err(BlockError::generic("Need a root block node"));
        }
        Ok(node)
    }

    /// blockdev-snapshot-internal-sync.
    pub fn snapshot_internal_create(
        &mut self,
        device: &str,
        name: &str,
        vm_clock_nsec: u64,
    ) -> Result<()> {
        let node = self.root_bs(device)?;
        if node.read_only() {
            return Err(BlockError::generic(format!(
                "Device '{device}' is read only"
            )));
        }
        let Some(q) = node.driver.qcow2() else {
            return Err(BlockError::generic(format!(
                "Block format '{}' used by device '{device}' does not support internal snapshots",
                node.driver_name()
            )));
        };
        if name.is_empty() {
            return Err(BlockError::generic("Name is empty"));
        }
        if q.snapshot_list().iter().any(|s| s.name == name) {
            return Err(BlockError::generic(format!(
                "Snapshot with name '{name}' already exists on device '{device}'"
            )));
        }
        q.snapshot_create(name, vm_clock_nsec).map_err(|e| {
            BlockError::generic(format!(
                "Failed to create snapshot '{name}' on device '{device}': {}",
                strerror(&e)
            ))
        })
    }

    /// blockdev-snapshot-delete-internal-sync.
    pub fn snapshot_internal_delete(
        &mut self,
        device: &str,
        id: Option<&str>,
        name: Option<&str>,
    ) -> Result<SnapshotInfo> {
        let node = self.root_bs(device)?;
        if id.is_none() && name.is_none() {
            return Err(BlockError::generic("Name or id must be provided"));
        }
        let missing = || {
            BlockError::generic(format!(
                "Snapshot with id '{}' and name '{}' does not exist on device '{device}'",
                id.unwrap_or("(null)"),
                name.unwrap_or("(null)")
            ))
        };
        let Some(q) = node.driver.qcow2() else {
            return Err(missing());
        };
        if node.read_only() {
            return Err(BlockError::generic(format!(
                "Device '{device}' is read only"
            )));
        }
        match q.snapshot_delete(id, name) {
            Ok(Some(info)) => Ok(info),
            Ok(None) => Err(missing()),
            Err(e) => Err(BlockError::generic(format!(
                "Failed to remove snapshot from snapshot list: {}",
                strerror(&e)
            ))),
        }
    }

    /// The internal snapshots of a node's image (qcow2), for `info
    /// snapshots` and the like.
    pub fn snapshots_of(&self, node: &Node) -> Vec<SnapshotInfo> {
        node.driver
            .qcow2()
            .map(|q| q.snapshot_list())
            .unwrap_or_default()
    }

    /// Checks a node's qcow2 image as `qemu-img check` does.
    pub fn check_image(&self, node: &Node, repair: bool) -> Result<crate::CheckResult> {
        match node.driver.qcow2() {
            Some(q) => q
                .check(repair)
                .map_err(|e| BlockError::generic(format!("Check failed: {}", strerror(&e)))),
            None => Err(BlockError::generic(format!(
                "This image format does not support checks ({})",
                node.driver_name()
            ))),
        }
    }
}
