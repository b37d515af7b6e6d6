//! CPU models and features for `-cpu`: KVM's supported CPUID, narrowed to
//! a model's feature set and adjusted by `+feat`/`-feat` (or `feat=on`,
//! `feat=off`), as QEMU's x86 CPU options do.

use kvm_bindings::CpuId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// (QEMU's feature name, leaf, subleaf, register, bit).
const FEATURES: &[(&str, u32, u32, Reg, u32)] = &[
    ("fpu", 1, 0, Reg::Edx, 0),
    ("vme", 1, 0, Reg::Edx, 1),
    ("de", 1, 0, Reg::Edx, 2),
    ("pse", 1, 0, Reg::Edx, 3),
    ("tsc", 1, 0, Reg::Edx, 4),
    ("msr", 1, 0, Reg::Edx, 5),
    ("pae", 1, 0, Reg::Edx, 6),
    ("mce", 1, 0, Reg::Edx, 7),
    ("cx8", 1, 0, Reg::Edx, 8),
    ("apic", 1, 0, Reg::Edx, 9),
    ("sep", 1, 0, Reg::Edx, 11),
    ("mtrr", 1, 0, Reg::Edx, 12),
    ("pge", 1, 0, Reg::Edx, 13),
    ("mca", 1, 0, Reg::Edx, 14),
    ("cmov", 1, 0, Reg::Edx, 15),
    ("pat", 1, 0, Reg::Edx, 16),
    ("pse36", 1, 0, Reg::Edx, 17),
    ("clflush", 1, 0, Reg::Edx, 19),
    ("mmx", 1, 0, Reg::Edx, 23),
    ("fxsr", 1, 0, Reg::Edx, 24),
    ("sse", 1, 0, Reg::Edx, 25),
    ("sse2", 1, 0, Reg::Edx, 26),
    ("ss", 1, 0, Reg::Edx, 27),
    ("ht", 1, 0, Reg::Edx, 28),
    ("pni", 1, 0, Reg::Ecx, 0),
    ("pclmulqdq", 1, 0, Reg::Ecx, 1),
    ("monitor", 1, 0, Reg::Ecx, 3),
    ("vmx", 1, 0, Reg::Ecx, 5),
    ("ssse3", 1, 0, Reg::Ecx, 9),
    ("fma", 1, 0, Reg::Ecx, 12),
    ("cx16", 1, 0, Reg::Ecx, 13),
    ("pcid", 1, 0, Reg::Ecx, 17),
    ("sse4.1", 1, 0, Reg::Ecx, 19),
    ("sse4.2", 1, 0, Reg::Ecx, 20),
    ("x2apic", 1, 0, Reg::Ecx, 21),
    ("movbe", 1, 0, Reg::Ecx, 22),
    ("popcnt", 1, 0, Reg::Ecx, 23),
    ("tsc-deadline", 1, 0, Reg::Ecx, 24),
    ("aes", 1, 0, Reg::Ecx, 25),
    ("xsave", 1, 0, Reg::Ecx, 26),
    ("avx", 1, 0, Reg::Ecx, 28),
    ("f16c", 1, 0, Reg::Ecx, 29),
    ("rdrand", 1, 0, Reg::Ecx, 30),
    ("hypervisor", 1, 0, Reg::Ecx, 31),
    ("fsgsbase", 7, 0, Reg::Ebx, 0),
    ("bmi1", 7, 0, Reg::Ebx, 3),
    ("avx2", 7, 0, Reg::Ebx, 5),
    ("smep", 7, 0, Reg::Ebx, 7),
    ("bmi2", 7, 0, Reg::Ebx, 8),
    ("erms", 7, 0, Reg::Ebx, 9),
    ("invpcid", 7, 0, Reg::Ebx, 10),
    ("avx512f", 7, 0, Reg::Ebx, 16),
    ("rdseed", 7, 0, Reg::Ebx, 18),
    ("adx", 7, 0, Reg::Ebx, 19),
    ("smap", 7, 0, Reg::Ebx, 20),
    ("clflushopt", 7, 0, Reg::Ebx, 23),
    ("sha-ni", 7, 0, Reg::Ebx, 29),
    ("umip", 7, 0, Reg::Ecx, 2),
    ("pku", 7, 0, Reg::Ecx, 3),
    ("xsaveopt", 0xd, 1, Reg::Eax, 0),
    ("xsavec", 0xd, 1, Reg::Eax, 1),
    ("xgetbv1", 0xd, 1, Reg::Eax, 2),
    ("xsaves", 0xd, 1, Reg::Eax, 3),
    ("lahf-lm", 0x8000_0001, 0, Reg::Ecx, 0),
    ("svm", 0x8000_0001, 0, Reg::Ecx, 2),
    ("abm", 0x8000_0001, 0, Reg::Ecx, 5),
    ("sse4a", 0x8000_0001, 0, Reg::Ecx, 6),
    ("3dnowprefetch", 0x8000_0001, 0, Reg::Ecx, 8),
    ("syscall", 0x8000_0001, 0, Reg::Edx, 11),
    ("nx", 0x8000_0001, 0, Reg::Edx, 20),
    ("pdpe1gb", 0x8000_0001, 0, Reg::Edx, 26),
    ("rdtscp", 0x8000_0001, 0, Reg::Edx, 27),
    ("lm", 0x8000_0001, 0, Reg::Edx, 29),
];

/// The features of QEMU's `kvm64` model; `qemu64` adds `lahf-lm`.
const KVM64: &[&str] = &[
    "fpu",
    "de",
    "pse",
    "tsc",
    "msr",
    "pae",
    "mce",
    "cx8",
    "apic",
    "sep",
    "mtrr",
    "pge",
    "mca",
    "cmov",
    "pat",
    "pse36",
    "clflush",
    "mmx",
    "fxsr",
    "sse",
    "sse2",
    "pni",
    "cx16",
    "syscall",
    "nx",
    "lm",
    "hypervisor",
    "x2apic",
];
const QEMU64_EXTRA: &[&str] = &["lahf-lm"];

/// The CPU models vmm offers, for `-cpu help`.
pub const MODELS: &[(&str, &str)] = &[
    ("host", "KVM processor with all supported host features"),
    (
        "max",
        "Enables all features supported by the accelerator in the current host",
    ),
    ("qemu64", "QEMU Virtual CPU version 2.5+ (feature set)"),
    ("kvm64", "Common KVM processor (feature set)"),
];

/// `-smp` topology and the APIC IDs it implies, as QEMU numbers them:
/// thread, core and socket in bit fields each as wide as its count needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
}

fn bits_for(count: u32) -> u32 {
    if count <= 1 {
        0
    } else {
        32 - (count - 1).leading_zeros()
    }
}

impl Topology {
    pub fn thread_bits(&self) -> u32 {
        bits_for(self.threads)
    }

    pub fn core_bits(&self) -> u32 {
        bits_for(self.cores)
    }

    /// The APIC ID of CPU `index`.
    pub fn apic_id(&self, index: u32) -> u32 {
        let threads = self.threads.max(1);
        let cores = self.cores.max(1);
        let thread = index % threads;
        let core = (index / threads) % cores;
        let socket = index / (threads * cores);
        (socket << (self.core_bits() + self.thread_bits())) | (core << self.thread_bits()) | thread
    }

    /// Logical processors in one package.
    pub fn per_socket(&self) -> u32 {
        self.cores.max(1) * self.threads.max(1)
    }
}

/// Fills the identification and topology leaves of one vCPU.
pub fn set_topology(cpuid: &mut CpuId, topo: &Topology, apic_id: u32) {
    let per_socket = topo.per_socket();
    for e in cpuid.as_mut_slice() {
        match (e.function, e.index) {
            (1, _) => {
                e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | (per_socket.min(255) << 16);
                if per_socket > 1 {
                    e.edx |= 1 << 28; // HTT: more than one logical CPU per package
                }
                e.ecx |= 1 << 31; // running under a hypervisor
            }
            (0xb, level) | (0x1f, level) => {
                let (shift, count, kind) = match level {
                    0 => (topo.thread_bits(), topo.threads.max(1), 1),
                    1 => (topo.thread_bits() + topo.core_bits(), per_socket, 2),
                    _ => (0, 0, 0),
                };
                e.eax = shift;
                e.ebx = count;
                e.ecx = (kind << 8) | level;
                e.edx = apic_id;
            }
            (0x8000_0008, _) => {
                // Cores per package minus one, and the APIC ID bits they use.
                let bits = topo.thread_bits() + topo.core_bits();
                e.ecx = (e.ecx & !0xf0ff) | (bits << 12) | (per_socket - 1).min(255);
            }
            _ => {}
        }
    }
}

/// A parsed `-cpu` option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuSpec {
    pub model: String,
    /// (feature, on) in the order given.
    pub changes: Vec<(String, bool)>,
}

impl CpuSpec {
    pub fn parse(text: &str) -> Result<CpuSpec, String> {
        let mut parts = text.split(',');
        let model = parts.next().unwrap_or("qemu64").to_string();
        if !MODELS.iter().any(|(m, _)| *m == model) {
            return Err(format!("unable to find CPU model '{model}'"));
        }
        let mut changes = Vec::new();
        for p in parts.filter(|p| !p.is_empty()) {
            let (name, on) = if let Some(n) = p.strip_prefix('+') {
                (n, true)
            } else if let Some(n) = p.strip_prefix('-') {
                (n, false)
            } else if let Some((n, v)) = p.split_once('=') {
                match v {
                    "on" | "yes" | "true" => (n, true),
                    "off" | "no" | "false" => (n, false),
                    _ => return Err(format!("Property '{n}' doesn't take value '{v}'")),
                }
            } else {
                (p, true)
            };
            // QEMU accepts `sse4_2`, `sse4.2` and `sse4-2` alike.
            let norm = |n: &str| n.replace(['.', '-'], "_");
            let Some(f) = FEATURES.iter().find(|f| norm(f.0) == norm(name)) else {
                return Err(format!("Property '.{name}' not found"));
            };
            changes.push((f.0.to_string(), on));
        }
        Ok(CpuSpec { model, changes })
    }
}

fn reg_mut(e: &mut kvm_bindings::kvm_cpuid_entry2, r: Reg) -> &mut u32 {
    match r {
        Reg::Eax => &mut e.eax,
        Reg::Ebx => &mut e.ebx,
        Reg::Ecx => &mut e.ecx,
        Reg::Edx => &mut e.edx,
    }
}

fn set_feature(cpuid: &mut CpuId, name: &str, on: bool, supported: &CpuId) {
    let Some(&(_, leaf, sub, reg, bit)) = FEATURES.iter().find(|f| f.0 == name) else {
        return;
    };
    let host_has = supported
        .as_slice()
        .iter()
        .find(|e| e.function == leaf && (e.index == sub || leaf != 7 && leaf != 0xd))
        .is_some_and(|e| {
            let mut e = *e;
            *reg_mut(&mut e, reg) & (1 << bit) != 0
        });
    for e in cpuid.as_mut_slice() {
        if e.function == leaf && (e.index == sub || leaf != 7 && leaf != 0xd) {
            let r = reg_mut(e, reg);
            // A feature KVM cannot give stays off, as QEMU's KVM filtering.
            if on && (host_has || name == "hypervisor") {
                *r |= 1 << bit;
            } else {
                *r &= !(1 << bit);
            }
        }
    }
}

/// Narrows KVM's supported CPUID to the model and applies the changes.
pub fn apply(spec: &CpuSpec, supported: &CpuId) -> CpuId {
    let mut cpuid = supported.clone();
    let extra: Option<&[&str]> = match spec.model.as_str() {
        "qemu64" => Some(QEMU64_EXTRA),
        "kvm64" => Some(&[]),
        _ => None,
    };
    if let Some(extra) = extra {
        for (name, ..) in FEATURES {
            let on = KVM64.contains(name) || extra.contains(name);
            set_feature(&mut cpuid, name, on, supported);
        }
    }
    for (name, on) in &spec.changes {
        set_feature(&mut cpuid, name, *on, supported);
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apic_ids_pack_threads_cores_and_sockets() {
        let t = Topology {
            sockets: 2,
            cores: 3,
            threads: 1,
        };
        let ids: Vec<u32> = (0..6).map(|i| t.apic_id(i)).collect();
        assert_eq!(ids, [0, 1, 2, 4, 5, 6]);
        let t = Topology {
            sockets: 1,
            cores: 2,
            threads: 2,
        };
        assert_eq!(
            (0..4).map(|i| t.apic_id(i)).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn parses_qemu_spellings() {
        let s = CpuSpec::parse("host,-cx16,+avx,xsave=off,sse4_2").unwrap();
        assert_eq!(s.model, "host");
        assert_eq!(
            s.changes,
            vec![
                ("cx16".into(), false),
                ("avx".into(), true),
                ("xsave".into(), false),
                ("sse4.2".into(), true)
            ]
        );
        assert_eq!(
            CpuSpec::parse("pentium9").unwrap_err(),
            "unable to find CPU model 'pentium9'"
        );
        assert_eq!(
            CpuSpec::parse("host,-bogus").unwrap_err(),
            "Property '.bogus' not found"
        );
    }
}
