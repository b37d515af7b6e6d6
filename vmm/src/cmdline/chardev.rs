//! Character devices and monitors: `-chardev`, `-mon`, and the legacy
//! one-string form of `-qmp`, `-monitor` and `-serial`.

use super::opts::{parse_bool, parse_number, parse_size_param, Opts, OptsList};
use super::CmdlineError;

/// One character device to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChardevSpec {
    /// Its id (`compat_monitor0`, `serial0`, or the `id=` given).
    pub id: String,
    /// The backend type as given (`socket`, `stdio`, `file`, ...).
    pub backend: String,
    /// The other parameters in order (not `id`, not `backend`); values
    /// were checked against their types (booleans are `on`/`off`).
    pub opts: Vec<(String, String)>,
    /// The command-line words it came from.
    pub location: String,
}

/// A chardev option string as the human monitor's chardev-add and
/// chardev-change take it (`-chardev`'s syntax, `backend` implied),
/// checked against the chardev group's parameters. Gives the options
/// with their `id`, if one was given.
pub fn parse_chardev_string(args: &str) -> Result<Opts, CmdlineError> {
    parse_group_string("chardev", args, true)
}

/// An option string of QemuOpts group `group` (`-drive`'s, `-chardev`'s)
/// as the monitor parses one, with the implied key where `implied`.
pub fn parse_group_string(group: &str, args: &str, implied: bool) -> Result<Opts, CmdlineError> {
    let mut list = OptsList::new(super::table::group_def(group));
    let i = list.parse(args, implied, "")?;
    Ok(list.sets.swap_remove(i))
}

impl ChardevSpec {
    /// Builds a spec from checked chardev options; the caller has made
    /// sure `id` and `backend` exist.
    pub(crate) fn from_opts(opts: &Opts, id: &str, backend: &str) -> Self {
        ChardevSpec {
            id: id.to_string(),
            backend: backend.to_string(),
            opts: opts
                .items
                .iter()
                .filter(|(k, _)| k != "backend")
                .cloned()
                .collect(),
            location: opts.location.clone(),
        }
    }

    /// The last value given for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.opts
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter (`server`, `wait`, `mux`, ...).
    pub fn get_bool(&self, name: &str) -> Result<Option<bool>, CmdlineError> {
        self.get(name).map(|v| parse_bool(name, v)).transpose()
    }

    /// A number parameter (`reconnect`, `to`, ...).
    pub fn get_number(&self, name: &str) -> Result<Option<u64>, CmdlineError> {
        self.get(name).map(|v| parse_number(name, v)).transpose()
    }

    /// A size parameter (`size` of a ringbuf).
    pub fn get_size(&self, name: &str) -> Result<Option<u64>, CmdlineError> {
        self.get(name)
            .map(|v| parse_size_param(name, v))
            .transpose()
    }
}

/// How a monitor talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonitorMode {
    /// The human monitor (HMP).
    Readline,
    /// QMP.
    Control,
}

/// One monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorConfig {
    /// The `-mon id=` (for `-qmp`/`-monitor` the chardev label).
    pub id: Option<String>,
    /// The chardev it runs on.
    pub chardev: String,
    pub mode: MonitorMode,
    /// QMP output pretty-printed.
    pub pretty: bool,
    pub location: String,
}

/// Where a serial port goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialTarget {
    /// A new chardev made from the legacy string (id `serialN`).
    New(ChardevSpec),
    /// `chardev:ID`: an existing chardev.
    Existing(String),
}

/// One `-serial` (not `none`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialConfig {
    /// The argument as given.
    pub arg: String,
    pub target: SerialTarget,
    pub location: String,
}

/// Scans up to `max` characters not in `stop` (at least one), like
/// `sscanf("%N[^...]")`.  Returns the text and the bytes consumed.
pub(crate) fn scan_until<'a>(s: &'a str, max: usize, stop: &[char]) -> Option<(&'a str, usize)> {
    let end = s
        .char_indices()
        .take(max)
        .find(|(_, c)| stop.contains(c))
        .map_or_else(
            || s.char_indices().nth(max).map_or(s.len(), |(i, _)| i),
            |(i, _)| i,
        );
    (end > 0).then(|| (&s[..end], end))
}

/// Parses `HOST:PORT` or `:PORT` (host empty) at the start of `s`, the
/// port ending at one of `port_stop`.  Returns host, port and the bytes
/// consumed.
fn host_port<'a>(s: &'a str, port_stop: &[char]) -> Option<(&'a str, &'a str, usize)> {
    if let Some((host, n)) = scan_until(s, 64, &[':']) {
        if s[n..].starts_with(':') {
            if let Some((port, m)) = scan_until(&s[n + 1..], 32, port_stop) {
                return Some((host, port, n + 1 + m));
            }
        }
    }
    let rest = s.strip_prefix(':')?;
    let (port, m) = scan_until(rest, 32, port_stop)?;
    Some(("", port, 1 + m))
}

/// Backends named by their whole string.
const SIMPLE_BACKENDS: &[&str] = &[
    "null", "pty", "msmouse", "wctablet", "braille", "testdev", "stdio",
];

/// Turns a legacy chardev string (`unix:/path,server,nowait`,
/// `tcp:host:port,...`, `stdio`, `mon:stdio`, `file:path`, ...) into a
/// new set in `list` with id `label`, as QEMU's
/// `qemu_chr_parse_compat` does.  `Ok(None)`: the string is not one of
/// the known forms (nothing was added).
pub fn parse_compat(
    list: &mut OptsList,
    label: &str,
    filename: &str,
    location: &str,
) -> Result<Option<usize>, CmdlineError> {
    let index = list.create(Some(label), true, location)?;
    match fill_compat(list, index, filename) {
        Ok(true) => Ok(Some(index)),
        Ok(false) => {
            list.sets.pop();
            Ok(None)
        }
        Err(e) => {
            list.sets.pop();
            Err(e)
        }
    }
}

/// Sets the parameters for `filename`; `Ok(false)` when unrecognised.
fn fill_compat(list: &mut OptsList, i: usize, filename: &str) -> Result<bool, CmdlineError> {
    let mut f = filename;
    if let Some(rest) = f.strip_prefix("mon:") {
        f = rest;
        list.set(i, "mux", "on")?;
        if f == "stdio" {
            list.set(i, "signal", "off")?;
        }
    }
    if SIMPLE_BACKENDS.contains(&f) {
        list.set(i, "backend", f)?;
        return Ok(true);
    }
    if let Some(rest) = f.strip_prefix("vc") {
        list.set(i, "backend", "vc")?;
        return vc_size(list, i, rest);
    }
    if f == "con:" {
        list.set(i, "backend", "console")?;
        return Ok(true);
    }
    if f.starts_with("COM") {
        return with_path(list, i, "serial", f);
    }
    if let Some(path) = f.strip_prefix("file:") {
        return with_path(list, i, "file", path);
    }
    if let Some(path) = f.strip_prefix("pipe:") {
        return with_path(list, i, "pipe", path);
    }
    for (prefix, flag) in [
        ("tcp:", None),
        ("telnet:", Some("telnet")),
        ("tn3270:", Some("tn3270")),
    ] {
        if let Some(rest) = f.strip_prefix(prefix) {
            return tcp_compat(list, i, rest, flag);
        }
    }
    if let Some(rest) = f.strip_prefix("udp:") {
        return udp_compat(list, i, rest);
    }
    if let Some(rest) = f.strip_prefix("unix:") {
        list.set(i, "backend", "socket")?;
        list.do_parse(i, rest, Some("path"))?;
        return Ok(true);
    }
    if f.starts_with("/dev/parport") || f.starts_with("/dev/ppi") {
        return with_path(list, i, "parallel", f);
    }
    if f.starts_with("/dev/") {
        return with_path(list, i, "serial", f);
    }
    Ok(false)
}

fn with_path(
    list: &mut OptsList,
    i: usize,
    backend: &str,
    path: &str,
) -> Result<bool, CmdlineError> {
    list.set(i, "backend", backend)?;
    list.set(i, "path", path)?;
    Ok(true)
}

/// `vc`, `vc:WxH` (pixels) or `vc:WCxHC` (characters).
fn vc_size(list: &mut OptsList, i: usize, rest: &str) -> Result<bool, CmdlineError> {
    let Some(spec) = rest.strip_prefix(':') else {
        return Ok(true);
    };
    let digits = |s: &str| {
        let n = s.bytes().take(7).take_while(u8::is_ascii_digit).count();
        (n > 0).then_some(n)
    };
    let Some(w) = digits(spec) else {
        return Ok(false);
    };
    let (width, after) = spec.split_at(w);
    let (chars, tail) = match after.strip_prefix("Cx") {
        Some(t) => (true, t),
        None => match after.strip_prefix('x') {
            Some(t) => (false, t),
            None => return Ok(false),
        },
    };
    let Some(h) = digits(tail) else {
        return Ok(false);
    };
    let height = &tail[..h];
    if chars {
        list.set(i, "cols", width)?;
        list.set(i, "rows", height)?;
    } else {
        list.set(i, "width", width)?;
        list.set(i, "height", height)?;
    }
    Ok(true)
}

/// `tcp:[HOST]:PORT[,opts]`, also for telnet and tn3270.
fn tcp_compat(
    list: &mut OptsList,
    i: usize,
    rest: &str,
    flag: Option<&str>,
) -> Result<bool, CmdlineError> {
    let Some((host, port, n)) = host_port(rest, &[',']) else {
        return Ok(false);
    };
    list.set(i, "backend", "socket")?;
    list.set(i, "host", host)?;
    list.set(i, "port", port)?;
    if let Some(opts) = rest[n..].strip_prefix(',') {
        list.do_parse(i, opts, None)?;
    }
    if let Some(flag) = flag {
        list.set(i, flag, "on")?;
    }
    Ok(true)
}

/// `udp:[HOST]:PORT[@[LOCALADDR]:LOCALPORT]`.
fn udp_compat(list: &mut OptsList, i: usize, rest: &str) -> Result<bool, CmdlineError> {
    list.set(i, "backend", "udp")?;
    let Some((host, port, n)) = host_port(rest, &['@', ',']) else {
        return Ok(false);
    };
    list.set(i, "host", host)?;
    list.set(i, "port", port)?;
    if let Some(local) = rest[n..].strip_prefix('@') {
        let Some((addr, lport, _)) = host_port(local, &[',']) else {
            return Ok(false);
        };
        list.set(i, "localaddr", addr)?;
        list.set(i, "localport", lport)?;
    }
    Ok(true)
}
