//! `memory-backend-ram` and `memory-backend-file`: host memory allocated
//! when the object is created, with QEMU's knobs (merge, dump, prealloc,
//! NUMA policy), ready for guest RAM, NUMA nodes and DIMMs to map.

use crate::machine::memory::HostMapping;
use crate::qom::props::{Access, ObjectState, PropInfo, PropInput};
use crate::qom::tree::Tree;
use qmp::Error;
use serde_json::Value;
use std::any::Any;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// QEMU's MAX_NODES: the highest host node a policy can name, plus one.
const MAX_NODES: u16 = 128;

/// HostMemPolicy, in the order of both QAPI and Linux's MPOL_* values.
const POLICIES: &[&str] = &["default", "preferred", "bind", "interleave"];

/// Where the memory comes from.
pub enum Source {
    Ram,
    File {
        mem_path: Option<String>,
        discard_data: bool,
        /// `align`: where the mapping starts (0: the file's page size).
        align: u64,
    },
}

pub struct MemoryBackend {
    type_name: &'static str,
    source: Source,
    size: u64,
    /// `share`: the memory is MAP_SHARED (a file's pages, or anonymous
    /// memory other processes can be handed).
    share: bool,
    merge: bool,
    dump: bool,
    prealloc: bool,
    host_nodes: Vec<u16>,
    policy: usize,
    mapping: Option<Arc<HostMapping>>,
    /// Guest RAM is made of it (QEMU's "mapped"): object-del refuses.
    in_guest: AtomicBool,
}

fn errno_error(what: &str) -> Error {
    Error::generic(format!(
        "{what}: {}",
        block::strerror(&std::io::Error::last_os_error())
    ))
}

impl MemoryBackend {
    /// `merge` and `dump` default to the machine's mem-merge and
    /// dump-guest-core (both on), `prealloc` to -mem-prealloc (off).
    pub fn new(type_name: &'static str, source: Source) -> MemoryBackend {
        MemoryBackend {
            type_name,
            source,
            size: 0,
            share: false,
            merge: true,
            dump: true,
            prealloc: false,
            host_nodes: Vec::new(),
            policy: 0,
            mapping: None,
            in_guest: AtomicBool::new(false),
        }
    }

    /// The memory, for guest RAM to be made of; None when something
    /// already uses it for that (or it has none, which completion rules
    /// out). The backend is in use from then on.
    pub fn map_into_guest(&self) -> Option<Arc<HostMapping>> {
        let m = self.mapping.clone()?;
        (!self.in_guest.swap(true, Ordering::Relaxed)).then_some(m)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn memdev(&self, id: &str) -> qmp::qapi::Memdev {
        use qmp::qapi::HostMemPolicy;
        qmp::qapi::Memdev {
            id: Some(id.to_string()),
            size: self.size,
            merge: self.merge,
            dump: self.dump,
            prealloc: self.prealloc,
            host_nodes: self.host_nodes.clone(),
            policy: HostMemPolicy::ALL[self.policy],
        }
    }

    fn madvise(&self, advice: libc::c_int) {
        if let Some(m) = &self.mapping {
            // SAFETY: advising on our own mapping. Failure (a kernel
            // without KSM, say) leaves the memory usable, as in QEMU.
            unsafe { libc::madvise(m.addr(), m.len(), advice) };
        }
    }

    fn apply_merge_and_dump(&self) {
        self.madvise(if self.merge {
            libc::MADV_MERGEABLE
        } else {
            libc::MADV_UNMERGEABLE
        });
        self.madvise(if self.dump {
            libc::MADV_DODUMP
        } else {
            libc::MADV_DONTDUMP
        });
    }

    fn preallocate(&self) {
        if let Some(m) = &self.mapping {
            preallocate(m);
        }
    }

    /// `id`: the object's name, which names its file in a directory.
    fn map(&self, id: &str) -> Result<HostMapping, Error> {
        let len = usize::try_from(self.size)
            .map_err(|_| Error::generic("memory backend size does not fit in the address space"))?;
        let share = if self.share {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        let (mem_path, align) = match &self.source {
            Source::Ram => {
                // SAFETY: a fresh mapping at an address the kernel chooses.
                let addr = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        len,
                        libc::PROT_READ | libc::PROT_WRITE,
                        share | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                        -1,
                        0,
                    )
                };
                if addr == libc::MAP_FAILED {
                    return Err(errno_error("unable to map backing store for guest RAM"));
                }
                // SAFETY: a fresh read-write mapping of `len` bytes, owned
                // by nothing else.
                return Ok(unsafe { HostMapping::adopt(addr, len) });
            }
            Source::File {
                mem_path, align, ..
            } => (mem_path, *align),
        };
        let Some(path) = mem_path else {
            return Err(Error::generic("mem-path property not set"));
        };
        map_file(
            path,
            &format!("/objects/{id}"),
            self.size,
            align,
            self.share,
        )
    }

    fn bind(&self, m: &HostMapping) -> Result<(), Error> {
        let policy = self.policy;
        if !self.host_nodes.is_empty() && policy == 0 {
            return Err(Error::generic(
                "host-nodes must be empty for policy default, or you should explicitly specify a policy other than default",
            ));
        }
        if self.host_nodes.is_empty() && policy != 0 {
            return Err(Error::generic(format!(
                "host-nodes must be set for policy {}",
                POLICIES[policy]
            )));
        }
        if policy == 0 {
            return Ok(());
        }
        let mut mask = [0u64; (MAX_NODES as usize).div_ceil(64) + 1];
        for n in &self.host_nodes {
            mask[usize::from(*n) / 64] |= 1 << (n % 64);
        }
        let maxnode = self
            .host_nodes
            .iter()
            .max()
            .map_or(0, |n| u64::from(*n) + 1);
        const MPOL_MF_STRICT: u64 = 1;
        const MPOL_MF_MOVE: u64 = 2;
        // SAFETY: mbind on our own mapping with a mask of maxnode bits.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mbind,
                m.addr(),
                m.len(),
                policy as u64,
                mask.as_ptr(),
                maxnode + 1,
                MPOL_MF_STRICT | MPOL_MF_MOVE,
            )
        };
        if r != 0 {
            return Err(errno_error("cannot bind memory to host NUMA nodes"));
        }
        Ok(())
    }

    fn frozen(&self) -> Result<(), Error> {
        if self.mapping.is_some() {
            Err(Error::generic("cannot change property value"))
        } else {
            Ok(())
        }
    }
}

/// Maps `size` bytes of the file at `path` (a directory: a fresh,
/// unlinked file in it named after the region `name`) at a multiple of
/// `align` (0: the file's page size), shared with the file or private:
/// memory-backend-file's memory and `-mem-path`'s guest RAM.
pub fn map_file(
    path: &str,
    name: &str,
    size: u64,
    align: u64,
    share: bool,
) -> Result<HostMapping, Error> {
    let len = usize::try_from(size)
        .map_err(|_| Error::generic("memory backend size does not fit in the address space"))?;
    let share = if share {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    let file = open_backing_file(path, name, size)?;
    let page = file_page_size(&file);
    if !align.is_multiple_of(page) {
        return Err(Error::generic(format!(
            "alignment 0x{align:x} must be multiples of page size 0x{page:x}"
        )));
    }
    let align = usize::try_from(align.max(page))
        .map_err(|_| Error::generic("alignment does not fit in the address space"))?;
    // Reserve room to place the mapping at an aligned address, as
    // QEMU's qemu_ram_mmap does, then give back what is left over.
    let reserve = len
        .checked_add(align)
        .ok_or_else(|| Error::generic("memory backend size does not fit in the address space"))?;
    // SAFETY: a fresh inaccessible reservation the kernel places.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            reserve,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(errno_error("unable to map backing store for guest RAM"));
    }
    let start = (base as usize).next_multiple_of(align);
    // SAFETY: [start, start + len) lies inside the reservation made
    // above, which MAP_FIXED replaces with the file's pages.
    let addr = unsafe {
        libc::mmap(
            start as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            share | libc::MAP_FIXED,
            file.as_raw_fd(),
            0,
        )
    };
    let head = start - base as usize;
    let tail = reserve - head - len;
    if addr == libc::MAP_FAILED {
        let e = errno_error("unable to map backing store for guest RAM");
        // SAFETY: the whole reservation is ours.
        unsafe { libc::munmap(base, reserve) };
        return Err(e);
    }
    // SAFETY: the parts of our reservation before and after the file
    // mapping, which nothing uses.
    unsafe {
        if head > 0 {
            libc::munmap(base, head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
    }
    // SAFETY: a fresh read-write mapping of `len` bytes, owned by
    // nothing else.
    Ok(unsafe { HostMapping::adopt(addr, len) })
}

/// Touches every page so the host backs them now (`prealloc`,
/// `-mem-prealloc`).
pub fn preallocate(m: &HostMapping) {
    // SAFETY: page size query has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    let base = m.addr().cast::<u8>();
    for off in (0..m.len()).step_by(page) {
        // SAFETY: off < len, inside a writable mapping; a volatile
        // read-write keeps the content and forces a private page.
        unsafe {
            let p = base.add(off);
            p.write_volatile(p.read_volatile());
        }
    }
}

impl Drop for MemoryBackend {
    /// `discard-data`: the file's contents need not survive the object
    /// (QEMU punches them out rather than writing them back).
    fn drop(&mut self) {
        if let (
            Source::File {
                discard_data: true, ..
            },
            Some(m),
        ) = (&self.source, &self.mapping)
        {
            // SAFETY: advice on our own mapping, which nothing else uses
            // once the object goes (guest RAM's backends cannot be
            // deleted).
            unsafe { libc::madvise(m.addr(), m.len(), libc::MADV_REMOVE) };
        }
    }
}

/// The page size behind `file`: a hugetlbfs file's huge page size, else
/// the host's.
fn file_page_size(file: &std::fs::File) -> u64 {
    const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
    // SAFETY: fstatfs fills the struct for a descriptor we own.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } == 0
        && fs.f_type as i64 == HUGETLBFS_MAGIC
    {
        return fs.f_bsize as u64;
    }
    // SAFETY: a page size query has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as u64
}

/// The file behind memory-backend-file: a directory gets a fresh,
/// unlinked file; a file is created if missing and grown to `size`.
fn open_backing_file(path: &str, name: &str, size: u64) -> Result<std::fs::File, Error> {
    let is_dir = std::fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false);
    let file = if is_dir {
        // QEMU's name: the region's, with '/' made '_' for mkstemp.
        let name = name.replace('/', "_");
        let mut tmp = std::ffi::CString::new(format!("{path}/qemu_back_mem.{name}.XXXXXX"))
            .map_err(|_| Error::generic("mem-path contains a NUL byte"))?
            .into_bytes_with_nul();
        // SAFETY: mkstemp edits the NUL-terminated template in place.
        let fd = unsafe { libc::mkstemp(tmp.as_mut_ptr() as *mut libc::c_char) };
        if fd < 0 {
            return Err(errno_error(&format!(
                "unable to create backing store for guest RAM in {path}"
            )));
        }
        // SAFETY: unlinking the NUL-terminated path mkstemp wrote.
        unsafe { libc::unlink(tmp.as_ptr() as *const libc::c_char) };
        // SAFETY: mkstemp returned a descriptor we now own.
        unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    } else {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| {
                Error::generic(format!(
                    "can't open backing store {path} for guest RAM: {}",
                    block::strerror(&e)
                ))
            })?
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len < size {
        file.set_len(size)
            .map_err(|e| Error::generic(format!("ftruncate: {e}")))?;
    }
    Ok(file)
}

impl ObjectState for MemoryBackend {
    fn properties(&self) -> Vec<PropInfo> {
        let mut p = vec![
            PropInfo::new("merge", "bool", Access::ReadWrite),
            PropInfo::new("dump", "bool", Access::ReadWrite),
            PropInfo::new("prealloc", "bool", Access::ReadWrite),
            PropInfo::new("size", "int", Access::ReadWrite),
            PropInfo::new("host-nodes", "int", Access::ReadWrite),
            PropInfo::new("policy", "HostMemPolicy", Access::ReadWrite),
            PropInfo::new("share", "bool", Access::ReadWrite),
        ];
        if let Source::File { .. } = self.source {
            p.push(PropInfo::new("discard-data", "bool", Access::ReadWrite));
            p.push(PropInfo::new("mem-path", "string", Access::ReadWrite));
            p.push(PropInfo::new("align", "int", Access::ReadWrite));
        }
        p
    }

    fn get(&self, name: &str) -> Result<Value, Error> {
        Ok(match (name, &self.source) {
            ("merge", _) => Value::from(self.merge),
            ("dump", _) => Value::from(self.dump),
            ("prealloc", _) => Value::from(self.prealloc),
            ("size", _) => Value::from(self.size),
            ("host-nodes", _) => Value::from(self.host_nodes.clone()),
            ("policy", _) => Value::from(POLICIES[self.policy]),
            ("mem-path", Source::File { mem_path, .. }) => {
                Value::from(mem_path.clone().unwrap_or_default())
            }
            ("share", _) => Value::from(self.share),
            ("discard-data", Source::File { discard_data, .. }) => Value::from(*discard_data),
            ("align", Source::File { align, .. }) => Value::from(*align),
            _ => return Err(crate::qom::props::permission_denied()),
        })
    }

    fn set(&mut self, input: &PropInput, _tree: &Tree) -> Result<(), Error> {
        match input.name {
            "merge" => {
                self.merge = input.bool()?;
                self.apply_merge_and_dump();
            }
            "dump" => {
                self.dump = input.bool()?;
                self.apply_merge_and_dump();
            }
            "prealloc" => {
                let on = input.bool()?;
                if on && !self.prealloc {
                    self.preallocate();
                }
                self.prealloc = on;
            }
            "size" => {
                self.frozen()?;
                let size = input.size()?;
                if size == 0 {
                    return Err(Error::generic(format!(
                        "Property '{}.size' doesn't take value '0'",
                        self.type_name
                    )));
                }
                self.size = size;
            }
            "host-nodes" => {
                let nodes = input.u16_list()?;
                if let Some(n) = nodes.iter().find(|n| **n >= MAX_NODES) {
                    return Err(Error::generic(format!("Invalid host-nodes value: {n}")));
                }
                self.host_nodes = nodes;
            }
            "policy" => self.policy = input.choice(POLICIES)?,
            "share" => {
                self.frozen()?;
                self.share = input.bool()?;
            }
            name => {
                let frozen = self.frozen();
                let Source::File {
                    mem_path,
                    discard_data,
                    align,
                } = &mut self.source
                else {
                    return Err(crate::qom::props::permission_denied());
                };
                match name {
                    // What happens to the file at the end may change
                    // any time, as in QEMU.
                    "discard-data" => *discard_data = input.bool()?,
                    "mem-path" => {
                        frozen?;
                        *mem_path = Some(input.str()?);
                    }
                    _ => {
                        frozen?;
                        *align = input.size()?;
                    }
                }
            }
        }
        Ok(())
    }

    fn complete(&mut self, id: &str, _tree: &Tree) -> Result<(), Error> {
        if self.size == 0 {
            return Err(Error::generic("can't create backend with size 0"));
        }
        let m = self.map(id)?;
        self.bind(&m)?;
        self.mapping = Some(Arc::new(m));
        self.apply_merge_and_dump();
        if self.prealloc {
            self.preallocate();
        }
        Ok(())
    }

    fn can_be_deleted(&self) -> bool {
        !self.in_guest.load(Ordering::Relaxed)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
