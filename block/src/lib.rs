//! The block layer: a graph of nodes (drivers with node-names, children
//! and permissions), block backends that join devices to their root
//! nodes, the drivers (`file`, `host_device`, `raw`, `null-co`,
//! `null-aio`), `-drive` and the query answers.
//!
//! Devices use [`BlockBackend`]: synchronous, thread-safe reads,
//! writes, flushes, discards and zero writes on a backend's root node.
//! The main loop owns the [`BlockGraph`] and changes it (blockdev-add,
//! blockdev-del, block_resize); every change of a node's users is
//! checked against QEMU's permission rules, and file nodes carry QEMU's
//! image locks so that another process (vmm, QEMU, qemu-img) cannot
//! write an image in use.

mod backend;
mod blkdebug;
pub mod drive;
mod error;
mod file;
mod graph;
mod image;
mod node;
mod null;
pub mod perm;
mod qcow2;
mod raw;

pub use backend::BlockBackend;
pub use error::{strerror, BlockError, Result};
pub use graph::{id_wellformed, BlockGraph, CommitError};
pub use image::CreateOptions;
pub use node::{HostExtent, Node};
pub use qcow2::{CheckResult, EventSink};

#[cfg(test)]
mod qcow2_tests;
#[cfg(test)]
mod tests;
