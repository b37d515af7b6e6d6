//! The qcow2 header and its extensions, as docs/interop/qcow2.txt of
//! QEMU lays them out: parsing with every field checked, and the bytes
//! written back when a field changes.

use crate::error::{BlockError, Result};

pub const MAGIC: u32 = 0x5146_49fb;
pub const MIN_CLUSTER_BITS: u32 = 9;
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Version 2's header ends here; version 3 adds five fields.
pub const V2_HEADER_LEN: u32 = 72;
pub const V3_HEADER_LEN: u32 = 104;
/// QEMU's limits: 32 MiB of active L1, 8 MiB of refcount table,
/// 65536 snapshots, 1023 bytes of backing file name.
pub const MAX_L1_BYTES: u64 = 0x200_0000;
pub const MAX_REFTABLE_BYTES: u64 = 0x80_0000;
pub const MAX_SNAPSHOTS: u32 = 65536;
pub const MAX_BACKING_NAME: u32 = 1023;

/// Byte offsets of the fields that change after creation.
pub const OFF_SIZE: u64 = 24;
pub const OFF_L1: u64 = 36;
pub const OFF_REFTABLE: u64 = 48;
pub const OFF_SNAPSHOTS: u64 = 60;
pub const OFF_INCOMPAT: u64 = 72;

pub const INCOMPAT_DIRTY: u64 = 1;
pub const INCOMPAT_CORRUPT: u64 = 2;
pub const INCOMPAT_MASK: u64 = INCOMPAT_DIRTY | INCOMPAT_CORRUPT;
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1;

pub const CRYPT_NONE: u32 = 0;
pub const CRYPT_AES: u32 = 1;

pub const EXT_END: u32 = 0;
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;

/// The header fields, host-endian.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qcow2Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible_features: u64,
    pub compatible_features: u64,
    pub autoclear_features: u64,
    pub refcount_order: u32,
    pub header_length: u32,
}

/// A header extension kept as its bytes (those vmm does not interpret
/// are written back unchanged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    pub kind: u32,
    pub data: Vec<u8>,
}

pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

pub fn put_be16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

pub fn put_be32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

pub fn put_be64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

impl Qcow2Header {
    /// Parses the fixed fields from the start of the image (at least
    /// 104 bytes, zero-padded past the end of a short file) and checks
    /// those that need no other knowledge, with QEMU's texts.
    pub fn parse(b: &[u8]) -> Result<Qcow2Header> {
        if b.len() < V3_HEADER_LEN as usize || be32(b, 0) != MAGIC {
            return Err(BlockError::generic("Image is not in qcow2 format"));
        }
        let version = be32(b, 4);
        if !(2..=3).contains(&version) {
            return Err(BlockError::generic(format!(
                "Unsupported qcow2 version {version}"
            )));
        }
        let cluster_bits = be32(b, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(BlockError::generic(format!(
                "Unsupported cluster size: 2^{cluster_bits}"
            )));
        }
        let mut h = Qcow2Header {
            version,
            backing_file_offset: be64(b, 8),
            backing_file_size: be32(b, 16),
            cluster_bits,
            size: be64(b, 24),
            crypt_method: be32(b, 32),
            l1_size: be32(b, 36),
            l1_table_offset: be64(b, 40),
            refcount_table_offset: be64(b, 48),
            refcount_table_clusters: be32(b, 56),
            nb_snapshots: be32(b, 60),
            snapshots_offset: be64(b, 64),
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN,
        };
        if version == 3 {
            h.incompatible_features = be64(b, 72);
            h.compatible_features = be64(b, 80);
            h.autoclear_features = be64(b, 88);
            h.refcount_order = be32(b, 96);
            h.header_length = be32(b, 100);
            if h.header_length < V3_HEADER_LEN {
                return Err(BlockError::generic("qcow2 header too short"));
            }
        }
        if h.header_length as u64 > h.cluster_size() {
            return Err(BlockError::generic("qcow2 header exceeds cluster size"));
        }
        if h.backing_file_offset > h.cluster_size() {
            return Err(BlockError::generic("Invalid backing file offset"));
        }
        Ok(h)
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// The fixed fields as bytes (`header_length` of them; fields past
    /// vmm's knowledge are kept by the caller).
    pub fn to_bytes(&self) -> Vec<u8> {
        let len = if self.version == 2 {
            V2_HEADER_LEN
        } else {
            V3_HEADER_LEN
        };
        let mut b = vec![0u8; len as usize];
        put_be32(&mut b, 0, MAGIC);
        put_be32(&mut b, 4, self.version);
        put_be64(&mut b, 8, self.backing_file_offset);
        put_be32(&mut b, 16, self.backing_file_size);
        put_be32(&mut b, 20, self.cluster_bits);
        put_be64(&mut b, 24, self.size);
        put_be32(&mut b, 32, self.crypt_method);
        put_be32(&mut b, 36, self.l1_size);
        put_be64(&mut b, 40, self.l1_table_offset);
        put_be64(&mut b, 48, self.refcount_table_offset);
        put_be32(&mut b, 56, self.refcount_table_clusters);
        put_be32(&mut b, 60, self.nb_snapshots);
        put_be64(&mut b, 64, self.snapshots_offset);
        if self.version == 3 {
            put_be64(&mut b, 72, self.incompatible_features);
            put_be64(&mut b, 80, self.compatible_features);
            put_be64(&mut b, 88, self.autoclear_features);
            put_be32(&mut b, 96, self.refcount_order);
            put_be32(&mut b, 100, self.header_length);
        }
        b
    }
}

/// Reads the extensions between the header and `end` (the backing file
/// name, or the end of the first cluster) from the first cluster's
/// bytes, with QEMU's checks.
pub fn parse_extensions(cluster: &[u8], start: u64, end: u64) -> Result<Vec<Extension>> {
    let mut out = Vec::new();
    let mut at = start;
    let end = end.min(cluster.len() as u64);
    while at < end {
        if end - at < 8 {
            break;
        }
        let kind = be32(cluster, at as usize);
        let len = be32(cluster, at as usize + 4) as u64;
        at += 8;
        if len > end - at {
            return Err(BlockError::generic("Header extension too large"));
        }
        if kind == EXT_END {
            break;
        }
        out.push(Extension {
            kind,
            data: cluster[at as usize..(at + len) as usize].to_vec(),
        });
        at += len.div_ceil(8) * 8;
    }
    Ok(out)
}

/// The names QEMU gives the feature bits it knows, for the feature name
/// table of a version 3 image: (type, bit, name).
pub const FEATURE_NAMES: [(u8, u8, &str); 4] = [
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (1, 0, "lazy refcounts"),
    (2, 0, "bitmaps"),
];

/// The bytes of a feature name table extension.
pub fn feature_table() -> Extension {
    let mut data = vec![0u8; 48 * FEATURE_NAMES.len()];
    for (i, (t, bit, name)) in FEATURE_NAMES.iter().enumerate() {
        let e = &mut data[i * 48..(i + 1) * 48];
        e[0] = *t;
        e[1] = *bit;
        e[2..2 + name.len()].copy_from_slice(name.as_bytes());
    }
    Extension {
        kind: EXT_FEATURE_TABLE,
        data,
    }
}

/// QEMU's report of incompatible features it does not support: the
/// names from the image's feature table, else the bits.
pub fn unsupported_features(exts: &[Extension], mask: u64) -> String {
    let mut names = Vec::new();
    let mut left = mask;
    if let Some(t) = exts.iter().find(|e| e.kind == EXT_FEATURE_TABLE) {
        for e in t.data.chunks_exact(48) {
            if e[0] == 0 && e[1] < 64 && left & (1 << e[1]) != 0 {
                let name: Vec<u8> = e[2..].iter().take_while(|c| **c != 0).copied().collect();
                names.push(String::from_utf8_lossy(&name).into_owned());
                left &= !(1 << e[1]);
            }
        }
    }
    if left != 0 {
        names.push(format!("Unknown incompatible feature: {left:x}"));
    }
    format!("Unsupported qcow2 feature(s): {}", names.join(", "))
}

/// Lays out the first cluster: the fixed fields, the extensions, the
/// end marker and the backing file name; fills in the backing file
/// offset and size and the header length. Fails when it does not fit.
pub fn build_first_cluster(
    h: &mut Qcow2Header,
    exts: &[Extension],
    unknown_fields: &[u8],
    backing: Option<&str>,
) -> Result<Vec<u8>> {
    let cs = h.cluster_size() as usize;
    if h.version == 3 {
        h.header_length = V3_HEADER_LEN + unknown_fields.len() as u32;
    }
    let mut out = Vec::with_capacity(cs);
    out.extend_from_slice(
        &[0u8; V3_HEADER_LEN as usize][..if h.version == 2 {
            V2_HEADER_LEN as usize
        } else {
            V3_HEADER_LEN as usize
        }],
    );
    out.extend_from_slice(unknown_fields);
    for e in exts {
        out.extend_from_slice(&e.kind.to_be_bytes());
        out.extend_from_slice(&(e.data.len() as u32).to_be_bytes());
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(8) * 8, 0);
    }
    out.extend_from_slice(&[0u8; 8]);
    match backing {
        Some(name) => {
            h.backing_file_offset = out.len() as u64;
            h.backing_file_size = name.len() as u32;
            out.extend_from_slice(name.as_bytes());
        }
        None => {
            h.backing_file_offset = 0;
            h.backing_file_size = 0;
        }
    }
    if out.len() > cs {
        return Err(BlockError::generic(
            "Cannot fit the header extensions and backing file name into the first cluster",
        ));
    }
    let fixed = h.to_bytes();
    out[..fixed.len()].copy_from_slice(&fixed);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let mut h = Qcow2Header {
            version: 3,
            backing_file_offset: 0,
            backing_file_size: 0,
            cluster_bits: 16,
            size: 1 << 30,
            crypt_method: 0,
            l1_size: 2,
            l1_table_offset: 0x30000,
            refcount_table_offset: 0x10000,
            refcount_table_clusters: 1,
            nb_snapshots: 0,
            snapshots_offset: 0,
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: 104,
        };
        let ext = Extension {
            kind: EXT_BACKING_FORMAT,
            data: b"raw".to_vec(),
        };
        let b =
            build_first_cluster(&mut h, std::slice::from_ref(&ext), &[], Some("base.img")).unwrap();
        let mut padded = b.clone();
        padded.resize(65536, 0);
        let p = Qcow2Header::parse(&padded).unwrap();
        assert_eq!(p, h);
        let exts = parse_extensions(&padded, 104, p.backing_file_offset).unwrap();
        assert_eq!(exts, vec![ext]);
        let at = p.backing_file_offset as usize;
        assert_eq!(&padded[at..at + 8], b"base.img");
    }

    #[test]
    fn bad_headers_are_refused() {
        let mut b = vec![0u8; 512];
        assert_eq!(
            Qcow2Header::parse(&b).unwrap_err().message(),
            "Image is not in qcow2 format"
        );
        put_be32(&mut b, 0, MAGIC);
        put_be32(&mut b, 4, 4);
        assert_eq!(
            Qcow2Header::parse(&b).unwrap_err().message(),
            "Unsupported qcow2 version 4"
        );
        put_be32(&mut b, 4, 3);
        put_be32(&mut b, 20, 22);
        assert_eq!(
            Qcow2Header::parse(&b).unwrap_err().message(),
            "Unsupported cluster size: 2^22"
        );
        put_be32(&mut b, 20, 16);
        put_be32(&mut b, 100, 100);
        assert_eq!(
            Qcow2Header::parse(&b).unwrap_err().message(),
            "qcow2 header too short"
        );
    }

    #[test]
    fn unknown_features_named() {
        let t = feature_table();
        assert_eq!(
            unsupported_features(&[t], 1 << 1 | 1 << 7),
            "Unsupported qcow2 feature(s): corrupt bit, Unknown incompatible feature: 80"
        );
    }
}
