//! What QEMU checks and derives after the option loop, in its order:
//! machine type, memory, sandbox, help requests, log items, CPU
//! topology, default devices, objects, chardevs, machine properties and
//! accelerator, boot order, kernel options, netdevs, monitors, serial
//! ports, watchdog.  These errors carry the location of the option
//! they concern where QEMU's do, and none where QEMU's have none.

use super::chardev::{
    parse_compat, ChardevSpec, MonitorConfig, MonitorMode, SerialConfig, SerialTarget,
};
use super::config::{MemoryConfig, SandboxConfig, SmpConfig, DEFAULT_RAM_SIZE};
use super::machine::{apply_props, choose_accel, prop};
use super::opts::{is_help_option, Opts};
use super::parse::Parser;
use super::{Action, CmdlineError};

/// QEMU 2.11 has at most this many `-serial` ports.
const MAX_SERIAL_PORTS: usize = 4;

/// The `-d` items of QEMU 2.11 (besides `all` and `trace:PATTERN`),
/// with a short description each.
pub const LOG_ITEMS: &[(&str, &str)] = &[
    (
        "out_asm",
        "host assembly generated for each translated block",
    ),
    ("in_asm", "guest assembly of each translated block"),
    ("op", "intermediate code of each translated block"),
    ("op_opt", "intermediate code after optimisation"),
    ("int", "interrupts and exceptions"),
    ("exec", "each executed translated block"),
    ("cpu", "CPU registers before each translated block"),
    ("fpu", "FPU registers along with 'cpu'"),
    ("mmu", "MMU activity"),
    ("pcall", "x86 call gates"),
    ("cpu_reset", "CPU state at reset"),
    ("unimp", "unimplemented functionality"),
    ("guest_errors", "invalid guest operations"),
    ("page", "pages mapped by the guest program"),
    ("nochain", "no chaining of translated blocks"),
];

/// Drivers whose `-device` (or `-global`) replaces a default device.
const DEFAULT_DRIVERS: &[(&str, DefaultKind)] = &[
    ("isa-serial", DefaultKind::Serial),
    ("isa-parallel", DefaultKind::Parallel),
    ("isa-fdc", DefaultKind::Floppy),
    ("floppy", DefaultKind::Floppy),
    ("ide-cd", DefaultKind::Cdrom),
    ("ide-hd", DefaultKind::Cdrom),
    ("ide-drive", DefaultKind::Cdrom),
    ("scsi-cd", DefaultKind::Cdrom),
    ("scsi-hd", DefaultKind::Cdrom),
    ("VGA", DefaultKind::Vga),
    ("isa-vga", DefaultKind::Vga),
    ("cirrus-vga", DefaultKind::Vga),
    ("isa-cirrus-vga", DefaultKind::Vga),
    ("vmware-svga", DefaultKind::Vga),
    ("qxl-vga", DefaultKind::Vga),
    ("virtio-vga", DefaultKind::Vga),
];

#[derive(Debug, Clone, Copy)]
enum DefaultKind {
    Serial,
    Parallel,
    Floppy,
    Cdrom,
    Vga,
}

type Finish = Result<Option<Action>, CmdlineError>;

impl Parser {
    /// Runs the checks after the loop; the result is the action.
    pub fn finish(mut self) -> Result<Action, CmdlineError> {
        let steps: [fn(&mut Parser) -> Finish; 12] = [
            Parser::machine_type,
            Parser::memory_options,
            Parser::sandbox_and_name,
            Parser::early_help,
            Parser::smp_options,
            Parser::default_devices,
            Parser::check_objects,
            Parser::chardevs,
            Parser::machine_properties,
            Parser::netdevs,
            Parser::monitors_and_serials,
            Parser::late_checks,
        ];
        for step in steps {
            if let Some(action) = step(&mut self)? {
                return Ok(action);
            }
        }
        self.move_lists();
        Ok(Action::Run(Box::new(self.cfg)))
    }

    fn machine_settings(&self) -> Option<&Opts> {
        self.machine.sets.first()
    }

    fn machine_type(&mut self) -> Finish {
        let Some(m) = self.machine_settings().cloned() else {
            return Ok(None);
        };
        let mc = &mut self.cfg.machine;
        mc.location = Some(m.location.clone());
        mc.props = m
            .items
            .iter()
            .filter(|(k, _)| k != "type")
            .cloned()
            .collect();
        if let Some(t) = m.get("type") {
            if is_help_option(t) {
                return Ok(Some(Action::ListMachines));
            }
            mc.type_name = t.to_string();
            mc.type_given = true;
        }
        Ok(None)
    }

    fn memory_options(&mut self) -> Finish {
        if let Some(opts) = self.memory.sets.first() {
            self.cfg.memory = memory_config(opts).map_err(|e| e.at(&opts.location))?;
        }
        Ok(None)
    }

    fn sandbox_and_name(&mut self) -> Finish {
        for opts in &self.sandbox.sets {
            self.cfg.sandbox = Some(sandbox_config(opts).map_err(|e| e.at(&opts.location))?);
        }
        if let Some(opts) = self.name.sets.first() {
            let n = &mut self.cfg.name;
            n.guest = opts.get("guest").map(str::to_string);
            n.process = opts.get("process").map(str::to_string);
            n.debug_threads = opts.get_bool("debug-threads")?.unwrap_or(false);
        }
        Ok(None)
    }

    /// `-machine TYPE,help`, `-cpu help`, and `-d` items.
    fn early_help(&mut self) -> Finish {
        if self.machine_settings().is_some_and(Opts::has_help) {
            let machine = self.cfg.machine.type_name.clone();
            return Ok(Some(Action::MachineHelp { machine }));
        }
        if self.cfg.cpu_model.as_deref().is_some_and(is_help_option) {
            return Ok(Some(Action::ListCpus));
        }
        if let Some(mask) = &self.log_mask {
            let items: Vec<String> = mask.split(',').map(str::to_string).collect();
            if mask.is_empty() || !items.iter().all(|i| log_item_known(i)) {
                return Ok(Some(Action::LogUsage));
            }
            self.cfg.log_items = items;
        }
        Ok(None)
    }

    fn smp_options(&mut self) -> Finish {
        if let Some(opts) = self.smp.sets.first() {
            self.cfg.smp = smp_config(opts)?;
        }
        Ok(None)
    }

    /// Which default devices remain, and the default serial port and
    /// monitor QEMU then adds.
    fn default_devices(&mut self) -> Finish {
        let drivers: Vec<String> = self
            .device
            .sets
            .iter()
            .filter_map(|o| o.get("driver").map(str::to_string))
            .chain(self.cfg.globals.iter().map(|g| g.driver.clone()))
            .collect();
        let d = &mut self.cfg.defaults;
        for driver in &drivers {
            match DEFAULT_DRIVERS
                .iter()
                .find(|(n, _)| n == driver)
                .map(|(_, k)| *k)
            {
                Some(DefaultKind::Serial) => d.serial = false,
                Some(DefaultKind::Parallel) => d.parallel = false,
                Some(DefaultKind::Floppy) => d.floppy = false,
                Some(DefaultKind::Cdrom) => d.cdrom = false,
                Some(DefaultKind::Vga) => d.vga = false,
                None => {}
            }
        }
        if self.cfg.nodefaults {
            *d = super::config::Defaults {
                serial: false,
                parallel: false,
                monitor: false,
                floppy: false,
                cdrom: false,
                vga: false,
                net: false,
            };
        }
        let d = self.cfg.defaults;
        if self.cfg.daemonize && self.cfg.nographic && (d.parallel || d.serial || d.monitor) {
            return Err(CmdlineError::new(
                "-nographic cannot be used with -daemonize",
            ));
        }
        self.add_default_consoles()?;
        Ok(None)
    }

    fn add_default_consoles(&mut self) -> Result<(), CmdlineError> {
        let d = self.cfg.defaults;
        let target = if self.cfg.nographic {
            if d.serial && d.monitor {
                self.serial_args.push(("mon:stdio".to_string(), None));
                return Ok(());
            }
            "stdio"
        } else {
            "vc:80Cx24C"
        };
        if d.serial {
            self.serial_args.push((target.to_string(), None));
        }
        if d.monitor {
            self.monitor_parse(target, "readline", false, "")?;
        }
        Ok(())
    }

    fn check_objects(&mut self) -> Finish {
        for o in &self.object.sets {
            if o.get("qom-type").is_none() {
                return Err(missing("qom-type").at(&o.location));
            }
            if o.id.is_none() {
                return Err(missing("id").at(&o.location));
            }
        }
        Ok(None)
    }

    fn chardevs(&mut self) -> Finish {
        for o in &self.chardev.sets {
            let backend = o.get("backend");
            if backend.is_some_and(is_help_option) {
                return Ok(Some(Action::ListChardevBackends));
            }
            let Some(id) = o.id.as_deref() else {
                return Err(CmdlineError::new("chardev: no id specified").at(&o.location));
            };
            let Some(backend) = backend else {
                return Err(
                    CmdlineError::new(format!("chardev: \"{id}\" missing backend")).at(&o.location),
                );
            };
            let backend = match backend {
                "tty" => "serial",
                "parport" => "parallel",
                b => b,
            };
            self.cfg
                .chardevs
                .push(ChardevSpec::from_opts(o, id, backend));
        }
        for o in &self.device.sets {
            match o.get("driver") {
                Some(d) if is_help_option(d) => return Ok(Some(Action::ListDevices)),
                Some(d) if o.has_help() => {
                    let driver = d.to_string();
                    return Ok(Some(Action::DeviceHelp { driver }));
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// Machine properties, accelerator, boot order, kernel options.
    fn machine_properties(&mut self) -> Finish {
        apply_props(&mut self.cfg.machine)?;
        let (accel, notes) = choose_accel(prop(&self.cfg.machine, "accel"))?;
        self.cfg.machine.accel = accel;
        self.cfg.warnings.extend(notes);
        let m = &self.cfg.machine;
        let get = |n| prop(m, n).map(str::to_string);
        let (kernel, initrd, append, bios) =
            (get("kernel"), get("initrd"), get("append"), get("firmware"));
        self.cfg.kernel = kernel;
        self.cfg.initrd = initrd;
        self.cfg.append = append;
        self.cfg.bios = bios;
        self.boot_options()?;
        if self.cfg.kernel.is_none() {
            if self.cfg.append.as_deref().is_some_and(|a| !a.is_empty()) {
                return Err(CmdlineError::new(
                    "-append only allowed with -kernel option",
                ));
            }
            if self.cfg.initrd.is_some() {
                return Err(CmdlineError::new(
                    "-initrd only allowed with -kernel option",
                ));
            }
        }
        Ok(None)
    }

    fn boot_options(&mut self) -> Result<(), CmdlineError> {
        let Some(o) = self.boot.sets.first() else {
            return Ok(());
        };
        let b = &mut self.cfg.boot;
        b.order = o.get("order").map(str::to_string);
        b.once = o.get("once").map(str::to_string);
        for devices in [&b.order, &b.once].into_iter().flatten() {
            validate_boot_devices(devices)?;
        }
        b.menu = o.get_bool("menu")?;
        b.strict = o.get_bool("strict")?.unwrap_or(false);
        b.splash = o.get("splash").map(str::to_string);
        b.splash_time = o.get("splash-time").map(str::to_string);
        b.reboot_timeout = o.get("reboot-timeout").map(str::to_string);
        Ok(())
    }

    fn netdevs(&mut self) -> Finish {
        for o in &self.netdev.sets {
            let ty = o.get("type");
            if ty.is_some_and(is_help_option) {
                return Ok(Some(Action::ListNetdevBackends));
            }
            if o.id.is_none() {
                return Err(missing("id").at(&o.location));
            }
            if ty.is_none() {
                return Err(missing("type").at(&o.location));
            }
        }
        Ok(None)
    }

    fn monitors_and_serials(&mut self) -> Finish {
        for o in &self.mon.sets {
            let m = monitor_config(o, &self.cfg.chardevs).map_err(|e| e.at(&o.location))?;
            self.cfg.monitors.push(m);
        }
        let args = std::mem::take(&mut self.serial_args);
        for (arg, loc) in args.iter().filter(|(a, _)| a != "none") {
            let loc = loc.as_deref().unwrap_or("");
            self.serial_port(arg, loc).map_err(|e| e.at(loc))?;
        }
        Ok(None)
    }

    /// One serial port `serialN` from its legacy string.
    fn serial_port(&mut self, arg: &str, loc: &str) -> Result<(), CmdlineError> {
        let index = self.cfg.serials.len();
        if index == MAX_SERIAL_PORTS {
            return Err(CmdlineError::new("too many serial ports"));
        }
        let fail = || {
            CmdlineError::new(format!(
                "could not connect serial device to character backend '{arg}'"
            ))
        };
        let target = if let Some(id) = arg.strip_prefix("chardev:") {
            if !self.cfg.chardevs.iter().any(|c| c.id == id) {
                return Err(fail());
            }
            SerialTarget::Existing(id.to_string())
        } else {
            let label = format!("serial{index}");
            let i = parse_compat(&mut self.chardev, &label, arg, loc)?.ok_or_else(fail)?;
            let opts = self.chardev.sets.remove(i);
            let backend = opts.get("backend").unwrap_or_default().to_string();
            if opts.get_bool("mux")?.unwrap_or(false) {
                self.cfg.monitors.push(MonitorConfig {
                    id: None,
                    chardev: label.clone(),
                    mode: MonitorMode::Readline,
                    pretty: false,
                    location: loc.to_string(),
                });
            }
            SerialTarget::New(ChardevSpec::from_opts(&opts, &label, &backend))
        };
        self.cfg.serials.push(SerialConfig {
            arg: arg.to_string(),
            target,
            location: loc.to_string(),
        });
        Ok(())
    }

    /// Watchdog model, then `-device` without a driver.
    fn late_checks(&mut self) -> Finish {
        if let Some(w) = &self.cfg.watchdog {
            if is_help_option(w) {
                return Ok(Some(Action::ListWatchdogs));
            }
            let known = ["ib700", "i6300esb"]
                .iter()
                .any(|m| m.eq_ignore_ascii_case(w));
            if !known {
                return Err(
                    CmdlineError::new("Unknown -watchdog device. Supported devices are:")
                        .with_hint("\tib700\tiBASE 700\n\ti6300esb\tIntel 6300ESB"),
                );
            }
        }
        for o in &self.device.sets {
            if o.get("driver").is_none() {
                return Err(missing("driver").at(&o.location));
            }
        }
        Ok(None)
    }

    fn move_lists(&mut self) {
        let take = |l: &mut super::opts::OptsList| std::mem::take(&mut l.sets);
        self.cfg.drives = take(&mut self.drive);
        self.cfg.devices = take(&mut self.device);
        self.cfg.netdevs = take(&mut self.netdev);
        self.cfg.objects = take(&mut self.object);
        self.cfg.vnc = take(&mut self.vnc);
        self.cfg.numa = take(&mut self.numa);
    }
}

fn missing(name: &str) -> CmdlineError {
    CmdlineError::new(format!("Parameter '{name}' is missing"))
}

fn log_item_known(item: &str) -> bool {
    item == "all"
        || item.strip_prefix("trace:").is_some_and(|p| !p.is_empty())
        || LOG_ITEMS.iter().any(|(n, _)| *n == item)
}

/// `-m [size=]N[,slots=N,maxmem=N]`: a size without suffix is in MiB,
/// 0 means the default, the result is rounded up to 8 KiB.
fn memory_config(opts: &Opts) -> Result<MemoryConfig, CmdlineError> {
    let mut size = 0u64;
    if let Some(text) = opts.get("size") {
        if text.is_empty() {
            return Err(CmdlineError::new("missing 'size' option value"));
        }
        size = opts.get_size("size")?.unwrap_or(0);
        if text.ends_with(|c: char| c.is_ascii_digit()) {
            size = size
                .checked_mul(1 << 20)
                .ok_or_else(|| CmdlineError::new("too large 'size' option value"))?;
        }
    }
    if size == 0 {
        size = DEFAULT_RAM_SIZE;
    }
    let size = size
        .checked_add(8191)
        .map(|s| s & !8191)
        .ok_or_else(|| CmdlineError::new("ram size too large"))?;
    let mut mem = MemoryConfig {
        size,
        maxmem: size,
        slots: 0,
    };
    if opts.has("maxmem") {
        let maxmem = opts.get_size("maxmem")?.unwrap_or(0);
        let slots = opts.get_number("slots")?.unwrap_or(0);
        if maxmem < size {
            return Err(CmdlineError::new(format!(
                "invalid value of -m option maxmem: maximum memory size (0x{maxmem:x}) must be at least the initial memory size (0x{size:x})"
            )));
        }
        if slots != 0 && maxmem == size {
            return Err(CmdlineError::new(format!(
                "invalid value of -m option maxmem: memory slots were specified but maximum memory size (0x{maxmem:x}) is equal to the initial memory size (0x{size:x})"
            )));
        }
        mem.maxmem = maxmem;
        mem.slots = slots;
    } else if opts.has("slots") {
        return Err(CmdlineError::new(
            "invalid -m option value: missing 'maxmem' option",
        ));
    }
    Ok(mem)
}

/// `-smp [cpus=]N[,sockets=,cores=,threads=,maxcpus=]` with QEMU 2.11's
/// defaulting: missing values are computed preferring sockets over
/// cores over threads.  (Values are C `unsigned`, hence the
/// truncation and wrapping arithmetic.)
fn smp_config(opts: &Opts) -> Result<SmpConfig, CmdlineError> {
    let num = |n| -> Result<u32, CmdlineError> { Ok(opts.get_number(n)?.unwrap_or(0) as u32) };
    let (mut cpus, mut sockets, mut cores, mut threads) = (
        num("cpus")?,
        num("sockets")?,
        num("cores")?,
        num("threads")?,
    );
    let or_one = |v: u32| if v > 0 { v } else { 1 };
    if cpus == 0 || sockets == 0 {
        sockets = or_one(sockets);
        cores = or_one(cores);
        threads = or_one(threads);
        if cpus == 0 {
            cpus = cores.wrapping_mul(threads).wrapping_mul(sockets);
        }
    } else if cores == 0 {
        threads = or_one(threads);
        cores = or_one(cpus / sockets.wrapping_mul(threads).max(1));
    } else if threads == 0 {
        threads = or_one(cpus / cores.wrapping_mul(sockets).max(1));
    } else if sockets.wrapping_mul(cores).wrapping_mul(threads) < cpus {
        return Err(CmdlineError::new(format!(
            "cpu topology: sockets ({sockets}) * cores ({cores}) * threads ({threads}) < smp_cpus ({cpus})"
        )));
    }
    let maxcpus = match opts.get_number("maxcpus")? {
        Some(v) => v as u32,
        None => cpus,
    };
    if maxcpus < cpus {
        return Err(CmdlineError::new(
            "maxcpus must be equal to or greater than smp",
        ));
    }
    if sockets.wrapping_mul(cores).wrapping_mul(threads) > maxcpus {
        return Err(CmdlineError::new(format!(
            "cpu topology: sockets ({sockets}) * cores ({cores}) * threads ({threads}) > maxcpus ({maxcpus})"
        )));
    }
    Ok(SmpConfig {
        cpus,
        sockets,
        cores,
        threads,
        maxcpus,
    })
}

impl SmpConfig {
    /// The check QEMU makes against the machine once it is known
    /// (`machine` is its full name, e.g. `pc-i440fx-2.11`).
    pub fn check_machine_limits(
        &self,
        machine: &str,
        min: u32,
        max: u32,
    ) -> Result<(), CmdlineError> {
        if self.cpus < min {
            return Err(CmdlineError::new(format!(
                "Invalid SMP CPUs {}. The min CPUs supported by machine '{machine}' is {min}",
                self.cpus
            )));
        }
        if self.maxcpus > max {
            return Err(CmdlineError::new(format!(
                "Invalid SMP CPUs {}. The max CPUs supported by machine '{machine}' is {max}",
                self.maxcpus
            )));
        }
        Ok(())
    }
}

/// `-sandbox on,obsolete=,elevateprivileges=,spawn=,resourcecontrol=`.
fn sandbox_config(opts: &Opts) -> Result<SandboxConfig, CmdlineError> {
    let enable = opts.get_bool("enable")?.unwrap_or(false);
    let field = |name: &str, allowed: &[&str]| -> Result<Option<String>, CmdlineError> {
        match opts.get(name) {
            Some(v) if enable && !allowed.contains(&v) => {
                Err(CmdlineError::new(format!("invalid argument for {name}")))
            }
            v => Ok(v.map(str::to_string)),
        }
    };
    Ok(SandboxConfig {
        enable,
        obsolete: field("obsolete", &["allow", "deny"])?,
        elevateprivileges: field("elevateprivileges", &["allow", "deny", "children"])?,
        spawn: field("spawn", &["allow", "deny"])?,
        resourcecontrol: field("resourcecontrol", &["allow", "deny"])?,
        location: opts.location.clone(),
    })
}

/// One monitor from its `mon` set.
fn monitor_config(o: &Opts, chardevs: &[ChardevSpec]) -> Result<MonitorConfig, CmdlineError> {
    let mode = match o.get("mode").unwrap_or("readline") {
        "readline" => MonitorMode::Readline,
        "control" => MonitorMode::Control,
        m => return Err(CmdlineError::new(format!("unknown monitor mode \"{m}\""))),
    };
    let pretty = o.get_bool("pretty")?.unwrap_or(false);
    let chardev = o.get("chardev");
    match chardev {
        Some(c) if chardevs.iter().any(|s| s.id == c) => Ok(MonitorConfig {
            id: o.id.clone(),
            chardev: c.to_string(),
            mode,
            pretty,
            location: o.location.clone(),
        }),
        _ => Err(CmdlineError::new(format!(
            "chardev \"{}\" not found",
            chardev.unwrap_or("(null)")
        ))),
    }
}

/// Boot devices are letters `a` to `p`, each at most once.
fn validate_boot_devices(devices: &str) -> Result<(), CmdlineError> {
    let mut seen = 0u32;
    for c in devices.chars() {
        if !('a'..='p').contains(&c) {
            return Err(CmdlineError::new(format!("Invalid boot device '{c}'")));
        }
        let bit = 1u32 << (c as u32 - 'a' as u32);
        if seen & bit != 0 {
            return Err(CmdlineError::new(format!(
                "Boot device '{c}' was given twice"
            )));
        }
        seen |= bit;
    }
    Ok(())
}
