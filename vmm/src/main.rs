//! `vmm`: a KVM virtual machine monitor that speaks QEMU's QMP and takes
//! QEMU's command line.

mod blockdev;
mod chardevs;
mod cmdline;
mod commands;
mod globals;
mod hmp;
mod input;
mod kvm;
mod machine;
mod machines;
mod migration;
mod monitor;
mod numa;
mod qdev;
mod qom;
mod runstate;
mod vm;

use cmdline::{Action, ChardevSpec, Config, MonitorMode};
use commands::Vmm;
use machine::{Machine, MachineConfig};
use monitor::{ChardevMonitor, Endpoint, MachineEvents, MainLoop, MonitorSpec};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use vm::Vm;

/// The project's test guest (tests/guest), booted when no kernel is given.
const BUNDLED_GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest.elf"));

/// What the greeting and query-version report as `package`.
/// QEMU writes it with a leading space and parentheses (" (v2.11.0)"),
/// so that `info version` prints `2.11.50 (vmm 0.1.0)`.
pub const PACKAGE: &str = concat!(" (vmm ", env!("CARGO_PKG_VERSION"), ")");

/// Options the parser knows whose subsystem has not landed yet, with the
/// part of vmm that will bring them.
const NOT_BUILT_YET: &[(&str, &str)] = &[
    ("netdev", "network backends"),
    ("vnc", "the VNC server"),
    ("incoming", "migration"),
    ("watchdog", "watchdog devices"),
    ("smbios", "SMBIOS tables"),
];

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("vmm: {message}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let action = match cmdline::parse_args(&args) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    match action {
        Action::Run(config) => run(*config),
        Action::Version => {
            println!("QEMU emulator version 2.11.50{PACKAGE}");
            println!("vmm is a KVM virtual machine monitor compatible with QEMU's QMP");
            ExitCode::SUCCESS
        }
        Action::Help => {
            print!("{}", usage());
            ExitCode::SUCCESS
        }
        Action::ListMachines => {
            println!("Supported machines are:");
            for m in machines::MACHINE_TYPES {
                if let Some(alias) = m.alias {
                    println!("{alias:<20} {} (alias of {})", m.description, m.name);
                }
                let default = if m.is_default { " (default)" } else { "" };
                println!("{:<20} {}{default}", m.name, m.description);
            }
            ExitCode::SUCCESS
        }
        Action::ListCpus => {
            println!("Available CPUs:");
            for (name, desc) in machine::cpuid::MODELS {
                println!("x86 {name:<16} {desc}");
            }
            ExitCode::SUCCESS
        }
        Action::ListAccels => {
            println!("Possible accelerators: kvm");
            ExitCode::SUCCESS
        }
        Action::ListChardevBackends => {
            let mut names: Vec<&str> = devices::chardev::BACKENDS.to_vec();
            names.reverse();
            eprintln!("Available chardev backend types: ");
            for n in names {
                eprintln!("{n}");
            }
            ExitCode::SUCCESS
        }
        // QEMU 2.11 prints both lists with error_printf: on stderr.
        Action::ListDevices => {
            eprint!("{}", qdev::device_list());
            ExitCode::SUCCESS
        }
        Action::DeviceHelp { driver } => match qdev::device_help(&driver) {
            Ok(text) => {
                eprint!("{text}");
                ExitCode::SUCCESS
            }
            // QEMU reports the error and still exits 0 after a help request.
            Err(e) => {
                eprintln!("vmm: -device {driver},help: {}", e.desc);
                ExitCode::SUCCESS
            }
        },
        Action::LogUsage => {
            println!("Log items (comma separated):");
            for (name, help) in cmdline::LOG_ITEMS {
                println!("{name:<10} {help}");
            }
            ExitCode::from(1)
        }
        other => fail(format!(
            "{}: not available yet: {}",
            help_option(&other),
            help_subsystem(&other)
        )),
    }
}

fn help_option(a: &Action) -> &'static str {
    match a {
        Action::MachineHelp { .. } => "-machine help",
        Action::ListChardevBackends => "-chardev help",
        Action::ListNetdevBackends => "-netdev help",
        Action::ListWatchdogs => "-watchdog help",
        _ => "help",
    }
}

fn help_subsystem(a: &Action) -> &'static str {
    match a {
        Action::MachineHelp { .. } => {
            "CPU models and machine properties arrive with the KVM machine"
        }
        Action::ListChardevBackends => "character devices arrive with their own issue",
        Action::ListNetdevBackends => "network backends arrive with their own issue",
        Action::ListWatchdogs => "watchdog devices arrive with their own issue",
        _ => "not built",
    }
}

fn usage() -> String {
    let mut s = format!(
        "QEMU emulator version 2.11.50{PACKAGE}\n\
         usage: vmm [options]\n\n\
         vmm takes qemu-system-x86_64's command line. Options it parses:\n"
    );
    for o in cmdline::OPTIONS {
        s.push_str(&format!(
            "-{}{}\n",
            o.name,
            if o.has_arg { " ..." } else { "" }
        ));
    }
    s
}

/// The monitor endpoint a chardev describes; `hmp` for a readline monitor.
fn monitor_endpoint(chardev: &ChardevSpec, pretty: bool, hmp: bool) -> Result<MonitorSpec, String> {
    let bool_opt = |name: &str| chardev.get_bool(name).map_err(|e| e.to_string());
    match chardev.backend.as_str() {
        "socket" => {
            let server = bool_opt("server")?.unwrap_or(false);
            let wait = bool_opt("wait")?.unwrap_or(true);
            let endpoint = if let Some(path) = chardev.get("path") {
                Endpoint::Unix { path: PathBuf::from(path) }
            } else {
                let port = chardev
                    .get("port")
                    .ok_or_else(|| format!("chardev: socket: no host/port or path given ({})", chardev.location))?;
                let port: u16 = port.parse().map_err(|_| format!("{}: invalid port '{port}'", chardev.location))?;
                let host = chardev.get("host").filter(|h| !h.is_empty()).unwrap_or("0.0.0.0");
                Endpoint::Tcp {
                    host: host.to_string(),
                    port,
                }
            };
            Ok(MonitorSpec {
                endpoint,
                server,
                wait,
                pretty,
                hmp,
            })
        }
        "stdio" => Ok(MonitorSpec {
            endpoint: Endpoint::Stdio,
            server: false,
            wait: false,
            pretty,
            hmp,
        }),
        other => Err(format!(
            "{}: chardev backend '{other}' is not available yet for monitors (socket and stdio are)",
            chardev.location
        )),
    }
}

/// The monitors the main loop serves on transports of their own (the
/// others are chardev frontends, see [`chardev_monitors`]).
fn monitor_specs(config: &Config) -> Result<Vec<MonitorSpec>, String> {
    let mut specs = Vec::new();
    for m in &config.monitors {
        if !chardevs::served_by_main_loop(config, m) {
            continue;
        }
        let chardev = config
            .chardevs
            .iter()
            .find(|c| c.id == m.chardev)
            .ok_or_else(|| format!("{}: chardev \"{}\" not found", m.location, m.chardev))?;
        specs.push(monitor_endpoint(
            chardev,
            m.pretty,
            m.mode == MonitorMode::Readline,
        )?);
    }
    Ok(specs)
}

/// Attaches the monitors that run on chardevs of the registry, in
/// QEMU's order (before the serial ports, so that on a shared mux the
/// last serial port ends up with the focus).
fn chardev_monitors(
    config: &Config,
    reg: &devices::chardev::Registry,
    wake: &Arc<MachineEvents>,
) -> Result<Vec<ChardevMonitor>, String> {
    let mut out = Vec::new();
    for m in &config.monitors {
        if chardevs::served_by_main_loop(config, m) {
            continue;
        }
        let fail = |e: String| {
            if m.location.is_empty() {
                e
            } else {
                format!("{}: {e}", m.location)
            }
        };
        let c = reg
            .find(&m.chardev)
            .ok_or_else(|| fail(format!("chardev \"{}\" not found", m.chardev)))?;
        out.push(
            ChardevMonitor::attach(&c, m.mode == MonitorMode::Readline, m.pretty, wake)
                .map_err(fail)?,
        );
    }
    Ok(out)
}

fn check_buildable(config: &Config) -> Result<(), String> {
    if let Some(given) = config.unsupported.first() {
        return Err(format!(
            "{}: this option is not supported by vmm",
            given.location
        ));
    }
    for given in &config.given {
        if let Some((_, subsystem)) = NOT_BUILT_YET.iter().find(|(n, _)| *n == given.name) {
            return Err(format!(
                "{}: not available yet: {subsystem} has not landed in vmm",
                given.location
            ));
        }
    }
    Ok(())
}

/// The KVM machine, when the command line gives it something to run.
fn build_machine(
    config: &Config,
    events: Arc<MachineEvents>,
    serials: Vec<Option<devices::chardev::Chardev>>,
    numa: Option<machine::NumaLayout>,
) -> Result<Option<Machine>, String> {
    if config.machine.type_name == "none" {
        globals::board_globals(config, false)?;
        return Ok(None);
    }
    let firmware = match &config.bios {
        Some(path) => {
            if config.kernel.is_some() {
                // QEMU loads the kernel through fw_cfg and an option ROM
                // of its own, which vmm does not have.
                return Err(
                    "-bios with -kernel: not available yet (vmm boots a kernel without firmware; drop -bios)"
                        .into(),
                );
            }
            let image = std::fs::read(path)
                .map_err(|_| format!("qemu: could not load PC BIOS '{path}'"))?;
            Some((path.clone(), image))
        }
        None => None,
    };
    let (kernel, default_append) = match &config.kernel {
        Some(path) => (
            std::fs::read(path).map_err(|e| format!("could not load kernel '{path}': {e}"))?,
            "",
        ),
        // Without -kernel the machine boots the bundled test guest, idle
        // unless -append names one of its tests.
        None => (BUNDLED_GUEST.to_vec(), "test=idle"),
    };
    let initrd = config
        .initrd
        .as_ref()
        .map(|p| {
            std::fs::read(p).map_err(|e| format!("could not load initial ram disk '{p}': {e}"))
        })
        .transpose()?;
    let cpu = machine::cpuid::CpuSpec::parse(config.cpu_model.as_deref().unwrap_or("qemu64"))
        .map_err(|e| format!("-cpu: {e}"))?;
    let board = globals::board_globals(config, true)?;
    let sink: machine::vcpu::EventSink = Arc::new(move |e| events.push(e));
    let machine_config = MachineConfig {
        cpu,
        topology: machine::cpuid::Topology {
            sockets: config.smp.sockets,
            cores: config.smp.cores,
            threads: config.smp.threads,
        },
        ram_size: config.memory.size,
        cpus: config.smp.cpus,
        kernel,
        initrd,
        cmdline: config
            .append
            .clone()
            .unwrap_or_else(|| default_append.to_string()),
        serials,
        acpi_s3: board.s3_enabled,
        pit_reinject: board.pit_reinject,
        firmware,
        nographic: config.nographic,
        ram_file: file_backed_ram(config, numa.as_ref())?,
        numa,
    };
    Machine::new(machine_config, sink)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// `-mem-path`: guest RAM mapped privately from a file (or a fresh file
/// in a directory), touched whole first with `-mem-prealloc`; unless
/// `-numa node,memdev=` gives RAM its backends. As in QEMU, a file that
/// cannot be mapped falls back to ordinary RAM, unless preallocation was
/// asked for.
fn file_backed_ram(
    config: &Config,
    numa: Option<&machine::NumaLayout>,
) -> Result<Option<Arc<machine::memory::HostMapping>>, String> {
    let Some(path) = &config.mem_path else {
        return Ok(None);
    };
    if numa.is_some_and(|n| !n.backends.is_empty()) {
        return Ok(None);
    }
    use qom::objects::memory_backend::{map_file, preallocate};
    match map_file(path, "pc.ram", config.memory.size, 0, false) {
        Ok(m) => {
            if config.mem_prealloc {
                preallocate(&m);
            }
            Ok(Some(Arc::new(m)))
        }
        Err(e) if config.mem_prealloc => Err(e.desc),
        Err(e) => {
            eprintln!("vmm: {}", e.desc);
            eprintln!("vmm: falling back to regular RAM allocation.");
            Ok(None)
        }
    }
}

/// `-numa`: the nodes, checked against the CPUs, RAM and memory
/// backends, and what the machine needs of them. Each memdev= backend
/// becomes part of guest RAM and is in use from then on.
fn configure_numa(
    config: &Config,
    has_machine: bool,
    qom: &qom::Qom,
) -> Result<Option<(numa::NumaConfig, machine::NumaLayout)>, String> {
    if config.numa.is_empty() {
        return Ok(None);
    }
    if !has_machine {
        return Err("NUMA is not supported by this machine-type".into());
    }
    let slots = numa::CpuSlots {
        maxcpus: config.smp.maxcpus.max(config.smp.cpus).max(1),
        cores: config.smp.cores,
        threads: config.smp.threads,
    };
    let Some(numa) = numa::configure(&config.numa, slots, config.memory.size, &|path| {
        qom.memory_backend(path).map(|m| m.size())
    })?
    else {
        return Ok(None);
    };
    for w in &numa.warnings {
        eprintln!("vmm: warning: {w}");
    }
    let mut backends = Vec::new();
    for (i, node) in numa.nodes.iter().enumerate() {
        let Some(path) = &node.memdev else { continue };
        // KVM maps memory in whole pages; QEMU would leave the odd
        // bytes to emulation, vmm refuses them.
        if !node.mem.is_multiple_of(4096) {
            return Err(format!(
                "memdev={path}: node {i}'s memory (0x{:x} bytes) is not a multiple of the page size (4 KiB), which vmm needs to map it into KVM",
                node.mem
            ));
        }
        let backend = qom
            .memory_backend(path)
            .ok_or_else(|| format!("memdev={path} is ambiguous"))?;
        let mapping = backend.map_into_guest().ok_or_else(|| {
            let id = path.rsplit('/').next().unwrap_or(path);
            format!("memory backend {id} is used multiple times. Each -numa option must use a different memdev value.")
        })?;
        backends.push(mapping);
    }
    let layout = machine::NumaLayout {
        node_mem: numa.nodes.iter().map(|n| n.mem).collect(),
        cpu_node: numa.cpu_node.clone(),
        distances: numa.distances.clone(),
        backends,
    };
    Ok(Some((numa, layout)))
}

/// Every `-device`, in command-line order, as device_add would add
/// it before the guest runs (but cold-plugged).
fn add_devices(
    config: &Config,
    mut machine: Option<&mut Machine>,
    qom: &mut qom::Qom,
    block: &mut block::BlockGraph,
) -> Result<(), String> {
    for d in &config.devices {
        let mut plug = qdev::Plug {
            machine: machine.as_deref_mut(),
            qom: &mut *qom,
            block: &mut *block,
            hotplug: false,
            prelaunch: true,
        };
        qdev::device_add(&mut plug, d).map_err(|e| format!("{}: {}", d.location, e.desc))?;
    }
    Ok(())
}

fn uuid_string(uuid: Option<[u8; 16]>) -> String {
    let b = uuid.unwrap_or_default();
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

fn run(mut config: Config) -> ExitCode {
    for w in &config.warnings {
        eprintln!("vmm: warning: {w}");
    }
    if let Err(e) = check_buildable(&config) {
        return fail(e);
    }
    if machines::find(&config.machine.type_name).is_none() {
        return fail(format!(
            "-machine {}: unsupported machine type\nUse -machine help to list supported machines",
            config.machine.type_name
        ));
    }
    let specs = match monitor_specs(&config) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    // -blockdev and -drive; if=virtio drives add their devices.
    let mut block = match blockdev::open(&mut config) {
        Ok(g) => g,
        Err(e) => return fail(e),
    };
    if let Err(e) = kvm::probe() {
        eprintln!("{e}");
        return fail("failed to initialize KVM");
    }
    // Before any thread exists, so that every thread inherits the mask.
    let signals = match monitor::block_termination_signals() {
        Ok(s) => s,
        Err(e) => return fail(format!("signals: {e}")),
    };
    let daemon = if config.daemonize {
        match daemon::daemonize() {
            Ok(d) => Some(d),
            Err(e) => return fail(format!("-daemonize: {e}")),
        }
    } else {
        None
    };
    if let Some(path) = &config.pidfile {
        if let Err(e) = daemon::write_pidfile(path) {
            return fail(format!("Could not acquire pid file: {e}"));
        }
    }
    let (chardevs, serials) = match chardevs::open(&config) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let machine_events = Arc::new(MachineEvents::default());
    let chardev_monitors = match chardev_monitors(&config, &chardevs, &machine_events) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    {
        let events = machine_events.clone();
        block.set_event_sink(Arc::new(move |e| {
            events.push(machine::MachineEvent::Block(e))
        }));
        let events = machine_events.clone();
        devices::chardev::set_commit_hook(Box::new(move || {
            events.push(machine::MachineEvent::CommitAll)
        }));
    }
    let has_machine = config.machine.type_name != "none";
    // Objects first: guest RAM may be made of memory backends.
    let mut qom = match qom::Qom::from_config(&config, has_machine, &chardevs) {
        Ok(q) => q,
        Err(e) => return fail(e),
    };
    let numa = match configure_numa(&config, has_machine, &qom) {
        Ok(n) => n,
        Err(e) => return fail(e),
    };
    let (numa, numa_layout) = numa.unzip();
    let mut machine = match build_machine(&config, machine_events.clone(), serials, numa_layout) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let pci: Vec<qom::machine::PciFunction> = machine
        .as_ref()
        .map(|m| m.pci_functions().iter().map(Into::into).collect())
        .unwrap_or_default();
    qom.populate_machine(
        &config,
        machine.is_some(),
        pci,
        numa.as_ref().map_or(&[][..], |n| &n.cpu_node),
    );
    if let Err(e) = add_devices(&config, machine.as_mut(), &mut qom, &mut block) {
        return fail(e);
    }
    let input = input::Input::new(machine.is_some());
    let mut vm = Vm::new(config.start_paused, machine);
    vm.no_shutdown = config.no_shutdown;
    vm.no_reboot = config.no_reboot;
    let vmm = Vmm {
        vm,
        name: config.name.guest.clone(),
        uuid: uuid_string(config.uuid),
        kvm_present: true,
        kvm_enabled: true,
        package: PACKAGE.to_string(),
        ram_size: config.memory.size,
        topology: config.smp,
        cpu_model: config
            .cpu_model
            .as_deref()
            .and_then(|c| c.split(',').next())
            .unwrap_or("qemu64")
            .to_string(),
        qom,
        chardevs,
        block,
        numa,
        input,
        migration: migration::Migration::default(),
    };
    let mut main_loop = match MainLoop::new(specs, chardev_monitors, signals, machine_events, vmm) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    // The machine is complete: muxes tell their frontends the backend
    // is open, so the one with the focus shows its banner or prompt.
    main_loop.vmm.chardevs.realize_muxes();
    if let Err(e) = main_loop.vmm.vm.start_if_autostart() {
        return fail(e);
    }
    if let Some(d) = daemon {
        d.ready();
    }
    let status = main_loop.run();
    main_loop.vmm.block.close_all();
    // As exit(3): only the low 8 bits reach the parent.
    drop(main_loop);
    ExitCode::from((status & 0xff) as u8)
}

mod daemon {
    //! `-daemonize` and `-pidfile`, as QEMU does them.

    use std::io::{self, Read, Write};
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::fs::OpenOptionsExt;

    /// The child's end of the pipe its parent waits on.
    pub struct Daemon {
        pipe: std::fs::File,
    }

    impl Daemon {
        /// Start-up is complete: the parent exits 0 and the child's
        /// standard streams go to /dev/null.
        pub fn ready(mut self) {
            let _ = self.pipe.write_all(&[0]);
            if let Ok(null) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                use std::os::fd::AsRawFd;
                for fd in 0..3 {
                    // SAFETY: duplicating a valid descriptor over a standard stream.
                    unsafe { libc::dup2(null.as_raw_fd(), fd) };
                }
            }
        }
    }

    /// Forks; the parent waits until the child is ready (or fails) and
    /// exits with the matching status; the child returns.
    pub fn daemonize() -> io::Result<Daemon> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 returned two fresh descriptors we now own.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: no other thread exists yet, so fork is sound.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                drop(read_end);
                // SAFETY: setsid has no memory-safety preconditions.
                unsafe { libc::setsid() };
                Ok(Daemon {
                    pipe: std::fs::File::from(write_end),
                })
            }
            _ => {
                drop(write_end);
                let mut byte = [0u8; 1];
                let status = match std::fs::File::from(read_end).read(&mut byte) {
                    Ok(1) => 0,
                    _ => 1,
                };
                std::process::exit(status);
            }
        }
    }

    /// Writes our pid to `path`, holding a lock on it for the life of the
    /// process so that a second vmm with the same pid file fails.
    pub fn write_pidfile(path: &str) -> io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)?;
        use std::os::fd::AsRawFd;
        // SAFETY: lockf on a descriptor we own.
        if unsafe { libc::lockf(f.as_raw_fd(), libc::F_TLOCK, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        f.set_len(0)?;
        writeln!(f, "{}", std::process::id())?;
        // The lock lives as long as the descriptor: keep it open.
        std::mem::forget(f);
        Ok(())
    }
}
