//! Permissions on a node, as QEMU 2.11 defines them: what a parent (a
//! block backend or another node) does with a node, and what it lets
//! others do at the same time.

/// Reads that return what was last written (every reader but a few jobs).
pub const CONSISTENT_READ: u64 = 0x01;
/// Writes that change what a reader sees.
pub const WRITE: u64 = 0x02;
/// Writes that do not change the data (copy-on-read and the like).
pub const WRITE_UNCHANGED: u64 = 0x04;
/// Changing the size.
pub const RESIZE: u64 = 0x08;
/// Changing the node's children.
pub const GRAPH_MOD: u64 = 0x10;
pub const ALL: u64 = 0x1f;

/// What a filter (raw) passes to its child unchanged.
pub const PASSTHROUGH: u64 = CONSISTENT_READ | WRITE | WRITE_UNCHANGED | RESIZE;

/// QEMU's names, in bit order.
pub const NAMES: [&str; 5] = [
    "consistent read",
    "write",
    "write unchanged",
    "resize",
    "change children",
];

/// `"write, resize"` for a set of permissions.
pub fn names(perm: u64) -> String {
    NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| perm & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a filter asks of its child for the given cumulative use.
pub fn filter_child(perm: u64, shared: u64) -> (u64, u64) {
    (
        perm & PASSTHROUGH,
        (shared & PASSTHROUGH) | (ALL & !PASSTHROUGH),
    )
}

/// What a format driver (qcow2) asks of a child, as QEMU's
/// bdrv_format_default_perms: its `file` always reads consistently,
/// writes and resizes for metadata when the node is writable, and lets
/// no one else write or resize it; its `backing` is only read.
pub fn format_child(role: &str, perm: u64, shared: u64, read_only: bool) -> (u64, u64) {
    if role == "backing" {
        let mut s = if shared & WRITE != 0 {
            WRITE | RESIZE
        } else {
            0
        };
        s |= CONSISTENT_READ | GRAPH_MOD | WRITE_UNCHANGED;
        return (perm & CONSISTENT_READ, s);
    }
    let (mut p, mut s) = filter_child(perm, shared);
    if !read_only {
        p |= WRITE | RESIZE;
    }
    p |= CONSISTENT_READ;
    s &= !(WRITE | RESIZE);
    (p, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_order() {
        assert_eq!(names(WRITE | RESIZE), "write, resize");
        assert_eq!(names(0), "");
        assert_eq!(filter_child(WRITE, 0), (WRITE, GRAPH_MOD));
    }
}
