//! Creating qcow2 images in code (external snapshots, `snapshot=on`,
//! mirror and backup targets): the same layout as QEMU's qcow2_create,
//! a header, a refcount table and block, then the L1 table grown
//! through the ordinary open image.

use super::header::{build_first_cluster, feature_table, Extension, EXT_BACKING_FORMAT};
use super::*;

/// What an image is created with (QEMU's qcow2 creation options).
#[derive(Clone, Debug)]
pub struct CreateOptions {
    pub size: u64,
    pub cluster_size: u64,
    /// 2 (compat=0.10) or 3 (compat=1.1).
    pub version: u32,
    pub lazy_refcounts: bool,
    pub refcount_bits: u64,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    pub preallocation: qmp::qapi::PreallocMode,
}

impl Default for CreateOptions {
    fn default() -> CreateOptions {
        CreateOptions {
            size: 0,
            cluster_size: 65536,
            version: 3,
            lazy_refcounts: false,
            refcount_bits: 16,
            backing_file: None,
            backing_format: None,
            preallocation: qmp::qapi::PreallocMode::Off,
        }
    }
}

fn ioerr(what: &str) -> impl Fn(io::Error) -> BlockError + '_ {
    move |e| BlockError::generic(format!("{what}: {}", crate::error::strerror(&e)))
}

/// Writes a new image into `file` (whatever it held is gone), with
/// QEMU's checks and texts.
pub(crate) fn create(file: Arc<Node>, o: &CreateOptions) -> Result<()> {
    use qmp::qapi::PreallocMode;
    let cs = o.cluster_size;
    if !cs.is_power_of_two() || !(512..=(2 << 20)).contains(&cs) {
        return Err(BlockError::generic(
            "Cluster size must be a power of two between 512 and 2048k",
        ));
    }
    if o.backing_file.is_some() && o.preallocation != PreallocMode::Off {
        return Err(BlockError::generic(
            "Backing file and preallocation cannot be used at the same time",
        ));
    }
    if o.lazy_refcounts && o.version < 3 {
        return Err(BlockError::generic(
            "Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)",
        ));
    }
    if !o.refcount_bits.is_power_of_two() || o.refcount_bits > 64 {
        return Err(BlockError::generic(
            "Refcount width must be a power of two and may not exceed 64 bits",
        ));
    }
    if o.version < 3 && o.refcount_bits != 16 {
        return Err(BlockError::generic(
            "Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)",
        ));
    }
    let cluster_bits = cs.trailing_zeros();
    let refcount_order = o.refcount_bits.trailing_zeros();
    let size = o.size.div_ceil(512) * 512;

    let mut hdr = Qcow2Header {
        version: o.version,
        backing_file_offset: 0,
        backing_file_size: 0,
        cluster_bits,
        size: 0,
        crypt_method: 0,
        l1_size: 0,
        l1_table_offset: 3 * cs,
        refcount_table_offset: cs,
        refcount_table_clusters: 1,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible_features: 0,
        compatible_features: if o.lazy_refcounts {
            header::COMPAT_LAZY_REFCOUNTS
        } else {
            0
        },
        autoclear_features: 0,
        refcount_order,
        header_length: if o.version >= 3 { 104 } else { 72 },
    };
    let mut exts: Vec<Extension> = Vec::new();
    if let Some(f) = &o.backing_format {
        exts.push(Extension {
            kind: EXT_BACKING_FORMAT,
            data: f.as_bytes().to_vec(),
        });
    }
    if o.version >= 3 {
        exts.push(feature_table());
    }
    let mut first = build_first_cluster(&mut hdr, &exts, &[], o.backing_file.as_deref())?;
    first.resize(cs as usize, 0);
    let mut reftable = vec![0u8; cs as usize];
    put_be64(&mut reftable, 0, 2 * cs);
    let mut refblock = vec![0u8; cs as usize];
    for c in 0..3 {
        refcount::set_rc(&mut refblock, c, refcount_order, 1);
    }
    file.driver
        .truncate(0)
        .map_err(|e| e.prepend("Could not resize image: "))?;
    let write = |at: u64, b: &[u8]| file.write(at, b);
    write(0, &first)
        .and_then(|_| write(cs, &reftable))
        .and_then(|_| write(2 * cs, &refblock))
        .and_then(|_| file.flush())
        .map_err(ioerr("Could not write qcow2 header"))?;

    // Grow it to its size through the ordinary path.
    let opts = Qcow2Options {
        read_only: false,
        ..Default::default()
    };
    let img = Qcow2Image::open(file.clone(), None, &opts, None)
        .map_err(|e| e.prepend("Could not open the new image: "))?;
    {
        let mut st = img.lock();
        let r = st.truncate(size).map_err(ioerr("Could not resize image"))?;
        r.map_err(BlockError::generic)?;
        if o.preallocation != PreallocMode::Off {
            st.preallocate(o.preallocation)
                .map_err(ioerr("Could not preallocate metadata"))?;
        }
        st.flush_caches()
            .and_then(|_| st.file.flush())
            .map_err(ioerr("Could not write qcow2 metadata"))?;
    }
    drop(img);
    Ok(())
}

impl State {
    /// preallocation=metadata (and falloc/full): every guest cluster
    /// gets a host cluster; falloc reserves them on the host, full
    /// writes them with zeros.
    fn preallocate(&mut self, mode: qmp::qapi::PreallocMode) -> io::Result<()> {
        use qmp::qapi::PreallocMode;
        let cs = self.g.cluster_size;
        let size = self.hdr.size;
        let zeros = vec![0u8; cs as usize];
        let mut pos = 0;
        let mut end = 0;
        while pos < size {
            let l1i = self.l1_index(pos);
            let slot = self.l2_for_write(l1i)?;
            let l2off = self.l2_cache.get(slot).offset;
            let first = self.l2_index(pos);
            let n =
                ((self.g.l2_entries() as usize - first) as u64).min(size.div_ceil(cs) - pos / cs);
            let host = self.alloc_clusters(n)?;
            match mode {
                PreallocMode::Full => {
                    for k in 0..n {
                        self.file.write(host + k * cs, &zeros)?;
                    }
                }
                PreallocMode::Falloc => self.file.write_zeroes(host, n * cs, false)?,
                _ => {}
            }
            let slot = self.load_l2(l2off)?;
            for k in 0..n {
                self.set_l2_entry(slot, first + k as usize, (host + k * cs) | OFLAG_COPIED);
            }
            end = end.max(host + n * cs);
            pos += n * cs;
        }
        if end > self.file.size() {
            // The last byte makes the file its full length.
            self.file.write(end - 1, &[0])?;
        }
        Ok(())
    }
}
