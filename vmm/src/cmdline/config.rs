//! What a parsed command line asks for.

use serde_json::Value;

use super::chardev::{ChardevSpec, MonitorConfig, SerialConfig};
use super::opts::Opts;

/// The default RAM size of the `pc` and `q35` machines.
pub const DEFAULT_RAM_SIZE: u64 = 128 << 20;

/// One option as given, in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GivenOption {
    /// The name without dashes as QEMU's option table has it (`-M` and
    /// `-machine` stay distinct: `M`, `machine`).
    pub name: String,
    /// Its argument, for options that take one.
    pub arg: Option<String>,
    /// The words as typed (`--m 512`), for messages.
    pub location: String,
}

/// Everything the command line configures.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Every option given, in order (disk images without a dash are
    /// not options and are not listed).
    pub given: Vec<GivenOption>,
    /// Options QEMU 2.11 knows that this parser does not implement;
    /// the caller refuses them by name.
    pub unsupported: Vec<GivenOption>,
    /// Non-fatal messages QEMU would print (without program name).
    pub warnings: Vec<String>,
    /// Character devices: from `-chardev`, then those `-qmp`/`-monitor`
    /// created (`compat_monitorN`), in command-line order.
    pub chardevs: Vec<ChardevSpec>,
    /// Monitors in creation order (`-mon`, `-qmp`, `-monitor`, then the
    /// readline monitors of `-serial mon:...`).
    pub monitors: Vec<MonitorConfig>,
    /// Serial ports in order (`serial0`, ...), created after monitors.
    pub serials: Vec<SerialConfig>,
    /// `-S`: do not start the CPUs.
    pub start_paused: bool,
    /// `-m`.
    pub memory: MemoryConfig,
    /// `-smp`.
    pub smp: SmpConfig,
    /// `-name`.
    pub name: NameConfig,
    /// `-uuid` (or `-smbios type=1,uuid=`), bytes in RFC 4122 order.
    pub uuid: Option<[u8; 16]>,
    /// `-machine`, `-M` and the options that set machine properties.
    pub machine: MachineConfig,
    /// `-accel thread=`.
    pub accel_thread: Option<String>,
    /// `-cpu` (model and features, unparsed).
    pub cpu_model: Option<String>,
    /// `-kernel` (machine property `kernel`).
    pub kernel: Option<String>,
    /// `-initrd`.
    pub initrd: Option<String>,
    /// `-append`.
    pub append: Option<String>,
    /// `-bios` (machine property `firmware`).
    pub bios: Option<String>,
    /// `-nodefaults`.
    pub nodefaults: bool,
    /// Which default devices QEMU would create for this command line.
    pub defaults: Defaults,
    /// `-nographic`.
    pub nographic: bool,
    /// `-display` (and `-nographic`).
    pub display: DisplayKind,
    /// VNC servers (`-vnc`, `-display vnc=`); ids `default`, `vnc2`, ...
    pub vnc: Vec<Opts>,
    /// `-blockdev`, in order.
    pub blockdevs: Vec<BlockdevSpec>,
    /// `-drive`, `-hda`..`-hdd`, `-cdrom` and bare disk images.
    pub drives: Vec<Opts>,
    /// `-device` (parameter `driver` is the type).
    pub devices: Vec<Opts>,
    /// `-netdev` (parameter `type`).
    pub netdevs: Vec<Opts>,
    /// `-object` (parameter `qom-type`).
    pub objects: Vec<Opts>,
    /// `-global`.
    pub globals: Vec<GlobalProperty>,
    /// `-incoming` (the last one).
    pub incoming: Option<String>,
    /// `-no-shutdown`.
    pub no_shutdown: bool,
    /// `-no-reboot`.
    pub no_reboot: bool,
    /// `-watchdog` model as given.
    pub watchdog: Option<String>,
    /// `-watchdog-action`.
    pub watchdog_action: WatchdogAction,
    /// `-daemonize`.
    pub daemonize: bool,
    /// `-pidfile`.
    pub pidfile: Option<String>,
    /// `-D`.
    pub logfile: Option<String>,
    /// `-d`, split at commas (checked).
    pub log_items: Vec<String>,
    /// `-trace`.
    pub trace: TraceConfig,
    /// `-rtc`.
    pub rtc: RtcConfig,
    /// `-boot`.
    pub boot: BootConfig,
    /// `-sandbox` (the last one).
    pub sandbox: Option<SandboxConfig>,
    /// `-realtime mlock=`.
    pub realtime_mlock: bool,
    /// `-msg timestamp=`.
    pub msg_timestamp: bool,
    /// `-mem-prealloc`.
    pub mem_prealloc: bool,
    /// `-mem-path`.
    pub mem_path: Option<String>,
    /// `-k`.
    pub keyboard_layout: Option<String>,
    /// `-no-hpet`.
    pub no_hpet: bool,
    /// `-no-acpi`.
    pub no_acpi: bool,
    /// `-smbios`, checked against the SMBIOS type's fields.
    pub smbios: Vec<Opts>,
    /// `-numa` (parameter `type`).
    pub numa: Vec<Opts>,
    /// `-no-user-config` or `-nodefconfig`.
    pub no_user_config: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            given: Vec::new(),
            unsupported: Vec::new(),
            warnings: Vec::new(),
            chardevs: Vec::new(),
            monitors: Vec::new(),
            serials: Vec::new(),
            start_paused: false,
            memory: MemoryConfig::default(),
            smp: SmpConfig::default(),
            name: NameConfig::default(),
            uuid: None,
            machine: MachineConfig::default(),
            accel_thread: None,
            cpu_model: None,
            kernel: None,
            initrd: None,
            append: None,
            bios: None,
            nodefaults: false,
            defaults: Defaults::default(),
            nographic: false,
            display: DisplayKind::Default,
            vnc: Vec::new(),
            blockdevs: Vec::new(),
            drives: Vec::new(),
            devices: Vec::new(),
            netdevs: Vec::new(),
            objects: Vec::new(),
            globals: Vec::new(),
            incoming: None,
            no_shutdown: false,
            no_reboot: false,
            watchdog: None,
            watchdog_action: WatchdogAction::Reset,
            daemonize: false,
            pidfile: None,
            logfile: None,
            log_items: Vec::new(),
            trace: TraceConfig::default(),
            rtc: RtcConfig::default(),
            boot: BootConfig::default(),
            sandbox: None,
            realtime_mlock: false,
            msg_timestamp: false,
            mem_prealloc: false,
            mem_path: None,
            keyboard_layout: None,
            no_hpet: false,
            no_acpi: false,
            smbios: Vec::new(),
            numa: Vec::new(),
            no_user_config: false,
        }
    }
}

impl Config {
    /// Whether option `name` (without dashes, as typed) was given.
    pub fn was_given(&self, name: &str) -> bool {
        self.given.iter().any(|g| g.name == name)
    }
}

/// Guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Initial RAM in bytes (default 128 MiB; rounded up to 8 KiB).
    pub size: u64,
    /// Hot-pluggable maximum (equals `size` unless `maxmem=` given).
    pub maxmem: u64,
    /// Memory hot-plug slots.
    pub slots: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            size: DEFAULT_RAM_SIZE,
            maxmem: DEFAULT_RAM_SIZE,
            slots: 0,
        }
    }
}

/// CPU topology after QEMU's defaulting.  As in QEMU, x86 derives the
/// number of packages from `maxcpus / (cores * threads)`; `sockets` is
/// what was given or computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmpConfig {
    pub cpus: u32,
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
    pub maxcpus: u32,
}

impl Default for SmpConfig {
    fn default() -> Self {
        SmpConfig {
            cpus: 1,
            sockets: 1,
            cores: 1,
            threads: 1,
            maxcpus: 1,
        }
    }
}

/// `-name guest,process=,debug-threads=`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NameConfig {
    pub guest: Option<String>,
    pub process: Option<String>,
    pub debug_threads: bool,
}

/// A QEMU on/off/auto property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOffAuto {
    Auto,
    On,
    Off,
}

/// The machine's `kernel-irqchip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOffSplit {
    On,
    Off,
    Split,
}

/// The machine type and properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineConfig {
    /// The type as given (`pc`, `pc-i440fx-2.11`, `q35`); `pc` when
    /// none was given.  Resolving it is the machine model's job.
    pub type_name: String,
    /// Whether a type was given.
    pub type_given: bool,
    /// All properties in the order set (without `type`), names as
    /// given; later ones override earlier ones.
    pub props: Vec<(String, String)>,
    /// The accelerator chosen (always `kvm`).
    pub accel: String,
    pub kernel_irqchip: Option<OnOffSplit>,
    pub kvm_shadow_mem: Option<i64>,
    pub dump_guest_core: bool,
    pub mem_merge: bool,
    pub usb: bool,
    pub graphics: bool,
    pub igd_passthru: bool,
    pub suppress_vmdesc: bool,
    pub enforce_config_section: bool,
    pub max_ram_below_4g: Option<u64>,
    pub vmport: OnOffAuto,
    pub smm: OnOffAuto,
    pub nvdimm: bool,
    /// Where the first `-machine` (or option setting a machine
    /// property) was given, for "unsupported machine type".
    pub location: Option<String>,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            type_name: "pc".to_string(),
            type_given: false,
            props: Vec::new(),
            accel: "kvm".to_string(),
            kernel_irqchip: None,
            kvm_shadow_mem: None,
            dump_guest_core: true,
            mem_merge: true,
            usb: false,
            graphics: true,
            igd_passthru: false,
            suppress_vmdesc: false,
            enforce_config_section: false,
            max_ram_below_4g: None,
            vmport: OnOffAuto::Auto,
            smm: OnOffAuto::Auto,
            nvdimm: false,
            location: None,
        }
    }
}

/// Default devices QEMU adds unless told otherwise (`-nodefaults`, or
/// an explicit option or `-device` of the same kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    pub serial: bool,
    pub parallel: bool,
    pub monitor: bool,
    pub floppy: bool,
    pub cdrom: bool,
    pub vga: bool,
    pub net: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            serial: true,
            parallel: true,
            monitor: true,
            floppy: true,
            cdrom: true,
            vga: true,
            net: true,
        }
    }
}

/// The local display.  VNC servers are listed separately
/// ([`Config::vnc`]); with `Default` and no VNC server, QEMU without a
/// graphical toolkit starts VNC on `localhost:0,to=99,id=default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayKind {
    Default,
    None,
}

/// One `-blockdev`.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockdevSpec {
    /// The options object.  From keyval syntax every scalar is a
    /// string (see `keyval::keyval_bool` and friends); from JSON the
    /// values are typed.
    pub options: Value,
    /// Whether it came from keyval syntax (strings to convert).
    pub keyval: bool,
    /// `-blockdev ...` as typed.
    pub location: String,
}

/// One `-global DRIVER.PROP=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalProperty {
    pub driver: String,
    pub property: String,
    pub value: String,
    pub location: String,
}

/// `-watchdog-action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogAction {
    Reset,
    Shutdown,
    Poweroff,
    Pause,
    Debug,
    None,
    InjectNmi,
}

impl WatchdogAction {
    /// Parses a QAPI `WatchdogAction` name, case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "reset" => WatchdogAction::Reset,
            "shutdown" => WatchdogAction::Shutdown,
            "poweroff" => WatchdogAction::Poweroff,
            "pause" => WatchdogAction::Pause,
            "debug" => WatchdogAction::Debug,
            "none" => WatchdogAction::None,
            "inject-nmi" => WatchdogAction::InjectNmi,
            _ => return None,
        })
    }

    /// The QAPI name.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchdogAction::Reset => "reset",
            WatchdogAction::Shutdown => "shutdown",
            WatchdogAction::Poweroff => "poweroff",
            WatchdogAction::Pause => "pause",
            WatchdogAction::Debug => "debug",
            WatchdogAction::None => "none",
            WatchdogAction::InjectNmi => "inject-nmi",
        }
    }
}

/// `-trace`: event patterns to enable, event list files, output file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceConfig {
    pub enable: Vec<String>,
    pub events: Vec<String>,
    pub file: Option<String>,
}

/// `-rtc base=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcBase {
    Utc,
    Localtime,
    /// A start date (fields as given, not normalised).
    Date {
        year: i32,
        month: i32,
        day: i32,
        hour: i32,
        minute: i32,
        second: i32,
    },
}

/// `-rtc clock=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcClock {
    Host,
    Rt,
    Vm,
}

/// `-rtc driftfix=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcDriftFix {
    None,
    Slew,
}

/// `-rtc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcConfig {
    pub base: RtcBase,
    pub clock: RtcClock,
    pub driftfix: RtcDriftFix,
}

impl Default for RtcConfig {
    fn default() -> Self {
        RtcConfig {
            base: RtcBase::Utc,
            clock: RtcClock::Host,
            driftfix: RtcDriftFix::None,
        }
    }
}

/// `-boot`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootConfig {
    pub order: Option<String>,
    pub once: Option<String>,
    pub menu: Option<bool>,
    pub splash: Option<String>,
    pub splash_time: Option<String>,
    pub reboot_timeout: Option<String>,
    pub strict: bool,
}

/// `-sandbox`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SandboxConfig {
    pub enable: bool,
    pub obsolete: Option<String>,
    pub elevateprivileges: Option<String>,
    pub spawn: Option<String>,
    pub resourcecontrol: Option<String>,
    pub location: String,
}
