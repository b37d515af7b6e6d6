//! The option tables: every command-line option QEMU 2.11 for x86-64
//! knows (name and whether it takes an argument), and the QemuOpts
//! groups this parser implements, with their parameters exactly as
//! QEMU 2.11.0 reports them in `query-command-line-options`.

use ParamKind::{Bool, Num, Size, Str};

/// One command-line option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionDef {
    /// Name without the leading dash.
    pub name: &'static str,
    /// Whether it consumes the next argv element.
    pub has_arg: bool,
    /// Whether the option applies to the x86-64 target.
    pub x86: bool,
}

const fn opt(name: &'static str, has_arg: bool, x86: bool) -> OptionDef {
    OptionDef { name, has_arg, x86 }
}

/// Every option of QEMU 2.11's `qemu-system-x86_64`, in the order of
/// its help text.  Options this parser does not implement are still
/// recognised (so their argument is consumed and they can be reported
/// as unsupported by name).
pub const OPTIONS: &[OptionDef] = &[
    opt("h", false, true),
    opt("help", false, true),
    opt("version", false, true),
    opt("machine", true, true),
    opt("M", true, true),
    opt("cpu", true, true),
    opt("accel", true, true),
    opt("smp", true, true),
    opt("numa", true, true),
    opt("add-fd", true, true),
    opt("set", true, true),
    opt("global", true, true),
    opt("boot", true, true),
    opt("m", true, true),
    opt("mem-path", true, true),
    opt("mem-prealloc", false, true),
    opt("k", true, true),
    opt("audio-help", false, true),
    opt("soundhw", true, true),
    opt("balloon", true, true),
    opt("device", true, true),
    opt("name", true, true),
    opt("uuid", true, true),
    opt("fda", true, true),
    opt("fdb", true, true),
    opt("hda", true, true),
    opt("hdb", true, true),
    opt("hdc", true, true),
    opt("hdd", true, true),
    opt("cdrom", true, true),
    opt("blockdev", true, true),
    opt("drive", true, true),
    opt("mtdblock", true, true),
    opt("sd", true, true),
    opt("pflash", true, true),
    opt("snapshot", false, true),
    opt("hdachs", true, true),
    opt("fsdev", true, true),
    opt("virtfs", true, true),
    opt("virtfs_synth", false, true),
    opt("usb", false, true),
    opt("usbdevice", true, true),
    opt("display", true, true),
    opt("nographic", false, true),
    opt("curses", false, true),
    opt("no-frame", false, true),
    opt("alt-grab", false, true),
    opt("ctrl-grab", false, true),
    opt("no-quit", false, true),
    opt("sdl", false, true),
    opt("spice", true, true),
    opt("portrait", false, true),
    opt("rotate", true, true),
    opt("vga", true, true),
    opt("full-screen", false, true),
    opt("g", true, false),
    opt("vnc", true, true),
    opt("win2k-hack", false, true),
    opt("no-fd-bootchk", false, true),
    opt("no-acpi", false, true),
    opt("no-hpet", false, true),
    opt("acpitable", true, true),
    opt("smbios", true, true),
    opt("tftp", true, true),
    opt("bootp", true, true),
    opt("redir", true, true),
    opt("netdev", true, true),
    opt("net", true, true),
    opt("chardev", true, true),
    opt("iscsi", true, true),
    opt("bt", true, true),
    opt("tpmdev", true, true),
    opt("kernel", true, true),
    opt("append", true, true),
    opt("initrd", true, true),
    opt("dtb", true, true),
    opt("fw_cfg", true, true),
    opt("serial", true, true),
    opt("parallel", true, true),
    opt("monitor", true, true),
    opt("qmp", true, true),
    opt("qmp-pretty", true, true),
    opt("mon", true, true),
    opt("debugcon", true, true),
    opt("pidfile", true, true),
    opt("singlestep", false, true),
    opt("S", false, true),
    opt("realtime", true, true),
    opt("gdb", true, true),
    opt("s", false, true),
    opt("d", true, true),
    opt("D", true, true),
    opt("dfilter", true, true),
    opt("L", true, true),
    opt("bios", true, true),
    opt("enable-kvm", false, true),
    opt("enable-hax", false, true),
    opt("xen-domid", true, true),
    opt("xen-create", false, true),
    opt("xen-attach", false, true),
    opt("xen-domid-restrict", false, true),
    opt("no-reboot", false, true),
    opt("no-shutdown", false, true),
    opt("loadvm", true, true),
    opt("daemonize", false, true),
    opt("option-rom", true, true),
    opt("clock", true, true),
    opt("localtime", false, true),
    opt("startdate", true, true),
    opt("rtc", true, true),
    opt("icount", true, true),
    opt("watchdog", true, true),
    opt("watchdog-action", true, true),
    opt("echr", true, true),
    opt("virtioconsole", true, true),
    opt("show-cursor", false, true),
    opt("tb-size", true, true),
    opt("incoming", true, true),
    opt("only-migratable", false, true),
    opt("nodefaults", false, true),
    opt("chroot", true, true),
    opt("runas", true, true),
    opt("prom-env", true, false),
    opt("semihosting", false, false),
    opt("semihosting-config", true, false),
    opt("old-param", false, false),
    opt("sandbox", true, true),
    opt("readconfig", true, true),
    opt("writeconfig", true, true),
    opt("nodefconfig", false, true),
    opt("no-user-config", false, true),
    opt("trace", true, true),
    opt("qtest", true, true),
    opt("qtest-log", true, true),
    opt("enable-fips", false, true),
    opt("no-kvm", false, true),
    opt("msg", true, true),
    opt("dump-vmstate", true, true),
    opt("object", true, true),
    opt("rtc-td-hack", false, true),
];

/// Finds an option by name (without dashes).
pub fn lookup_option(name: &str) -> Option<&'static OptionDef> {
    OPTIONS.iter().find(|o| o.name == name)
}

/// The type of a QemuOpts parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Any string.
    Str,
    /// `on` or `off` (a bare `name` means on, `noname` off).
    Bool,
    /// An unsigned 64-bit integer (decimal, `0x` hex or `0` octal).
    Num,
    /// A byte count with an optional k/M/G/T/P/E suffix.
    Size,
}

impl ParamKind {
    /// The name `query-command-line-options` uses for the type.
    pub fn as_str(self) -> &'static str {
        match self {
            Str => "string",
            Bool => "boolean",
            Num => "number",
            Size => "size",
        }
    }
}

/// One parameter of a QemuOpts group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamDef {
    pub name: &'static str,
    pub kind: ParamKind,
    pub help: Option<&'static str>,
    pub default: Option<&'static str>,
}

const fn p(name: &'static str, kind: ParamKind, help: Option<&'static str>) -> ParamDef {
    ParamDef {
        name,
        kind,
        help,
        default: None,
    }
}

/// A QemuOpts group (what QEMU calls a QemuOptsList).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupDef {
    /// The group's name, as `query-command-line-options` reports it.
    pub name: &'static str,
    /// The key a leading value without `=` stands for, where the
    /// option is parsed with one.
    pub implied: Option<&'static str>,
    /// Whether repeated options merge into one set.
    pub merge: bool,
    /// Whether any parameter name is accepted when parsing (QEMU checks
    /// these later, against the device, backend or object).
    pub accepts_any: bool,
    /// The parameters, in the order QEMU 2.11 reports them.
    pub params: &'static [ParamDef],
}

impl GroupDef {
    /// Finds a parameter by name.
    pub fn param(&self, name: &str) -> Option<&'static ParamDef> {
        self.params.iter().find(|p| p.name == name)
    }
}

const fn group(
    name: &'static str,
    implied: Option<&'static str>,
    merge: bool,
    accepts_any: bool,
    params: &'static [ParamDef],
) -> GroupDef {
    GroupDef {
        name,
        implied,
        merge,
        accepts_any,
        params,
    }
}

/// The groups this parser implements, in the order QEMU 2.11 reports
/// them in `query-command-line-options`.
pub const GROUPS: &[GroupDef] = &[
    group("vnc", Some("vnc"), false, false, VNC_PARAMS),
    group("smbios", None, false, true, SMBIOS_PARAMS),
    group("numa", Some("type"), false, true, NUMA_PARAMS),
    group("name", Some("guest"), true, false, NAME_PARAMS),
    group("msg", None, false, false, MSG_PARAMS),
    group("realtime", None, false, false, REALTIME_PARAMS),
    group("object", Some("qom-type"), false, true, OBJECT_PARAMS),
    group("sandbox", Some("enable"), false, false, SANDBOX_PARAMS),
    group("boot-opts", Some("order"), true, false, BOOT_OPTS_PARAMS),
    group("smp-opts", Some("cpus"), true, false, SMP_OPTS_PARAMS),
    group("memory", Some("size"), true, false, MEMORY_PARAMS),
    group("accel", Some("accel"), true, false, ACCEL_PARAMS),
    // The listed parameters are what QEMU reports; the machine's own
    // properties are checked after parsing (see machine.rs).
    group("machine", Some("type"), true, true, MACHINE_PARAMS),
    group("trace", Some("enable"), false, false, TRACE_PARAMS),
    group("mon", Some("chardev"), false, false, MON_PARAMS),
    group("global", None, false, false, GLOBAL_PARAMS),
    group("rtc", None, false, false, RTC_PARAMS),
    group("netdev", Some("type"), false, true, NETDEV_PARAMS),
    group("device", Some("driver"), false, true, DEVICE_PARAMS),
    group("chardev", Some("backend"), false, false, CHARDEV_PARAMS),
    // -drive accepts block-driver options too; QEMU reports the union
    // of its fixed lists (with its duplicates).
    group("drive", None, false, true, DRIVE_PARAMS),
];

/// Finds a group by name.
pub fn lookup_group(name: &str) -> Option<&'static GroupDef> {
    GROUPS.iter().find(|g| g.name == name)
}

/// Finds a group that must exist (the parser only asks for its own).
pub fn group_def(name: &str) -> &'static GroupDef {
    match lookup_group(name) {
        Some(g) => g,
        None => unreachable!("QemuOpts group {name} missing from GROUPS"),
    }
}

const VNC_PARAMS: &[ParamDef] = &[
    p("non-adaptive", Bool, None),
    p("lossy", Bool, None),
    p("acl", Bool, None),
    p("x509verify", Str, None),
    p("tls", Bool, None),
    p("sasl", Bool, None),
    p("key-delay-ms", Num, None),
    p("lock-key-sync", Bool, None),
    p("reverse", Bool, None),
    p("password", Bool, None),
    p("ipv6", Bool, None),
    p("ipv4", Bool, None),
    p("to", Num, None),
    p("connections", Num, None),
    p("head", Num, None),
    p("display", Str, None),
    p("share", Str, None),
    p("x509", Str, None),
    p("tls-creds", Str, None),
    p("websocket", Str, None),
    p("vnc", Str, None),
];

const SMBIOS_PARAMS: &[ParamDef] = &[];

const NUMA_PARAMS: &[ParamDef] = &[];

const NAME_PARAMS: &[ParamDef] = &[
    p("debug-threads", Bool, Some("When enabled, name the individual threads; defaults off.\nNOTE: The thread names are for debugging and not a\nstable API.")),
    p("process", Str, Some("Sets the name of the QEMU process, as shown in top etc")),
    p("guest", Str, Some("Sets the name of the guest.\nThis name will be displayed in the SDL window caption.\nThe name will also be used for the VNC server")),
];

const MSG_PARAMS: &[ParamDef] = &[p("timestamp", Bool, None)];

const REALTIME_PARAMS: &[ParamDef] = &[p("mlock", Bool, None)];

const OBJECT_PARAMS: &[ParamDef] = &[];

const SANDBOX_PARAMS: &[ParamDef] = &[
    p("resourcecontrol", Str, None),
    p("spawn", Str, None),
    p("elevateprivileges", Str, None),
    p("obsolete", Str, None),
    p("enable", Bool, None),
];

const BOOT_OPTS_PARAMS: &[ParamDef] = &[
    p("strict", Bool, None),
    p("reboot-timeout", Str, None),
    p("splash-time", Str, None),
    p("splash", Str, None),
    p("menu", Bool, None),
    p("once", Str, None),
    p("order", Str, None),
];

const SMP_OPTS_PARAMS: &[ParamDef] = &[
    p("maxcpus", Num, None),
    p("threads", Num, None),
    p("cores", Num, None),
    p("sockets", Num, None),
    p("cpus", Num, None),
];

const MEMORY_PARAMS: &[ParamDef] = &[
    p("maxmem", Size, None),
    p("slots", Num, None),
    p("size", Size, None),
];

const ACCEL_PARAMS: &[ParamDef] = &[
    p("thread", Str, Some("Enable/disable multi-threaded TCG")),
    p("accel", Str, Some("Select the type of accelerator")),
];

const MACHINE_PARAMS: &[ParamDef] = &[
    p("loadparm", Str, Some("Up to 8 chars in set of [A-Za-z0-9. ](lower case chars converted to upper case) to pass to machine loader, boot manager, and guest kernel")),
    p("dea-key-wrap", Bool, Some("enable/disable DEA key wrapping using the CPACF wrapping key")),
    p("aes-key-wrap", Bool, Some("enable/disable AES key wrapping using the CPACF wrapping key")),
    p("suppress-vmdesc", Bool, Some("Set on to disable self-describing migration")),
    p("iommu", Bool, Some("Set on/off to enable/disable Intel IOMMU (VT-d)")),
    p("firmware", Str, Some("firmware image")),
    p("usb", Bool, Some("Set on/off to enable/disable usb")),
    p("mem-merge", Bool, Some("enable/disable memory merge support")),
    p("dump-guest-core", Bool, Some("Include guest memory in  a core dump")),
    p("dt_compatible", Str, Some("Overrides the \"compatible\" property of the dt root node")),
    p("phandle_start", Num, Some("The first phandle ID we may generate dynamically")),
    p("dumpdtb", Str, Some("Dump current dtb to a file and quit")),
    p("dtb", Str, Some("Linux kernel device tree file")),
    p("append", Str, Some("Linux kernel command line")),
    p("initrd", Str, Some("Linux initial ramdisk file")),
    p("kernel", Str, Some("Linux kernel image file")),
    p("kvm_shadow_mem", Size, Some("KVM shadow MMU size")),
    p("kernel_irqchip", Bool, Some("use KVM in-kernel irqchip")),
    p("accel", Str, Some("accelerator list")),
    p("type", Str, Some("emulated machine")),
];

const TRACE_PARAMS: &[ParamDef] = &[
    p("file", Str, None),
    p("events", Str, None),
    p("enable", Str, None),
];

const MON_PARAMS: &[ParamDef] = &[
    p("pretty", Bool, None),
    p("default", Bool, None),
    p("chardev", Str, None),
    p("mode", Str, None),
];

const GLOBAL_PARAMS: &[ParamDef] = &[
    p("value", Str, None),
    p("property", Str, None),
    p("driver", Str, None),
];

const RTC_PARAMS: &[ParamDef] = &[
    p("driftfix", Str, None),
    p("clock", Str, None),
    p("base", Str, None),
];

const NETDEV_PARAMS: &[ParamDef] = &[];

const DEVICE_PARAMS: &[ParamDef] = &[];

const CHARDEV_PARAMS: &[ParamDef] = &[
    p("logappend", Bool, None),
    p("logfile", Str, None),
    p("append", Bool, None),
    p("chardev", Str, None),
    p("size", Size, None),
    p("debug", Num, None),
    p("name", Str, None),
    p("signal", Bool, None),
    p("mux", Bool, None),
    p("rows", Num, None),
    p("cols", Num, None),
    p("height", Num, None),
    p("width", Num, None),
    p("tls-creds", Str, None),
    p("tn3270", Bool, None),
    p("telnet", Bool, None),
    p("reconnect", Num, None),
    p("delay", Bool, None),
    p("server", Bool, None),
    p("wait", Bool, None),
    p("ipv6", Bool, None),
    p("ipv4", Bool, None),
    p("to", Num, None),
    p("localport", Str, None),
    p("localaddr", Str, None),
    p("port", Str, None),
    p("host", Str, None),
    p("path", Str, None),
    p("backend", Str, None),
];

const DRIVE_PARAMS: &[ParamDef] = &[
    p(
        "copy-on-read",
        Bool,
        Some("copy read data from backing file into image file"),
    ),
    p("werror", Str, Some("write error action")),
    p("rerror", Str, Some("read error action")),
    p("read-only", Bool, Some("open drive file as read-only")),
    p("file", Str, Some("file name")),
    p("serial", Str, Some("disk serial number")),
    p("addr", Str, Some("pci address (virtio only)")),
    p("boot", Bool, Some("(deprecated, ignored)")),
    p("trans", Str, Some("chs translation (auto, lba, none)")),
    p("secs", Num, Some("number of sectors (ide disk geometry)")),
    p("heads", Num, Some("number of heads (ide disk geometry)")),
    p("cyls", Num, Some("number of cylinders (ide disk geometry)")),
    p(
        "if",
        Str,
        Some("interface (ide, scsi, sd, mtd, floppy, pflash, virtio)"),
    ),
    p("media", Str, Some("media type (disk, cdrom)")),
    p("index", Num, Some("index number")),
    p("unit", Num, Some("unit number (i.e. lun for scsi)")),
    p("bus", Num, Some("bus number")),
    p(
        "stats-account-failed",
        Bool,
        Some("whether to account for failed I/O operations in the statistics"),
    ),
    p(
        "stats-account-invalid",
        Bool,
        Some("whether to account for invalid I/O operations in the statistics"),
    ),
    p(
        "detect-zeroes",
        Str,
        Some("try to optimize zero writes (off, on, unmap)"),
    ),
    p(
        "throttling.group",
        Str,
        Some("name of the block throttling group"),
    ),
    p(
        "throttling.iops-size",
        Num,
        Some("when limiting by iops max size of an I/O in bytes"),
    ),
    p(
        "throttling.bps-write-max-length",
        Num,
        Some("length of the bps-write-max burst period, in seconds"),
    ),
    p(
        "throttling.bps-read-max-length",
        Num,
        Some("length of the bps-read-max burst period, in seconds"),
    ),
    p(
        "throttling.bps-total-max-length",
        Num,
        Some("length of the bps-total-max burst period, in seconds"),
    ),
    p(
        "throttling.iops-write-max-length",
        Num,
        Some("length of the iops-write-max burst period, in seconds"),
    ),
    p(
        "throttling.iops-read-max-length",
        Num,
        Some("length of the iops-read-max burst period, in seconds"),
    ),
    p(
        "throttling.iops-total-max-length",
        Num,
        Some("length of the iops-total-max burst period, in seconds"),
    ),
    p(
        "throttling.bps-write-max",
        Num,
        Some("total bytes write burst"),
    ),
    p(
        "throttling.bps-read-max",
        Num,
        Some("total bytes read burst"),
    ),
    p("throttling.bps-total-max", Num, Some("total bytes burst")),
    p(
        "throttling.iops-write-max",
        Num,
        Some("I/O operations write burst"),
    ),
    p(
        "throttling.iops-read-max",
        Num,
        Some("I/O operations read burst"),
    ),
    p(
        "throttling.iops-total-max",
        Num,
        Some("I/O operations burst"),
    ),
    p(
        "throttling.bps-write",
        Num,
        Some("limit write bytes per second"),
    ),
    p(
        "throttling.bps-read",
        Num,
        Some("limit read bytes per second"),
    ),
    p(
        "throttling.bps-total",
        Num,
        Some("limit total bytes per second"),
    ),
    p(
        "throttling.iops-write",
        Num,
        Some("limit write operations per second"),
    ),
    p(
        "throttling.iops-read",
        Num,
        Some("limit read operations per second"),
    ),
    p(
        "throttling.iops-total",
        Num,
        Some("limit total I/O operations per second"),
    ),
    p("werror", Str, Some("write error action")),
    p("format", Str, Some("disk format (raw, qcow2, ...)")),
    p("cache.writeback", Bool, Some("Enable writeback mode")),
    p(
        "aio",
        Str,
        Some("host AIO implementation (threads, native)"),
    ),
    p("snapshot", Bool, Some("enable/disable snapshot mode")),
    p(
        "force-share",
        Bool,
        Some("always accept other writers (default: off)"),
    ),
    p(
        "discard",
        Str,
        Some("discard operation (ignore/off, unmap/on)"),
    ),
    p("read-only", Bool, Some("Node is opened in read-only mode")),
    p("cache.no-flush", Bool, Some("Ignore flush requests")),
    p(
        "cache.direct",
        Bool,
        Some("Bypass software writeback cache on the host"),
    ),
    p("driver", Str, Some("Block driver to use for the node")),
    p("node-name", Str, Some("Node name of the block device node")),
];
