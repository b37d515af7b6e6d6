//! The option loop: what each option does as it is met (QEMU's second
//! pass over argv).  Checks QEMU makes after the loop are in
//! `finish.rs`.

use super::chardev::{parse_compat, scan_until};
use super::config::{
    BlockdevSpec, Config, DisplayKind, GivenOption, GlobalProperty, RtcBase, RtcClock, RtcDriftFix,
    WatchdogAction,
};
use super::keyval::parse_keyval_or_json;
use super::opts::{is_help_option, Opts, OptsList};
use super::smbios::check_smbios;
use super::table::{group_def, lookup_option, OptionDef};
use super::{Action, CmdlineError};

/// One element of argv after the first pass.
pub(super) struct Word<'a> {
    /// The option, or `None` for a disk image (no leading dash).
    pub def: Option<&'static OptionDef>,
    /// The option as typed (`--m`) or the image name.
    pub typed: &'a str,
    pub arg: Option<&'a str>,
    /// `-m 512` as typed, for messages.
    pub location: String,
}

/// QEMU's first pass: every option must exist and have its argument.
pub(super) fn scan(args: &[String]) -> Result<Vec<Word<'_>>, CmdlineError> {
    let mut words = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let typed = args[i].as_str();
        let Some(dashless) = typed.strip_prefix('-') else {
            words.push(Word {
                def: None,
                typed,
                arg: None,
                location: typed.to_string(),
            });
            i += 1;
            continue;
        };
        let name = dashless.strip_prefix('-').unwrap_or(dashless);
        let def =
            lookup_option(name).ok_or_else(|| CmdlineError::new("invalid option").at(typed))?;
        if def.has_arg {
            let arg = args
                .get(i + 1)
                .ok_or_else(|| CmdlineError::new("requires an argument").at(typed))?;
            words.push(Word {
                def: Some(def),
                typed,
                arg: Some(arg),
                location: format!("{typed} {arg}"),
            });
            i += 2;
        } else {
            words.push(Word {
                def: Some(def),
                typed,
                arg: None,
                location: typed.to_string(),
            });
            i += 1;
        }
    }
    Ok(words)
}

/// Parser state across the loop.
pub(super) struct Parser {
    pub cfg: Config,
    pub machine: OptsList,
    pub accel: OptsList,
    pub memory: OptsList,
    pub smp: OptsList,
    pub name: OptsList,
    pub boot: OptsList,
    pub chardev: OptsList,
    pub mon: OptsList,
    pub device: OptsList,
    pub netdev: OptsList,
    pub object: OptsList,
    pub drive: OptsList,
    pub vnc: OptsList,
    pub numa: OptsList,
    pub sandbox: OptsList,
    pub globals: OptsList,
    /// Index for the next `compat_monitorN`.
    pub monitor_index: usize,
    /// `-serial` arguments with their locations (`None`: a default).
    pub serial_args: Vec<(String, Option<String>)>,
    /// `-d` argument and location.
    pub log_mask: Option<String>,
}

type Step = Result<Option<Action>, CmdlineError>;

impl Parser {
    pub fn new() -> Self {
        let list = |name| OptsList::new(group_def(name));
        Parser {
            cfg: Config::default(),
            machine: list("machine"),
            accel: list("accel"),
            memory: list("memory"),
            smp: list("smp-opts"),
            name: list("name"),
            boot: list("boot-opts"),
            chardev: list("chardev"),
            mon: list("mon"),
            device: list("device"),
            netdev: list("netdev"),
            object: list("object"),
            drive: list("drive"),
            vnc: list("vnc"),
            numa: list("numa"),
            sandbox: list("sandbox"),
            globals: list("global"),
            monitor_index: 0,
            serial_args: Vec::new(),
            log_mask: None,
        }
    }

    /// Handles one word; returns an action that ends parsing at once
    /// (`-h`, `-version`, `-accel help`).
    pub fn handle(&mut self, w: &Word<'_>) -> Step {
        let Some(def) = w.def else {
            self.drive_add(0, w.typed, "media=disk", &w.location)?;
            return Ok(None);
        };
        let given = GivenOption {
            name: def.name.to_string(),
            arg: w.arg.map(str::to_string),
            location: w.location.clone(),
        };
        self.cfg.given.push(given.clone());
        if !def.x86 {
            return Err(CmdlineError::new("Option not supported for this target").at(&w.location));
        }
        let arg = w.arg.unwrap_or("");
        let loc = w.location.as_str();
        self.dispatch(def.name, arg, loc, given)
            .map_err(|e| e.at(loc))
    }

    fn dispatch(&mut self, name: &str, arg: &str, loc: &str, given: GivenOption) -> Step {
        if let Some(step) = self.machine_option(name, arg, loc) {
            return step;
        }
        if let Some(step) = self.device_option(name, arg, loc) {
            return step;
        }
        if let Some(step) = self.monitor_option(name, arg, loc) {
            return step;
        }
        if let Some(step) = self.flag_option(name, arg) {
            return step;
        }
        if let Some(step) = self.misc_option(name, arg, loc) {
            return step;
        }
        self.unsupported(name, arg, given);
        Ok(None)
    }

    /// Options that end up in the machine, memory, CPU or accelerator
    /// settings.
    fn machine_option(&mut self, name: &str, arg: &str, loc: &str) -> Option<Step> {
        let r = match name {
            "h" | "help" => return Some(Ok(Some(Action::Help))),
            "version" => return Some(Ok(Some(Action::Version))),
            "machine" | "M" => self.machine_opts(arg, true, loc),
            "enable-kvm" => self.machine_opts("accel=kvm", false, loc),
            "no-kvm" => self.machine_opts("accel=tcg", false, loc),
            "usb" => self.machine_opts("usb=on", false, loc),
            "nographic" => {
                self.cfg.nographic = true;
                self.cfg.display = DisplayKind::None;
                self.machine_opts("graphics=off", false, loc)
            }
            "kernel" => self.machine_set("kernel", arg, loc),
            "initrd" => self.machine_set("initrd", arg, loc),
            "append" => self.machine_set("append", arg, loc),
            "bios" => self.machine_set("firmware", arg, loc),
            "accel" => return Some(self.accel_option(arg, loc)),
            "cpu" => {
                self.cfg.cpu_model = Some(arg.to_string());
                Ok(())
            }
            "smp" => self.smp.parse(arg, true, loc).map(drop),
            "m" => self.memory.parse(arg, true, loc).map(drop),
            "name" => self.name.parse(arg, true, loc).map(drop),
            "uuid" => self.uuid_option(arg),
            "boot" => self.boot.parse(arg, true, loc).map(drop),
            "numa" => self.numa.parse(arg, true, loc).map(drop),
            "smbios" => self.smbios_option(arg, loc),
            "sandbox" => self.sandbox.parse(arg, true, loc).map(drop),
            "global" => self.global_option(arg, loc),
            _ => return None,
        };
        Some(r.map(|()| None))
    }

    /// Block, network, object and device options.
    fn device_option(&mut self, name: &str, arg: &str, loc: &str) -> Option<Step> {
        let r = match name {
            "blockdev" => self.blockdev_option(arg, loc),
            "drive" => self.drive.parse(arg, false, loc).map(drop),
            "hda" | "hdb" | "hdc" | "hdd" => {
                let index = u64::from(name.as_bytes()[2] - b'a');
                self.drive_add(index, arg, "media=disk", loc)
            }
            "cdrom" => self.drive_add(2, arg, "media=cdrom", loc),
            "device" => self.device.parse(arg, true, loc).map(drop),
            "netdev" => {
                self.cfg.defaults.net = false;
                self.netdev.parse(arg, true, loc).map(drop)
            }
            "object" => self.object.parse(arg, true, loc).map(drop),
            "vnc" => self.vnc_option(arg, loc),
            "display" => self.display_option(arg, loc),
            "watchdog" => self.watchdog_option(arg),
            "watchdog-action" => match WatchdogAction::parse(arg) {
                Some(a) => {
                    self.cfg.watchdog_action = a;
                    Ok(())
                }
                None => Err(CmdlineError::new("unknown -watchdog-action parameter")),
            },
            _ => return None,
        };
        Some(r.map(|()| None))
    }

    /// Character devices, monitors and serial ports.
    fn monitor_option(&mut self, name: &str, arg: &str, loc: &str) -> Option<Step> {
        let r = match name {
            "chardev" => self.chardev.parse(arg, true, loc).map(drop),
            "mon" => {
                self.cfg.defaults.monitor = false;
                self.mon.parse(arg, true, loc).map(drop)
            }
            "qmp" | "qmp-pretty" => {
                self.cfg.defaults.monitor = false;
                self.monitor_parse(arg, "control", name == "qmp-pretty", loc)
            }
            "monitor" => {
                self.cfg.defaults.monitor = false;
                if arg.starts_with("none") {
                    Ok(())
                } else {
                    self.monitor_parse(arg, "readline", false, loc)
                }
            }
            "serial" => {
                self.cfg.defaults.serial = false;
                if arg.starts_with("mon:") {
                    self.cfg.defaults.monitor = false;
                }
                self.serial_args
                    .push((arg.to_string(), Some(loc.to_string())));
                Ok(())
            }
            _ => return None,
        };
        Some(r.map(|()| None))
    }

    /// Options that only set a field.
    fn flag_option(&mut self, name: &str, arg: &str) -> Option<Step> {
        let c = &mut self.cfg;
        let some = || Some(arg.to_string());
        match name {
            "S" => c.start_paused = true,
            "no-shutdown" => c.no_shutdown = true,
            "no-reboot" => c.no_reboot = true,
            "daemonize" => c.daemonize = true,
            "nodefaults" => c.nodefaults = true,
            "nodefconfig" | "no-user-config" => c.no_user_config = true,
            "mem-prealloc" => c.mem_prealloc = true,
            "no-hpet" => c.no_hpet = true,
            "no-acpi" => c.no_acpi = true,
            "incoming" => c.incoming = some(),
            "pidfile" => c.pidfile = some(),
            "D" => c.logfile = some(),
            "mem-path" => c.mem_path = some(),
            "k" => c.keyboard_layout = some(),
            "d" => self.log_mask = some(),
            _ => return None,
        }
        Some(Ok(None))
    }

    /// Options parsed into a group that is used at once.
    fn misc_option(&mut self, name: &str, arg: &str, loc: &str) -> Option<Step> {
        let r = match name {
            "trace" => self.trace_option(arg, loc),
            "rtc" => self.rtc_option(arg, loc),
            "msg" => single(arg, "msg", false, loc).and_then(|o| {
                self.cfg.msg_timestamp = o.get_bool("timestamp")?.unwrap_or(true);
                Ok(())
            }),
            "realtime" => single(arg, "realtime", false, loc).and_then(|o| {
                self.cfg.realtime_mlock = o.get_bool("mlock")?.unwrap_or(true);
                Ok(())
            }),
            _ => return None,
        };
        Some(r.map(|()| None))
    }

    /// Known to QEMU, not implemented here: recorded for the caller.
    fn unsupported(&mut self, name: &str, arg: &str, given: GivenOption) {
        let d = &mut self.cfg.defaults;
        match name {
            "parallel" | "virtioconsole" => {
                if name == "parallel" {
                    d.parallel = false;
                }
                if arg.starts_with("mon:") {
                    d.monitor = false;
                }
            }
            "vga" => d.vga = false,
            "net" => d.net = false,
            _ => {}
        }
        self.cfg.unsupported.push(given);
    }

    fn machine_opts(&mut self, params: &str, implied: bool, loc: &str) -> Result<(), CmdlineError> {
        self.machine.parse(params, implied, loc).map(drop)
    }

    fn machine_set(&mut self, name: &str, value: &str, loc: &str) -> Result<(), CmdlineError> {
        let i = self.machine.create(None, false, loc)?;
        self.machine.set(i, name, value)
    }

    /// `-accel`: lists accelerators when none is named, else sets the
    /// machine's `accel`.
    fn accel_option(&mut self, arg: &str, loc: &str) -> Step {
        let i = self.accel.parse(arg, true, loc)?;
        let set = &self.accel.sets[i];
        self.cfg.accel_thread = set.get("thread").map(str::to_string);
        match set.get("accel").map(str::to_string) {
            Some(a) if !is_help_option(&a) => {
                self.machine_set("accel", &a, loc)?;
                Ok(None)
            }
            _ => Ok(Some(Action::ListAccels)),
        }
    }

    fn uuid_option(&mut self, arg: &str) -> Result<(), CmdlineError> {
        let uuid = parse_uuid(arg)
            .ok_or_else(|| CmdlineError::new("failed to parse UUID string: wrong format"))?;
        self.cfg.uuid = Some(uuid);
        Ok(())
    }

    fn smbios_option(&mut self, arg: &str, loc: &str) -> Result<(), CmdlineError> {
        let opts = single(arg, "smbios", false, loc)?;
        if let Some(uuid) = check_smbios(&opts)? {
            self.cfg.uuid = Some(uuid);
        }
        self.cfg.smbios.push(opts);
        Ok(())
    }

    /// `-global DRIVER.PROP=VALUE` or `-global driver=,property=,value=`.
    fn global_option(&mut self, arg: &str, loc: &str) -> Result<(), CmdlineError> {
        let (driver, property, value) = match split_global(arg) {
            Some((d, p, v)) => (d.to_string(), p.to_string(), v.to_string()),
            None => {
                let i = self.globals.parse(arg, false, loc)?;
                let o = &self.globals.sets[i];
                let get = |k| o.get(k).unwrap_or_default().to_string();
                (get("driver"), get("property"), get("value"))
            }
        };
        self.cfg.globals.push(GlobalProperty {
            driver,
            property,
            value,
            location: loc.to_string(),
        });
        Ok(())
    }

    fn blockdev_option(&mut self, arg: &str, loc: &str) -> Result<(), CmdlineError> {
        let options = parse_keyval_or_json(arg, Some("driver"))?;
        self.cfg.blockdevs.push(BlockdevSpec {
            options,
            keyval: !arg.starts_with('{'),
            location: loc.to_string(),
        });
        Ok(())
    }

    /// A drive from `-hda`, `-cdrom` or a bare image name.
    fn drive_add(
        &mut self,
        index: u64,
        file: &str,
        optstr: &str,
        loc: &str,
    ) -> Result<(), CmdlineError> {
        let i = self.drive.parse(optstr, false, loc)?;
        self.drive.set(i, "index", &index.to_string())?;
        self.drive.set(i, "file", file)
    }

    /// `-vnc`: ids `default`, `vnc2`, `vnc3`, ... unless given.
    fn vnc_option(&mut self, arg: &str, loc: &str) -> Result<(), CmdlineError> {
        let i = self.vnc.parse(arg, true, loc)?;
        if self.vnc.sets[i].id.is_none() {
            let mut id = "default".to_string();
            let mut n = 2;
            while self.vnc.find(Some(&id)).is_some() {
                id = format!("vnc{n}");
                n += 1;
            }
            self.vnc.sets[i].id = Some(id);
        }
        Ok(())
    }

    /// `-display`: only `none` and `vnc=` exist in this build.
    fn display_option(&mut self, arg: &str, loc: &str) -> Result<(), CmdlineError> {
        let disabled = |what: &str| Err(CmdlineError::new(format!("{what} support is disabled")));
        if arg.starts_with("sdl") {
            disabled("SDL")
        } else if let Some(rest) = arg.strip_prefix("vnc") {
            match rest.strip_prefix('=') {
                Some(display) => self.vnc_option(display, loc),
                None => Err(CmdlineError::new(
                    "VNC requires a display argument vnc=<display>",
                )),
            }
        } else if arg.starts_with("egl-headless") {
            disabled("egl")
        } else if arg.starts_with("curses") {
            disabled("curses")
        } else if arg.starts_with("gtk") {
            disabled("GTK")
        } else if arg.starts_with("none") {
            self.cfg.display = DisplayKind::None;
            Ok(())
        } else {
            Err(CmdlineError::new("unknown display type"))
        }
    }

    fn watchdog_option(&mut self, arg: &str) -> Result<(), CmdlineError> {
        if self.cfg.watchdog.is_some() {
            return Err(CmdlineError::new("only one watchdog option may be given"));
        }
        self.cfg.watchdog = Some(arg.to_string());
        Ok(())
    }

    /// `-trace [enable=]PATTERN,events=FILE,file=FILE`; each `-trace`
    /// replaces the output file.
    fn trace_option(&mut self, arg: &str, loc: &str) -> Result<(), CmdlineError> {
        let o = single(arg, "trace", true, loc)?;
        let t = &mut self.cfg.trace;
        t.enable.extend(o.get("enable").map(str::to_string));
        t.events.extend(o.get("events").map(str::to_string));
        t.file = o.get("file").map(str::to_string);
        Ok(())
    }

    fn rtc_option(&mut self, arg: &str, loc: &str) -> Result<(), CmdlineError> {
        let o = single(arg, "rtc", false, loc)?;
        let rtc = &mut self.cfg.rtc;
        if let Some(base) = o.get("base") {
            rtc.base = match base {
                "utc" => RtcBase::Utc,
                "localtime" => RtcBase::Localtime,
                date => parse_rtc_date(date)?,
            };
        }
        if let Some(clock) = o.get("clock") {
            rtc.clock = match clock {
                "host" => RtcClock::Host,
                "rt" => RtcClock::Rt,
                "vm" => RtcClock::Vm,
                v => return Err(invalid_value(v)),
            };
        }
        if let Some(fix) = o.get("driftfix") {
            rtc.driftfix = match fix {
                "slew" => RtcDriftFix::Slew,
                "none" => RtcDriftFix::None,
                v => return Err(invalid_value(v)),
            };
        }
        Ok(())
    }

    /// `-qmp`, `-qmp-pretty`, `-monitor`: a chardev from the legacy
    /// string (or `chardev:ID`) and a monitor on it.
    pub fn monitor_parse(
        &mut self,
        arg: &str,
        mode: &str,
        pretty: bool,
        loc: &str,
    ) -> Result<(), CmdlineError> {
        let label = match arg.strip_prefix("chardev:") {
            Some(id) => truncate(id, 31),
            None => {
                let label = format!("compat_monitor{}", self.monitor_index);
                if parse_compat(&mut self.chardev, &label, arg, loc)?.is_none() {
                    return Err(CmdlineError::new(format!("parse error: {arg}")));
                }
                label
            }
        };
        let i = self.mon.create(Some(&label), true, loc)?;
        self.mon.set(i, "mode", mode)?;
        self.mon.set(i, "chardev", &label)?;
        self.mon
            .set(i, "pretty", if pretty { "on" } else { "off" })?;
        self.monitor_index += 1;
        Ok(())
    }
}

/// Parses one option into a set of its own (a group used at once).
fn single(arg: &str, group: &str, implied: bool, loc: &str) -> Result<Opts, CmdlineError> {
    let mut list = OptsList::new(group_def(group));
    let i = list.parse(arg, implied, loc)?;
    Ok(list.sets.swap_remove(i))
}

fn invalid_value(v: &str) -> CmdlineError {
    CmdlineError::new(format!("invalid option value '{v}'"))
}

/// The first `max` characters of `s`.
fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Splits `DRIVER.PROP=VALUE` (driver and property at most 63
/// characters); `None` when the string is not of that form.
fn split_global(s: &str) -> Option<(&str, &str, &str)> {
    let (driver, n) = scan_until(s, 63, &['.', '='])?;
    let rest = s[n..].strip_prefix('.')?;
    let (property, m) = scan_until(rest, 63, &['='])?;
    let value = rest[m..].strip_prefix('=')?;
    Some((driver, property, value))
}

/// Parses a UUID: exactly 36 characters, hex digits with dashes at
/// positions 8, 13, 18 and 23.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let dash = |i: usize| matches!(i, 8 | 13 | 18 | 23);
    let well_formed = b.iter().enumerate().all(|(i, &c)| {
        if dash(i) {
            c == b'-'
        } else {
            c.is_ascii_hexdigit()
        }
    });
    if !well_formed {
        return None;
    }
    let hex: Vec<u8> = b.iter().copied().filter(|&c| c != b'-').collect();
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// Reads C-style `%d` integers and literal characters from `s` by
/// `pattern` (`d` = integer, anything else = that character); returns
/// the integers read before the first mismatch.
fn scan_ints(s: &str, pattern: &str) -> Vec<i32> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    for p in pattern.bytes() {
        if p != b'd' {
            if b.get(i) != Some(&p) {
                break;
            }
            i += 1;
            continue;
        }
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let start = i;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            break;
        }
        i += digits;
        let Ok(v) = s[start..i].parse::<i64>() else {
            break;
        };
        out.push(v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32);
    }
    out
}

/// `-rtc base=2006-06-17T16:01:21` or `base=2006-06-17`.
fn parse_rtc_date(s: &str) -> Result<RtcBase, CmdlineError> {
    let full = scan_ints(s, "d-d-dTd:d:d");
    let f = if full.len() == 6 {
        full
    } else {
        let short = scan_ints(s, "d-d-d");
        if short.len() != 3 {
            return Err(CmdlineError::new("invalid date format")
                .with_hint("valid formats: '2006-06-17T16:01:21' or '2006-06-17'"));
        }
        vec![short[0], short[1], short[2], 0, 0, 0]
    };
    Ok(RtcBase::Date {
        year: f[0],
        month: f[1],
        day: f[2],
        hour: f[3],
        minute: f[4],
        second: f[5],
    })
}
