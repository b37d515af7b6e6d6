//! The KVM machine (`pc`): guest RAM, the VM with its in-kernel irqchip and
//! PIT, the vCPU threads, the legacy devices on the port bus, ACPI tables,
//! and the kernel it boots.

pub mod acpi;
pub mod boot;
pub mod bzimage;
pub mod cpuid;
pub mod firmware;
pub mod memory;
pub mod mptable;
pub mod vcpu;

use boot::{ElfKernel, ACPI_ADDR};
use bzimage::BzImage;
use devices::legacy::{Cmos, DebugExit, ResetControl, Serial16550, I8042};
use devices::pci::{I440fx, PciConfigIo, PciRoot, Piix3, Piix3Ide, Piix4Pm};
use devices::{acpi_pm::AcpiPm, Bus, InterruptLine, PlatformRequest, RequestSink};
use kvm_bindings::{
    kvm_pit_config, kvm_regs, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_MAX_CPUID_ENTRIES,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VmFd};
use memory::{GuestRam, RamLayout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use vcpu::{EventSink, VcpuShared};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

/// What the machine tells the main loop, from any thread.
#[derive(Clone, Debug, PartialEq)]
pub enum MachineEvent {
    Platform(PlatformRequest),
    GuestReset,
    GuestShutdown,
    InternalError(String),
    /// A device's request failed: the event to emit, and whether the
    /// error policy stops the VM (`io-error`).
    BlockIoError {
        event: qmp::qapi::BlockIoErrorEvent,
        stop: bool,
    },
    /// An event of the block layer to emit as it is
    /// (BLOCK_IMAGE_CORRUPTED).
    Block(qmp::qapi::Event),
    /// A mux's `C-a s`: commit every drive into its backing file.
    CommitAll,
}

/// One vCPU's registers, as KVM reports them.
pub struct CpuRegisters {
    pub regs: kvm_regs,
    pub sregs: kvm_bindings::kvm_sregs,
    pub fpu: kvm_bindings::kvm_fpu,
    pub debug: kvm_bindings::kvm_debugregs,
    /// Interrupts are inhibited for one instruction (after `sti`, `mov ss`).
    pub interrupt_shadow: bool,
    pub halted: bool,
}

/// Where the identity map and TSS go (below the BIOS, as QEMU puts them).
const IDENTITY_MAP_ADDR: u64 = 0xfeffc000;
const TSS_ADDR: usize = 0xfeffd000;

#[derive(Debug)]
pub struct MachineError(pub String);

impl std::fmt::Display for MachineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> MachineError + '_ {
    move |e| MachineError(format!("{what}: {e}"))
}

/// The VM handle devices reach their interrupt lines through; replaced
/// when a reset rebuilds the VM.
type CurrentVm = Arc<RwLock<Option<Arc<VmFd>>>>;

/// An ISA interrupt line into the in-kernel PIC and IOAPIC.
struct IsaIrq {
    vm: CurrentVm,
    irq: u32,
    stats: Arc<IrqStats>,
}

/// The ISA lines' rising edges as the VMM drives them (QEMU 2.11's
/// kvm-i8259 statistics): what the in-kernel PIT raises inside KVM is
/// not seen here, so it is not counted, as in QEMU.
#[derive(Default)]
struct IrqStats {
    levels: [AtomicBool; 16],
    counts: [std::sync::atomic::AtomicU64; 16],
}

impl IrqStats {
    fn record(&self, irq: u32, high: bool) {
        let Some(level) = self.levels.get(irq as usize) else {
            return;
        };
        if level.swap(high, Ordering::Relaxed) != high && high {
            self.counts[irq as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Rising edges seen on each of ISA IRQs 0-15.
    pub fn counts(&self) -> [u64; 16] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }
}

impl InterruptLine for IsaIrq {
    fn set_level(&self, high: bool) {
        self.stats.record(self.irq, high);
        if let Some(vm) = self.vm.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            // An irq line error cannot be reported to the device; the
            // guest simply sees no interrupt.
            let _ = vm.set_irq_line(self.irq, high);
        }
    }
}

/// MSI and MSI-X messages into the in-kernel APICs: directly
/// (KVM_SIGNAL_MSI), or through a vector's irqfd and a GSI route of its
/// own (`vector`).
struct KvmMsi {
    vm: CurrentVm,
    routes: Arc<Mutex<MsiRoutes>>,
}

/// The MSI routes vmm added to KVM's GSI routing table.
#[derive(Default)]
struct MsiRoutes {
    /// GSI -> (address, data).
    by_gsi: std::collections::BTreeMap<u32, (u64, u32)>,
    next_gsi: u32,
}

/// GSIs 0-23 are the irqchip pins; MSI routes take the rest, up to KVM's
/// table size.
const FIRST_MSI_GSI: u32 = 24;
const MAX_GSI: u32 = 4096;

impl MsiRoutes {
    /// Sets VM `vm`'s whole routing table: KVM's default pin routes (PIC
    /// and IOAPIC for GSIs 0-15, IOAPIC alone for 16-23), which setting a
    /// table replaces, then the MSI routes.
    fn push(&self, vm: &VmFd) -> std::io::Result<()> {
        let mut entries = Vec::with_capacity(40 + self.by_gsi.len());
        let irqchip = |gsi: u32, chip: u32, pin: u32| {
            let mut e = kvm_bindings::kvm_irq_routing_entry {
                gsi,
                type_: kvm_bindings::KVM_IRQ_ROUTING_IRQCHIP,
                ..Default::default()
            };
            e.u.irqchip = kvm_bindings::kvm_irq_routing_irqchip { irqchip: chip, pin };
            e
        };
        for gsi in 0..24 {
            entries.push(irqchip(gsi, kvm_bindings::KVM_IRQCHIP_IOAPIC, gsi));
            if gsi < 16 {
                let chip = if gsi < 8 {
                    kvm_bindings::KVM_IRQCHIP_PIC_MASTER
                } else {
                    kvm_bindings::KVM_IRQCHIP_PIC_SLAVE
                };
                entries.push(irqchip(gsi, chip, gsi % 8));
            }
        }
        for (&gsi, &(address, data)) in &self.by_gsi {
            let mut e = kvm_bindings::kvm_irq_routing_entry {
                gsi,
                type_: kvm_bindings::KVM_IRQ_ROUTING_MSI,
                ..Default::default()
            };
            e.u.msi = kvm_bindings::kvm_irq_routing_msi {
                address_lo: address as u32,
                address_hi: (address >> 32) as u32,
                data,
                ..Default::default()
            };
            entries.push(e);
        }
        let table = kvm_bindings::KvmIrqRouting::from_entries(&entries)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::E2BIG))?;
        vm.set_gsi_routing(&table)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }
}

/// One vector's irqfd: KVM injects the route's message whenever the
/// eventfd is written, from whatever thread (the device's I/O thread).
struct KvmMsiVector {
    vm: CurrentVm,
    routes: Arc<Mutex<MsiRoutes>>,
    gsi: u32,
    fd: vmm_sys_util::eventfd::EventFd,
    /// The message routed and the VM the irqfd is registered with (held
    /// weakly: a new VM never reuses its address while this lives).
    routed: Mutex<Option<Routed>>,
}

/// A vector's message and the VM its irqfd is registered with.
type Routed = ((u64, u32), std::sync::Weak<VmFd>);

impl devices::platform::MsiVector for KvmMsiVector {
    fn send(&self, address: u64, data: u32) -> std::io::Result<()> {
        let vm = self
            .vm
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENODEV))?;
        let mut routed = self.routed.lock().unwrap_or_else(|e| e.into_inner());
        let same_vm = routed
            .as_ref()
            .and_then(|(_, w)| w.upgrade())
            .is_some_and(|v| Arc::ptr_eq(&v, &vm));
        let same_message = routed.as_ref().is_some_and(|(m, _)| *m == (address, data));
        if !same_vm || !same_message {
            let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            routes.by_gsi.insert(self.gsi, (address, data));
            routes.push(&vm)?;
            if !same_vm {
                vm.register_irqfd(&self.fd, self.gsi)
                    .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
            }
            *routed = Some(((address, data), Arc::downgrade(&vm)));
        }
        self.fd.write(1)
    }
}

impl devices::platform::MsiSink for KvmMsi {
    fn send_msi(&self, address: u64, data: u32) {
        if let Some(vm) = self.vm.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let msi = kvm_bindings::kvm_msi {
                address_lo: address as u32,
                address_hi: (address >> 32) as u32,
                data,
                ..Default::default()
            };
            // A message the APIC refuses is lost, as on hardware.
            let _ = vm.signal_msi(msi);
        }
    }

    fn vector(&self) -> Option<Box<dyn devices::platform::MsiVector>> {
        let gsi = {
            let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            let gsi = routes.next_gsi.max(FIRST_MSI_GSI);
            if gsi >= MAX_GSI {
                return None;
            }
            routes.next_gsi = gsi + 1;
            gsi
        };
        let fd = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).ok()?;
        Some(Box::new(KvmMsiVector {
            vm: self.vm.clone(),
            routes: self.routes.clone(),
            gsi,
            fd,
            routed: Mutex::new(None),
        }))
    }
}

/// KVM's ioeventfds: guest writes to a virtio notify register (MMIO, or
/// the legacy I/O port) signal the queue's eventfd in the kernel, without
/// an exit to the VMM.
struct KvmIoEvents {
    vm: CurrentVm,
}

impl KvmIoEvents {
    /// Runs `ioctl` on the current VM (ENODEV while none exists).
    fn on_vm(
        &self,
        ioctl: impl FnOnce(&VmFd) -> Result<(), kvm_ioctls::Error>,
    ) -> std::io::Result<()> {
        let vm = self.vm.read().unwrap_or_else(|e| e.into_inner());
        let vm = vm
            .as_ref()
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENODEV))?;
        ioctl(vm).map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }
}

impl devices::platform::IoEventRegistry for KvmIoEvents {
    fn register_mmio(&self, addr: u64, fd: &vmm_sys_util::eventfd::EventFd) -> std::io::Result<()> {
        let at = kvm_ioctls::IoEventAddress::Mmio(addr);
        self.on_vm(|vm| vm.register_ioevent(fd, &at, kvm_ioctls::NoDatamatch))
    }

    fn unregister_mmio(
        &self,
        addr: u64,
        fd: &vmm_sys_util::eventfd::EventFd,
    ) -> std::io::Result<()> {
        let at = kvm_ioctls::IoEventAddress::Mmio(addr);
        self.on_vm(|vm| vm.unregister_ioevent(fd, &at, kvm_ioctls::NoDatamatch))
    }

    fn register_pio(
        &self,
        port: u16,
        value: u16,
        fd: &vmm_sys_util::eventfd::EventFd,
    ) -> std::io::Result<()> {
        // A u16 datamatch: only 2-byte writes of exactly `value` match.
        let at = kvm_ioctls::IoEventAddress::Pio(u64::from(port));
        self.on_vm(|vm| vm.register_ioevent(fd, &at, value))
    }

    fn unregister_pio(
        &self,
        port: u16,
        value: u16,
        fd: &vmm_sys_util::eventfd::EventFd,
    ) -> std::io::Result<()> {
        let at = kvm_ioctls::IoEventAddress::Pio(u64::from(port));
        self.on_vm(|vm| vm.unregister_ioevent(fd, &at, value))
    }
}

struct PlatformSink(EventSink);

impl RequestSink for PlatformSink {
    fn request(&self, request: PlatformRequest) {
        if let PlatformRequest::DebugExit(v) = request {
            // As QEMU's isa-debug-exit: the process ends right here, before
            // the guest runs another instruction (status has 8 bits).
            std::process::exit(((v << 1) | 1) as i32);
        }
        (self.0)(MachineEvent::Platform(request));
    }
}

/// One virtio-blk-pci device.
pub struct VirtioBlkSpec {
    pub backend: Arc<dyn devices::virtio::block::BlockBackend>,
    pub config: devices::virtio::block::BlockConfig,
    /// `addr=`: the PCI slot, else the first free one.
    pub slot: Option<u8>,
    /// `id=`.
    pub id: String,
    /// A transitional device, with the legacy interface in I/O BAR 0
    /// (`disable-legacy=off`, and `auto` on the `pc` machine's PCI bus).
    pub legacy: bool,
}

/// Where the VMM places PCI memory BARs, as firmware would: in the hole
/// below the IOAPIC.
const PCI_MMIO_START: u64 = 0xe000_0000;
/// Where the VMM places PCI I/O BARs, as SeaBIOS does: from 0xc000 up.
const PCI_IO_START: u64 = 0xc000;

/// `-numa`, as the machine needs it.
pub struct NumaLayout {
    /// Bytes of RAM in each node, node 0 first; RAM is laid out node
    /// after node.
    pub node_mem: Vec<u64>,
    /// The node of every possible CPU, by index.
    pub cpu_node: Vec<u16>,
    /// The distance table, when `-numa dist` gave one.
    pub distances: Option<Vec<Vec<u8>>>,
    /// With `memdev=`: each node's memory backend, node 0 first; guest
    /// RAM is made of them.
    pub backends: Vec<Arc<memory::HostMapping>>,
}

/// What the machine is built from.
pub struct MachineConfig {
    pub ram_size: u64,
    pub cpus: u32,
    pub cpu: cpuid::CpuSpec,
    /// `-smp sockets=,cores=,threads=`.
    pub topology: cpuid::Topology,
    pub kernel: Vec<u8>,
    pub initrd: Option<Vec<u8>>,
    pub cmdline: String,
    /// One entry per serial port, COM1 first (at most four): its chardev
    /// (None: a port whose output is discarded).
    pub serials: Vec<Option<devices::chardev::Chardev>>,
    /// The DSDT offers S3 (not with `-global PIIX4_PM.disable_s3=1`).
    pub acpi_s3: bool,
    /// `-global kvm-pit.lost_tick_policy`: delay (re-inject, KVM's
    /// default) or discard.
    pub pit_reinject: bool,
    /// `-bios FILE`: its name and contents; the machine then starts at
    /// the reset vector in that firmware instead of in `kernel`.
    pub firmware: Option<(String, Vec<u8>)>,
    /// `-nographic` (fw_cfg tells the firmware to use the serial port).
    pub nographic: bool,
    /// `-numa`: the guest's NUMA nodes (SRAT/SLIT, and RAM made of
    /// memory backends).
    pub numa: Option<NumaLayout>,
    /// `-mem-path`: the file mapping guest RAM is made of (without
    /// `-numa node,memdev=`).
    pub ram_file: Option<Arc<memory::HostMapping>>,
}

pub struct Machine {
    kvm: Kvm,
    ram: GuestRam,
    kernel: Kernel,
    cmdline: String,
    /// The DSDT offers S3.
    acpi_s3: bool,
    /// The PIT re-injects lost ticks (kvm-pit lost_tick_policy=delay).
    pit_reinject: bool,
    cpu: cpuid::CpuSpec,
    cpus: u32,
    topology: cpuid::Topology,
    vm: CurrentVm,
    vcpus: Vec<Arc<VcpuShared>>,
    threads: Vec<JoinHandle<()>>,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    pci: Arc<PciRoot>,
    events: EventSink,
    pm: Arc<Mutex<AcpiPm>>,
    serials: Vec<Arc<Mutex<Serial16550>>>,
    /// The virtio-pci devices (told when the VM runs again).
    virtio: Vec<Arc<Mutex<devices::virtio::pci::VirtioPci>>>,
    /// What virtio-pci devices deliver MSI-X messages and ioeventfds
    /// through.
    msi: Arc<dyn devices::platform::MsiSink>,
    ioevents: Arc<dyn devices::platform::IoEventRegistry>,
    /// Where the next device's memory and I/O BARs go.
    next_mmio: u64,
    next_io: u64,
    /// An isa-debug-exit is on the port bus.
    debug_exit: bool,
    /// Ends the RTC timer thread.
    rtc_stop: Arc<AtomicBool>,
    rtc_timer: Option<JoinHandle<()>>,
    /// The vCPUs are to run (the run state is `running`).
    running: bool,
    /// With -bios: the KVM slots of the BIOS shadow area.
    shadow: Option<Arc<Mutex<firmware::ShadowRam>>>,
    /// The keyboard controller, for the keys and mouse events the
    /// monitor sends.
    i8042: Arc<Mutex<I8042>>,
    /// What the ISA interrupt lines did (kept across resets, as QEMU
    /// keeps its counters).
    irq_stats: Arc<IrqStats>,
    /// `-numa` (its backends now belong to `ram`).
    numa: Option<NumaLayout>,
}

/// The next free I/O range of `size` bytes (a power of two) from
/// `next`, aligned to its size as a BAR must be, in steps of at least 64
/// bytes.
fn take_io_range(next: &mut u64, size: u64) -> u64 {
    let step = size.max(64);
    let base = next.next_multiple_of(step);
    *next = base + step;
    base
}

/// Drives the CMOS RTC's update, alarm and periodic interrupts: wakes at
/// the periodic rate when the guest enabled it, else a few times a second
/// to catch each second's update.
fn spawn_rtc_timer(
    cmos: Arc<Mutex<Cmos>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("rtc".into())
        .spawn(move || {
            let idle = std::time::Duration::from_millis(50);
            let mut next_periodic: Option<std::time::Instant> = None;
            while !stop.load(Ordering::Relaxed) {
                let interval = cmos
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .periodic_interval();
                let now = std::time::Instant::now();
                let due = match (interval, next_periodic) {
                    (Some(i), Some(n)) if now >= n => {
                        next_periodic = Some(n + i);
                        true
                    }
                    (Some(i), None) => {
                        next_periodic = Some(now + i);
                        false
                    }
                    (Some(_), Some(_)) => false,
                    (None, _) => {
                        next_periodic = None;
                        false
                    }
                };
                cmos.lock().unwrap_or_else(|e| e.into_inner()).tick(due);
                let sleep = match next_periodic {
                    Some(n) => n
                        .saturating_duration_since(std::time::Instant::now())
                        .min(idle),
                    None => idle,
                };
                std::thread::sleep(sleep);
            }
        })
}

impl Machine {
    pub fn new(config: MachineConfig, events: EventSink) -> Result<Machine, MachineError> {
        vcpu::install_kick_handler();
        let kvm = Kvm::new().map_err(err("Could not access KVM kernel module"))?;
        let layout = RamLayout::pc(config.ram_size);
        let mut numa = config.numa;
        let backends = numa
            .as_mut()
            .map(|n| std::mem::take(&mut n.backends))
            .unwrap_or_default();
        let ram = if !backends.is_empty() {
            GuestRam::from_backends(layout, backends)
        } else if let Some(file) = config.ram_file {
            GuestRam::from_backends(layout, vec![file])
        } else {
            GuestRam::new(layout)
        }
        .map_err(err("guest memory"))?;
        let kernel = if let Some((path, image)) = &config.firmware {
            Kernel::Firmware(firmware::Firmware::load(path, image)?)
        } else if BzImage::is_bzimage(&config.kernel) {
            Kernel::BzImage(BzImage::parse(&config.kernel, config.initrd).map_err(err("-kernel"))?)
        } else {
            if config.initrd.is_some() {
                return Err(MachineError(
                    "-initrd: only a bzImage kernel takes an initrd".into(),
                ));
            }
            Kernel::Pvh(ElfKernel::parse(config.kernel).map_err(err("-kernel"))?)
        };
        let vm: CurrentVm = Arc::new(RwLock::new(None));
        let sink: Arc<dyn RequestSink> = Arc::new(PlatformSink(events.clone()));
        let irq_stats = Arc::new(IrqStats::default());
        let irq = |n: u32| -> Arc<dyn InterruptLine> {
            Arc::new(IsaIrq {
                vm: vm.clone(),
                irq: n,
                stats: irq_stats.clone(),
            })
        };

        let pio = Arc::new(Bus::new());
        let mmio = Arc::new(Bus::new());
        // COM1-COM4 at their PC ports and interrupts.
        let com = [(0x3f8u64, 4u32), (0x2f8, 3), (0x3e8, 4), (0x2e8, 3)];
        let serials: Vec<Arc<Mutex<Serial16550>>> = config
            .serials
            .into_iter()
            .zip(com)
            .map(|(out, (_, line))| Arc::new(Mutex::new(Serial16550::new(irq(line), out))))
            .collect();
        for uart in &serials {
            Serial16550::attach(uart).map_err(MachineError)?;
        }
        let pm = Arc::new(Mutex::new(AcpiPm::new(
            irq(devices::acpi_pm::SCI_IRQ),
            sink.clone(),
        )));
        let below = layout.below_4g;
        let above = layout.above_4g;
        let insert = |bus: &Bus, base: u64, len: u64, d: devices::SharedDevice| {
            bus.insert(base, len, d).map_err(err("port bus"))
        };
        for (uart, (port, _)) in serials.iter().zip(com) {
            insert(&pio, port, 8, uart.clone())?;
        }
        // One i8042 answers at 0x60 and 0x64 (offsets 0 and 4); its
        // keyboard interrupts on ISA IRQ 1, its mouse on IRQ 12.
        let i8042 = Arc::new(Mutex::new(I8042::new(sink.clone(), irq(1), irq(12))));
        insert(&pio, 0x60, 5, i8042.clone())?;
        let cmos = Arc::new(Mutex::new(Cmos::new(below, above, sink.clone(), irq(8))));
        insert(&pio, 0x70, 2, cmos.clone())?;
        let rtc_stop = Arc::new(AtomicBool::new(false));
        let rtc_timer = spawn_rtc_timer(cmos, rtc_stop.clone()).map_err(err("RTC timer"))?;
        insert(
            &pio,
            devices::acpi_pm::PM_BASE,
            devices::acpi_pm::PM_LEN,
            pm.clone(),
        )?;
        // The PCI root bus: the i440FX host bridge and the PIIX3 ISA bridge;
        // configuration mechanism #1 shares 0xcf9 with the reset register.
        let pci = PciRoot::new(pio.clone(), mmio.clone());
        let mut host_bridge = I440fx::new();
        let shadow = match &kernel {
            Kernel::Firmware(fw) => {
                // The shadow area is copied from and to RAM at one host
                // address: the first megabyte must be one mapping.
                if ram
                    .mem
                    .find_region(GuestAddress(0))
                    .is_none_or(|r| r.len() < firmware::SHADOW_END)
                {
                    return Err(MachineError(
                        "-bios: the first NUMA node's memory must hold the first megabyte".into(),
                    ));
                }
                let ram_host = ram
                    .mem
                    .get_host_address(GuestAddress(0))
                    .map_err(err("guest memory"))? as u64;
                let shadow = Arc::new(Mutex::new(firmware::ShadowRam::new(
                    vm.clone(),
                    ram_host,
                    fw,
                )?));
                let s = shadow.clone();
                let events = events.clone();
                host_bridge = host_bridge.with_pam_listener(Box::new(move |pam| {
                    let r = s.lock().unwrap_or_else(|e| e.into_inner()).apply(pam);
                    if let Err(e) = r {
                        (events)(MachineEvent::InternalError(e.to_string()));
                    }
                }));
                insert(
                    &pio,
                    devices::legacy::fw_cfg::FW_CFG_IO_BASE,
                    devices::legacy::fw_cfg::FW_CFG_IO_LEN,
                    Arc::new(Mutex::new(fw_cfg(
                        config.cpus.max(1),
                        &layout,
                        config.nographic,
                    ))),
                )?;
                Some(shadow)
            }
            _ => None,
        };
        pci.add((0, 0), Arc::new(Mutex::new(host_bridge)))
            .map_err(MachineError)?;
        pci.add((1, 0), Arc::new(Mutex::new(Piix3::new())))
            .map_err(MachineError)?;
        pci.add((1, 1), Arc::new(Mutex::new(Piix3Ide::new())))
            .map_err(MachineError)?;
        let pm_block: devices::SharedDevice = pm.clone();
        pci.add(
            (1, 3),
            Arc::new(Mutex::new(
                Piix4Pm::new(devices::acpi_pm::PM_BASE as u16).with_block(
                    pio.clone(),
                    pm_block,
                    devices::acpi_pm::PM_LEN,
                ),
            )),
        )
        .map_err(MachineError)?;
        let msi: Arc<dyn devices::platform::MsiSink> = Arc::new(KvmMsi {
            vm: vm.clone(),
            routes: Arc::new(Mutex::new(MsiRoutes::default())),
        });
        let ioevents: Arc<dyn devices::platform::IoEventRegistry> =
            Arc::new(KvmIoEvents { vm: vm.clone() });
        let reset_control: devices::SharedDevice =
            Arc::new(Mutex::new(ResetControl::new(sink.clone())));
        insert(
            &pio,
            0xcf8,
            8,
            Arc::new(Mutex::new(PciConfigIo::new(
                pci.clone(),
                Some(reset_control),
            ))),
        )?;
        let mut m = Machine {
            kvm,
            ram,
            kernel,
            cmdline: config.cmdline,
            acpi_s3: config.acpi_s3,
            pit_reinject: config.pit_reinject,
            cpu: config.cpu,
            cpus: config.cpus.max(1),
            topology: config.topology,
            vm,
            vcpus: Vec::new(),
            threads: Vec::new(),
            pio,
            mmio,
            pci,
            events,
            pm,
            serials,
            virtio: Vec::new(),
            msi,
            ioevents,
            next_mmio: PCI_MMIO_START,
            next_io: PCI_IO_START,
            debug_exit: false,
            rtc_stop,
            rtc_timer: Some(rtc_timer),
            running: false,
            shadow,
            i8042,
            irq_stats,
            numa,
        };
        m.build_vm()?;
        Ok(m)
    }

    /// Creates the KVM VM and its vCPUs in power-on state, with the kernel
    /// and boot data freshly loaded. Used at start and for every reset.
    fn build_vm(&mut self) -> Result<(), MachineError> {
        let vm = self
            .kvm
            .create_vm()
            .map_err(err("failed to initialize KVM"))?;
        vm.set_identity_map_address(IDENTITY_MAP_ADDR)
            .map_err(err("KVM identity map"))?;
        vm.set_tss_address(TSS_ADDR).map_err(err("KVM TSS"))?;
        // Memory first: once the irqchip exists, KVM makes every memory
        // slot change wait for an SRCU grace period (milliseconds here).
        for (slot, (gpa, len)) in self.ram_slots().into_iter().enumerate() {
            let host = self
                .ram
                .mem
                .get_host_address(GuestAddress(gpa))
                .map_err(err("guest memory"))?;
            let r = kvm_bindings::kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: gpa,
                memory_size: len,
                userspace_addr: host as u64,
            };
            // SAFETY: the mapping stays alive as long as `self.ram`, which
            // outlives every VM this machine creates.
            unsafe { vm.set_user_memory_region(r) }.map_err(err("KVM memory"))?;
        }
        if let Kernel::Firmware(fw) = &self.kernel {
            fw.map_rom(&vm)?;
        }
        if let Some(shadow) = &self.shadow {
            // Power-on PAM values (all zero): the BIOS shows below 1 MiB.
            let mut s = shadow.lock().unwrap_or_else(|e| e.into_inner());
            s.forget_slots();
            s.apply_on(&vm, &[0; 7])?;
        }
        vm.create_irq_chip().map_err(err("KVM irqchip"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(err("KVM PIT"))?;
        if !self.pit_reinject {
            crate::kvm::set_pit_reinject(&vm, false).map_err(err("KVM PIT reinject"))?;
        }
        let entry = self.load_boot_data()?;
        let vm = Arc::new(vm);
        let supported = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(err("KVM CPUID"))?;
        let mut cpuid = cpuid::apply(&self.cpu, &supported);
        let mut vcpus = Vec::new();
        for index in 0..self.cpus {
            // KVM takes the vCPU id as its APIC ID.
            let apic_id = self.topology.apic_id(index);
            let fd = vm
                .create_vcpu(u64::from(apic_id))
                .map_err(err("KVM vCPU"))?;
            cpuid::set_topology(&mut cpuid, &self.topology, apic_id);
            fd.set_cpuid2(&cpuid).map_err(err("KVM CPUID"))?;
            setup_lapic(&fd)?;
            let fpu = kvm_bindings::kvm_fpu {
                fcw: 0x37f,
                mxcsr: 0x1f80,
                ..Default::default()
            };
            fd.set_fpu(&fpu).map_err(err("KVM FPU"))?;
            // With firmware the boot vCPU starts at the reset vector, in
            // the state KVM creates it in, and the firmware sets the MSRs.
            if let Some(entry) = entry {
                set_boot_msrs(&fd)?;
                if index == 0 {
                    set_boot_entry(&fd, entry)?;
                }
            }
            vcpus.push(VcpuShared::new(index as usize, fd, !self.running));
        }
        *self.vm.write().unwrap_or_else(|e| e.into_inner()) = Some(vm);
        for v in &vcpus {
            let name = format!("CPU {}/KVM", v.index);
            let t = vcpu::spawn(
                v.clone(),
                self.pio.clone(),
                self.mmio.clone(),
                self.events.clone(),
                name,
            )
            .map_err(err("vCPU thread"))?;
            self.threads.push(t);
        }
        self.vcpus = vcpus;
        Ok(())
    }

    /// Guest RAM as KVM slots: (guest address, length). With firmware
    /// the BIOS shadow area is left out; its PAM segments map it.
    fn ram_slots(&self) -> Vec<(u64, u64)> {
        let mut slots = Vec::new();
        for region in self.ram.mem.iter() {
            let (start, len) = (region.start_addr().0, region.len());
            let end = start + len;
            if self.shadow.is_some() && start < firmware::SHADOW_END && end > firmware::SHADOW_START
            {
                if start < firmware::SHADOW_START {
                    slots.push((start, firmware::SHADOW_START - start));
                }
                if end > firmware::SHADOW_END {
                    slots.push((firmware::SHADOW_END, end - firmware::SHADOW_END));
                }
            } else {
                slots.push((start, len));
            }
        }
        slots
    }

    /// Writes kernel, boot data, GDT and ACPI tables; returns the entry
    /// registers for the boot vCPU (None: firmware starts at the reset
    /// vector and does all of it).
    fn load_boot_data(&self) -> Result<Option<EntryPoint>, MachineError> {
        if let Kernel::Firmware(_) = &self.kernel {
            return Ok(None);
        }
        let mem = &self.ram.mem;
        let long_mode = matches!(&self.kernel, Kernel::Pvh(k) if k.long_mode);
        mem.write_slice(&boot_gdt(long_mode), GuestAddress(GDT_ADDR))
            .map_err(err("GDT"))?;
        mem.write_slice(
            &mptable::build(&self.apic_ids()),
            GuestAddress(mptable::MPTABLE_ADDR),
        )
        .map_err(err("MP table"))?;
        let numa = self.numa.as_ref().map(|n| acpi::NumaTables {
            cpus: (0..n.cpu_node.len() as u32)
                .map(|i| (self.topology.apic_id(i), n.cpu_node[i as usize]))
                .collect(),
            node_mem: &n.node_mem,
            below_4g: self.ram.layout.below_4g,
            distances: n.distances.as_deref(),
        });
        let (tables, rsdp) = acpi::build(&self.apic_ids(), self.acpi_s3, numa.as_ref());
        mem.write_slice(&tables, GuestAddress(ACPI_ADDR))
            .map_err(err("ACPI tables"))?;
        match &self.kernel {
            Kernel::Pvh(k) if k.long_mode => {
                k.load(mem, &self.ram.layout).map_err(err("-kernel"))?;
                write_identity_page_tables(mem)?;
                let zero_page =
                    bzimage::write_boot_params_for_elf(mem, &self.ram.layout, &self.cmdline)
                        .map_err(err("-kernel"))?;
                Ok(Some(EntryPoint {
                    long_mode: true,
                    rip: k.entry,
                    rbx: 0,
                    rsi: zero_page,
                }))
            }
            Kernel::Pvh(k) => {
                k.load(mem, &self.ram.layout).map_err(err("-kernel"))?;
                let si = boot::write_start_info(mem, &self.ram.layout, &self.cmdline, rsdp)
                    .map_err(err("PVH start info"))?;
                Ok(Some(EntryPoint {
                    long_mode: false,
                    rip: k.entry,
                    rbx: si,
                    rsi: 0,
                }))
            }
            Kernel::BzImage(k) => {
                let (rip, zero_page) = k
                    .load(mem, &self.ram.layout, &self.cmdline)
                    .map_err(err("-kernel"))?;
                Ok(Some(EntryPoint {
                    long_mode: false,
                    rip,
                    rbx: 0,
                    rsi: zero_page,
                }))
            }
            Kernel::Firmware(_) => Ok(None),
        }
    }

    fn teardown_vm(&mut self) {
        for v in &self.vcpus {
            v.stop();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.vcpus.clear();
        *self.vm.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Every function on PCI bus 0, for query-pci.
    pub fn pci_functions(&self) -> Vec<devices::pci::host::FunctionInfo> {
        self.pci.functions()
    }

    /// The configuration space of the PCI function at (slot, function).
    pub fn pci_config(&self, devfn: devices::pci::host::DevFn) -> Option<[u8; 256]> {
        self.pci.config_bytes(devfn)
    }

    /// How guest RAM is split around the PCI hole.
    pub fn ram_layout(&self) -> RamLayout {
        self.ram.layout
    }

    /// The APIC ID of every vCPU, by index.
    fn apic_ids(&self) -> Vec<u32> {
        (0..self.cpus).map(|i| self.topology.apic_id(i)).collect()
    }

    pub fn cpu_count(&self) -> usize {
        self.vcpus.len()
    }

    /// Runs `f` with every vCPU stopped (for reading their registers),
    /// then lets them run again if they ran before.
    fn with_vcpus_paused<T>(&mut self, f: impl FnOnce(&Self) -> T) -> T {
        let was_running = self.running;
        if was_running {
            self.pause_all();
        }
        let r = f(self);
        if was_running {
            self.resume_all();
        }
        r
    }

    /// The in-kernel 8259s' state, master then slave (KVM_GET_IRQCHIP,
    /// which KVM answers under its own lock while vCPUs run, as QEMU
    /// reads it); None while no VM exists (a reset that failed).
    pub fn pic_states(&self) -> Option<[kvm_bindings::kvm_pic_state; 2]> {
        let vm = self.vm.read().unwrap_or_else(|e| e.into_inner()).clone()?;
        let chip = |id: u32| {
            let mut c = kvm_bindings::kvm_irqchip {
                chip_id: id,
                ..Default::default()
            };
            vm.get_irqchip(&mut c).ok()?;
            // SAFETY: chips 0 and 1 are PICs; KVM filled the `pic` member.
            Some(unsafe { c.chip.pic })
        };
        Some([chip(KVM_IRQCHIP_PIC_MASTER)?, chip(KVM_IRQCHIP_PIC_SLAVE)?])
    }

    /// Rising edges the VMM drove on each ISA interrupt line.
    pub fn isa_irq_counts(&self) -> [u64; 16] {
        self.irq_stats.counts()
    }

    /// With `-bios`: the firmware's name as given, its guest address and
    /// size (the ROM at the top of 4 GiB).
    pub fn firmware_rom(&self) -> Option<(&str, u64, u64)> {
        match &self.kernel {
            Kernel::Firmware(fw) => Some((fw.name(), fw.base(), fw.size())),
            _ => None,
        }
    }

    /// Every register of vCPU `cpu` (for the monitor's `info registers`).
    pub fn cpu_registers(&mut self, cpu: usize) -> Option<CpuRegisters> {
        self.with_vcpus_paused(|m| {
            let fd = m
                .vcpus
                .get(cpu)?
                .fd
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            Some(CpuRegisters {
                regs: fd.get_regs().ok()?,
                sregs: fd.get_sregs().ok()?,
                fpu: fd.get_fpu().ok()?,
                debug: fd.get_debug_regs().unwrap_or_default(),
                interrupt_shadow: fd.get_vcpu_events().is_ok_and(|e| e.interrupt.shadow != 0),
                halted: fd
                    .get_mp_state()
                    .is_ok_and(|s| s.mp_state == kvm_bindings::KVM_MP_STATE_HALTED),
            })
        })
    }

    /// (instruction pointer, halted, thread id) of every vCPU.
    pub fn cpu_states(&mut self) -> Vec<(u64, bool, i32)> {
        self.with_vcpus_paused(|m| {
            m.vcpus
                .iter()
                .map(|v| {
                    let fd = v.fd.lock().unwrap_or_else(|e| e.into_inner());
                    let rip = fd.get_regs().map(|r| r.rip).unwrap_or(0);
                    let halted = fd
                        .get_mp_state()
                        .map(|s| s.mp_state == kvm_bindings::KVM_MP_STATE_HALTED)
                        .unwrap_or(false);
                    (rip, halted, v.tid.load(std::sync::atomic::Ordering::SeqCst))
                })
                .collect()
        })
    }

    /// Guest-physical memory; bytes outside RAM read as zero.
    pub fn read_physical(&self, addr: u64, out: &mut [u8]) {
        out.fill(0);
        let mut done = 0usize;
        while done < out.len() {
            let gpa = addr.wrapping_add(done as u64);
            let chunk = (out.len() - done).min(0x1000 - (gpa as usize & 0xfff));
            // A page outside RAM stays zero.
            let _ = self
                .ram
                .mem
                .read_slice(&mut out[done..done + chunk], GuestAddress(gpa));
            done += chunk;
        }
    }

    /// Where guest-physical `gpa` is in this process (it is RAM).
    pub fn host_address(&self, gpa: u64) -> Option<*mut u8> {
        self.ram.mem.get_host_address(GuestAddress(gpa)).ok()
    }

    /// An I/O port read of `size` bytes as a vCPU would make it (the
    /// monitor's `i`); a port no device has reads as all ones.
    pub fn port_read(&self, port: u16, size: usize) -> u32 {
        let mut data = [0xffu8; 4];
        let data = &mut data[..size.clamp(1, 4)];
        if !self.pio.read(u64::from(port), data) {
            data.fill(0xff);
        }
        data.iter()
            .rev()
            .fold(0u32, |v, b| (v << 8) | u32::from(*b))
    }

    /// An I/O port write as a vCPU would make it (the monitor's `o`).
    pub fn port_write(&self, port: u16, size: usize, value: u32) {
        let bytes = value.to_le_bytes();
        let _ = self.pio.write(u64::from(port), &bytes[..size.clamp(1, 4)]);
    }

    /// The guest-physical address of `gva` in the page tables of vCPU `cpu`.
    pub fn translate(&mut self, cpu: usize, gva: u64) -> Option<u64> {
        self.with_vcpus_paused(|m| {
            let v = m.vcpus.get(cpu)?;
            let fd = v.fd.lock().unwrap_or_else(|e| e.into_inner());
            let t = fd.translate_gva(gva).ok()?;
            (t.valid != 0).then_some(t.physical_address)
        })
    }

    pub fn press_power_button(&self) {
        self.pm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .press_power_button();
    }

    pub fn wake(&self) {
        self.pm.lock().unwrap_or_else(|e| e.into_inner()).wake();
    }

    /// The keyboard sends one key event (input-send-event).
    pub fn key_event(&self, key: devices::legacy::Key, down: bool) {
        self.i8042
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .key_event(key, down);
    }

    /// The PS/2 mouse moves (input-send-event `rel`, HMP mouse_move).
    pub fn mouse_motion(&self, axis: qmp::qapi::InputAxis, value: i64) {
        self.i8042
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mouse_motion(axis, value);
    }

    /// A PS/2 mouse button goes down or up.
    pub fn mouse_button(&self, button: qmp::qapi::InputButton, down: bool) {
        self.i8042
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mouse_button(button, down);
    }

    /// The PS/2 mouse sends what its events added up to; true while a
    /// button is held.
    pub fn mouse_sync(&self) -> bool {
        self.i8042
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mouse_sync()
    }

    /// Presses `keys` in order, then after `hold` releases them in the
    /// reverse order (QEMU's send-key); returns at once.
    pub fn send_keys(&self, keys: Vec<devices::legacy::Key>, hold: std::time::Duration) {
        {
            let mut kbd = self.i8042.lock().unwrap_or_else(|e| e.into_inner());
            for k in &keys {
                kbd.key_event(*k, true);
            }
        }
        let kbd = self.i8042.clone();
        let release = move || {
            std::thread::sleep(hold);
            let mut kbd = kbd.lock().unwrap_or_else(|e| e.into_inner());
            for k in keys.iter().rev() {
                kbd.key_event(*k, false);
            }
        };
        // Without a thread the keys would stay down: release them at once.
        if std::thread::Builder::new()
            .name("send-key".into())
            .spawn(release.clone())
            .is_err()
        {
            release();
        }
    }

    /// An NMI to every vCPU. A running vCPU holds its descriptor inside
    /// KVM_RUN, so the vCPUs stop for the moment it takes.
    pub fn inject_nmi(&mut self) -> Result<(), MachineError> {
        self.with_vcpus_paused(|m| {
            for v in &m.vcpus {
                v.fd.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .nmi()
                    .map_err(err("NMI"))?;
            }
            Ok(())
        })
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.teardown_vm();
        self.rtc_stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.rtc_timer.take() {
            let _ = t.join();
        }
    }
}

impl Machine {
    /// Stops every vCPU; returns once none runs guest code.
    pub fn pause_all(&mut self) {
        self.running = false;
        for v in &self.vcpus {
            v.pause();
        }
    }

    /// The run state left `running` (QEMU's VM state change handlers and
    /// its drain of the block layer): the devices' I/O threads finish
    /// what is in flight and start nothing new until `vm_running`.
    pub fn vm_stopped(&self) {
        for d in &self.virtio {
            d.lock().unwrap_or_else(|e| e.into_inner()).vm_stopped();
        }
    }

    pub fn resume_all(&mut self) {
        self.running = true;
        for v in &self.vcpus {
            v.resume();
        }
    }

    /// The run state became `running` (QEMU's VM state change
    /// handlers): devices that an error policy stopped retry their
    /// requests.
    pub fn vm_running(&self) {
        for d in &self.virtio {
            d.lock().unwrap_or_else(|e| e.into_inner()).vm_running();
        }
    }

    /// Power-on state again: a fresh KVM VM (vCPUs, irqchip, PIT), the
    /// devices reset, the kernel and boot data reloaded, RAM kept.
    pub fn reset(&mut self) {
        let running = self.running;
        self.running = false;
        self.teardown_vm();
        for uart in &self.serials {
            uart.lock().unwrap_or_else(|e| e.into_inner()).reset();
        }
        self.pci.reset();
        self.pm.lock().unwrap_or_else(|e| e.into_inner()).reset();
        self.i8042.lock().unwrap_or_else(|e| e.into_inner()).reset();
        self.running = running;
        if let Err(e) = self.build_vm() {
            (self.events)(MachineEvent::InternalError(format!("reset failed: {e}")));
        }
    }
}

/// Devices added after the board: `-device` in command-line order, and
/// `device_add` before the guest first runs. BARs are placed here, as
/// firmware would place them.
impl Machine {
    /// What the machine reports to the main loop through.
    pub fn event_sink(&self) -> EventSink {
        self.events.clone()
    }

    /// Whether slot `slot` of PCI bus 0 holds a function.
    pub fn pci_slot_in_use(&self, slot: u8) -> bool {
        self.pci.free_slot(slot) != Some(slot)
    }

    /// The first free PCI slot a device may take (0 and 1 are the
    /// board's).
    pub fn free_pci_slot(&self) -> Option<u8> {
        self.pci.free_slot(2)
    }

    /// A virtio-blk-pci function; returns the slot it took.
    pub fn add_virtio_blk(&mut self, spec: VirtioBlkSpec) -> Result<u8, MachineError> {
        let slot = match spec.slot {
            Some(s) => s,
            None => self
                .free_pci_slot()
                .ok_or_else(|| MachineError("PCI: no free slot".into()))?,
        };
        // INTx: pin A of even slots on IRQ 10, odd ones on IRQ 11 (MSI-X
        // is what drivers use).
        let line = if slot % 2 == 0 { 10 } else { 11 };
        let backend = spec.backend.clone();
        let dev = devices::virtio::block::VirtioBlk::new(spec.backend, spec.config);
        let modern = self.next_mmio;
        let mut next_io = self.next_io;
        let legacy = spec.legacy.then(|| {
            let size = devices::virtio::pci::VirtioPci::legacy_bar_size(&dev);
            take_io_range(&mut next_io, size)
        });
        let bars = devices::virtio::pci::VirtioBars {
            modern,
            msix: modern + 0x4000,
            legacy,
        };
        let irq: Arc<dyn InterruptLine> = Arc::new(IsaIrq {
            vm: self.vm.clone(),
            irq: u32::from(line),
            stats: self.irq_stats.clone(),
        });
        let pci_dev = devices::virtio::pci::VirtioPci::new(
            Box::new(dev),
            self.ram.mem.clone(),
            self.msi.clone(),
            irq,
            line,
            bars,
            spec.id,
            Some(self.ioevents.clone()),
        )
        .map_err(err("virtio-blk-pci"))?;
        // A resized disk tells the driver through a config change.
        backend.on_resize(pci_dev.config_change_notifier());
        let pci_dev = Arc::new(Mutex::new(pci_dev));
        self.pci
            .add((slot, 0), pci_dev.clone())
            .map_err(MachineError)?;
        self.next_mmio += 0x8000;
        self.next_io = next_io;
        self.virtio.push(pci_dev);
        Ok(slot)
    }

    /// isa-debug-exit at `base` (vmm has room for one).
    pub fn add_debug_exit(&mut self, base: u16, len: u16) -> Result<(), MachineError> {
        if self.debug_exit {
            return Err(MachineError(
                "not available yet: vmm supports one isa-debug-exit device".into(),
            ));
        }
        let sink: Arc<dyn RequestSink> = Arc::new(PlatformSink(self.events.clone()));
        self.pio
            .insert(
                u64::from(base),
                u64::from(len.max(1)),
                Arc::new(Mutex::new(DebugExit::new(sink))),
            )
            .map_err(err("port bus"))?;
        self.debug_exit = true;
        Ok(())
    }
}

fn setup_lapic(fd: &kvm_ioctls::VcpuFd) -> Result<(), MachineError> {
    let mut lapic = fd.get_lapic().map_err(err("KVM LAPIC"))?;
    let set = |regs: &mut [std::os::raw::c_char; 1024], off: usize, v: u32| {
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            regs[off + i] = *b as std::os::raw::c_char;
        }
    };
    // LINT0 delivers the 8259's ExtINT, LINT1 the NMI, as on a PC.
    set(&mut lapic.regs, 0x350, 0x700);
    set(&mut lapic.regs, 0x360, 0x400);
    fd.set_lapic(&lapic).map_err(err("KVM LAPIC"))
}

/// The kernels a machine boots.
enum Kernel {
    /// An ELF with a PVH entry note.
    Pvh(ElfKernel),
    /// A Linux bzImage.
    BzImage(BzImage),
    /// `-bios`: firmware from the reset vector; it boots what it finds.
    Firmware(firmware::Firmware),
}

/// The firmware configuration a BIOS reads: QEMU's signature, RAM size,
/// CPU counts, `-nographic` (SeaBIOS then uses COM1 as its console),
/// and the e820 map of RAM.
fn fw_cfg(cpus: u32, layout: &RamLayout, nographic: bool) -> devices::legacy::FwCfg {
    use devices::legacy::fw_cfg as k;
    let mut f = devices::legacy::FwCfg::new();
    f.add_item(k::KEY_RAM_SIZE, layout.total().to_le_bytes().to_vec());
    f.add_item(
        k::KEY_NOGRAPHIC,
        u16::from(nographic).to_le_bytes().to_vec(),
    );
    f.add_item(k::KEY_NB_CPUS, (cpus as u16).to_le_bytes().to_vec());
    f.add_item(k::KEY_MAX_CPUS, (cpus as u16).to_le_bytes().to_vec());
    f.add_item(k::KEY_BOOT_MENU, 0u16.to_le_bytes().to_vec());
    // No NUMA nodes: the count, then a zero per CPU.
    f.add_item(k::KEY_NUMA, vec![0; 8 * (1 + cpus as usize)]);
    let mut e820 = Vec::new();
    let mut add = |addr: u64, len: u64| {
        e820.extend_from_slice(&addr.to_le_bytes());
        e820.extend_from_slice(&len.to_le_bytes());
        e820.extend_from_slice(&1u32.to_le_bytes()); // E820_RAM
    };
    add(0, layout.below_4g);
    if layout.above_4g > 0 {
        add(memory::FOUR_GIB, layout.above_4g);
    }
    f.add_file("etc/e820", e820);
    f
}

/// Registers the boot vCPU starts with.
#[derive(Clone, Copy)]
struct EntryPoint {
    /// 64-bit mode with identity paging (a plain vmlinux ELF), else
    /// 32-bit protected mode without paging (PVH, bzImage).
    long_mode: bool,
    rip: u64,
    /// PVH: the start info.
    rbx: u64,
    /// Linux boot protocol: the zero page.
    rsi: u64,
}

/// A GDT with the selectors both entry protocols name: 0x10 flat 32-bit
/// code, 0x18 flat data.
const GDT_ADDR: u64 = 0x500;

fn boot_gdt(long_mode: bool) -> Vec<u8> {
    // 0x10 is __BOOT_CS in both protocols: 32-bit, or 64-bit (L=1).
    let code = if long_mode {
        0x00af_9b00_0000_ffff
    } else {
        0x00cf_9b00_0000_ffff
    };
    let entries: [u64; 4] = [0, 0, code, 0x00cf_9300_0000_ffff];
    entries.iter().flat_map(|e| e.to_le_bytes()).collect()
}

/// Page tables for a 64-bit entry: the first 4 GiB identity-mapped with
/// 2 MiB pages (PML4, one PDPT, four page directories), as a 64-bit
/// boot loader leaves them; returns CR3.
const PML4_ADDR: u64 = 0x9000;
const BOOT_STACK: u64 = 0x8ff0;

fn write_identity_page_tables(mem: &vm_memory::GuestMemoryMmap) -> Result<u64, MachineError> {
    let pdpt = PML4_ADDR + 0x1000;
    let pd = pdpt + 0x1000;
    let mut pages = vec![0u8; 6 * 0x1000];
    let mut put = |off: u64, v: u64| {
        let o = off as usize;
        pages[o..o + 8].copy_from_slice(&v.to_le_bytes());
    };
    put(0, pdpt | 0x3);
    for i in 0..4u64 {
        put(0x1000 + 8 * i, (pd + 0x1000 * i) | 0x3);
    }
    for i in 0..2048u64 {
        put(0x2000 + 8 * i, (i << 21) | 0x83);
    }
    mem.write_slice(&pages, GuestAddress(PML4_ADDR))
        .map_err(err("page tables"))?;
    Ok(PML4_ADDR)
}

const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// MTRRs enabled (bit 11), write-back (6) where no range says otherwise.
const MTRR_DEF_TYPE_WB: u64 = (1 << 11) | 6;
/// IA32_MISC_ENABLE: fast string operations, as QEMU's reset state has.
const MISC_ENABLE_FAST_STRING: u64 = 1;

/// The MSRs a boot loader leaves for a kernel that starts without
/// firmware (PVH, bzImage, ELF): MTRRs on with write-back as the default
/// type (without them Linux turns PAT off too) and fast strings.
fn set_boot_msrs(fd: &kvm_ioctls::VcpuFd) -> Result<(), MachineError> {
    let entry = |index, data| kvm_bindings::kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    let mut read = kvm_bindings::Msrs::from_entries(&[entry(MSR_IA32_MISC_ENABLE, 0)])
        .map_err(|e| MachineError(format!("KVM MSRs: {e:?}")))?;
    fd.get_msrs(&mut read).map_err(err("KVM MSRs"))?;
    let misc = read.as_slice()[0].data | MISC_ENABLE_FAST_STRING;
    let set = kvm_bindings::Msrs::from_entries(&[
        entry(MSR_IA32_MISC_ENABLE, misc),
        entry(MSR_MTRR_DEF_TYPE, MTRR_DEF_TYPE_WB),
    ])
    .map_err(|e| MachineError(format!("KVM MSRs: {e:?}")))?;
    let n = fd.set_msrs(&set).map_err(err("KVM MSRs"))?;
    if n != 2 {
        return Err(MachineError(format!("KVM MSRs: {n} of 2 set")));
    }
    Ok(())
}

/// The boot vCPU's entry state: protected mode with flat segments,
/// paging and interrupts off (PVH, bzImage), or 64-bit mode on identity
/// page tables with a stack below them (a plain vmlinux ELF).
fn set_boot_entry(fd: &kvm_ioctls::VcpuFd, entry: EntryPoint) -> Result<(), MachineError> {
    let mut sregs = fd.get_sregs().map_err(err("KVM sregs"))?;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (boot_gdt(entry.long_mode).len() - 1) as u16;
    let code = kvm_bindings::kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x10,
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let data = kvm_bindings::kvm_segment {
        selector: 0x18,
        type_: 0x3,
        ..code
    };
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    if entry.long_mode {
        // Paging on (PE, ET, PG), PAE, long mode active.
        sregs.cs.l = 1;
        sregs.cs.db = 0;
        sregs.cr0 = 0x8000_0011;
        sregs.cr3 = PML4_ADDR;
        sregs.cr4 = 0x20;
        sregs.efer = 0x500;
    } else {
        sregs.cr0 = 0x11;
        sregs.cr4 = 0;
        sregs.efer = 0;
    }
    fd.set_sregs(&sregs).map_err(err("KVM sregs"))?;
    let regs = kvm_regs {
        rip: entry.rip,
        rbx: entry.rbx,
        rsi: entry.rsi,
        rsp: if entry.long_mode { BOOT_STACK } else { 0 },
        rflags: 0x2,
        ..Default::default()
    };
    fd.set_regs(&regs).map_err(err("KVM regs"))
}
