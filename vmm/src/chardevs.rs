//! The command line's chardevs: `-chardev` options and the legacy
//! strings of `-serial` turned into QAPI `ChardevBackend`s as QEMU's
//! `qemu_chr_parse_*` functions do, then opened in `devices::chardev`.

use crate::cmdline::{ChardevSpec, Config, MonitorConfig, SerialTarget};
use devices::chardev::{Chardev, Registry};
use qmp::qapi::{
    ChardevBackend, ChardevCommon, ChardevFile, ChardevHostdev, ChardevMux, ChardevRingbuf,
    ChardevSocket, ChardevSpiceChannel, ChardevSpicePort, ChardevStdio, ChardevUdp, ChardevVC,
    InetSocketAddress, SocketAddressLegacy, UnixSocketAddress,
};

fn opt_bool(spec: &ChardevSpec, name: &str) -> Result<Option<bool>, String> {
    spec.get_bool(name).map_err(|e| e.to_string())
}

fn opt_num(spec: &ChardevSpec, name: &str) -> Result<Option<i64>, String> {
    Ok(spec
        .get_number(name)
        .map_err(|e| e.to_string())?
        .map(|v| v as i64))
}

fn common(spec: &ChardevSpec) -> Result<ChardevCommon, String> {
    Ok(ChardevCommon {
        logfile: spec.get("logfile").map(str::to_string),
        logappend: Some(opt_bool(spec, "logappend")?.unwrap_or(false)),
    })
}

/// `-chardev BACKEND,...` as QAPI, with QEMU's errors for missing
/// parameters.
pub fn backend_from_spec(spec: &ChardevSpec) -> Result<ChardevBackend, String> {
    let c = common(spec)?;
    let (logfile, logappend) = (c.logfile.clone(), c.logappend);
    let path = |what: &str| -> Result<String, String> {
        spec.get("path")
            .map(str::to_string)
            .ok_or_else(|| format!("chardev: {what}"))
    };
    let hostdev = |device: String| ChardevHostdev {
        logfile: logfile.clone(),
        logappend,
        device,
    };
    Ok(match spec.backend.as_str() {
        "file" => ChardevBackend::File(ChardevFile {
            logfile: logfile.clone(),
            logappend,
            r#in: None,
            out: path("file: no filename given")?,
            append: Some(opt_bool(spec, "append")?.unwrap_or(false)),
        }),
        "pipe" => ChardevBackend::Pipe(hostdev(path("pipe: no filename given")?)),
        "serial" | "tty" => {
            ChardevBackend::Serial(hostdev(path("serial/parallel: no device path given")?))
        }
        "parallel" | "parport" => {
            ChardevBackend::Parallel(hostdev(path("serial/parallel: no device path given")?))
        }
        "socket" => {
            let server = opt_bool(spec, "server")?.unwrap_or(false);
            let wait = server && opt_bool(spec, "wait")?.unwrap_or(true);
            let tls_creds = spec.get("tls-creds").map(str::to_string);
            let addr = match spec.get("path") {
                Some(p) => {
                    if tls_creds.is_some() {
                        return Err("TLS can only be used over TCP socket".into());
                    }
                    SocketAddressLegacy::Unix(UnixSocketAddress {
                        path: p.to_string(),
                    })
                }
                None => {
                    let host = spec.get("host").ok_or("chardev: socket: no host given")?;
                    let port = spec.get("port").ok_or("chardev: socket: no port given")?;
                    SocketAddressLegacy::Inet(InetSocketAddress {
                        host: host.to_string(),
                        port: port.to_string(),
                        numeric: None,
                        to: opt_num(spec, "to")?.map(|v| v as u16),
                        ipv4: opt_bool(spec, "ipv4")?,
                        ipv6: opt_bool(spec, "ipv6")?,
                    })
                }
            };
            ChardevBackend::Socket(ChardevSocket {
                logfile,
                logappend,
                addr,
                tls_creds,
                server: Some(server),
                wait: Some(wait),
                nodelay: Some(!opt_bool(spec, "delay")?.unwrap_or(true)),
                telnet: Some(opt_bool(spec, "telnet")?.unwrap_or(false)),
                tn3270: Some(opt_bool(spec, "tn3270")?.unwrap_or(false)),
                reconnect: Some(opt_num(spec, "reconnect")?.unwrap_or(0)),
            })
        }
        "udp" => {
            let host = spec
                .get("host")
                .filter(|h| !h.is_empty())
                .unwrap_or("localhost");
            let port = spec
                .get("port")
                .filter(|p| !p.is_empty())
                .ok_or("chardev: udp: remote port not specified")?;
            let localport = spec.get("localport").filter(|p| !p.is_empty());
            let localaddr = spec.get("localaddr").filter(|p| !p.is_empty());
            let inet = |host: &str, port: &str| {
                SocketAddressLegacy::Inet(InetSocketAddress {
                    host: host.to_string(),
                    port: port.to_string(),
                    numeric: None,
                    to: None,
                    ipv4: None,
                    ipv6: None,
                })
            };
            let local = (localport.is_some() || localaddr.is_some())
                .then(|| inet(localaddr.unwrap_or(""), localport.unwrap_or("0")));
            ChardevBackend::Udp(ChardevUdp {
                logfile,
                logappend,
                remote: inet(host, port),
                local,
            })
        }
        "ringbuf" | "memory" => {
            let size = spec
                .get_size("size")
                .map_err(|e| e.to_string())?
                .filter(|s| *s != 0)
                .map(|s| s as i64);
            let r = ChardevRingbuf {
                logfile,
                logappend,
                size,
            };
            if spec.backend == "memory" {
                ChardevBackend::Memory(r)
            } else {
                ChardevBackend::Ringbuf(r)
            }
        }
        "stdio" => ChardevBackend::Stdio(ChardevStdio {
            logfile,
            logappend,
            signal: Some(opt_bool(spec, "signal")?.unwrap_or(true)),
        }),
        "mux" => ChardevBackend::Mux(ChardevMux {
            logfile,
            logappend,
            chardev: spec
                .get("chardev")
                .ok_or("chardev: mux: no chardev given")?
                .to_string(),
        }),
        "vc" => ChardevBackend::Vc(ChardevVC {
            logfile,
            logappend,
            width: opt_num(spec, "width")?,
            height: opt_num(spec, "height")?,
            cols: opt_num(spec, "cols")?,
            rows: opt_num(spec, "rows")?,
        }),
        "spicevmc" => ChardevBackend::Spicevmc(ChardevSpiceChannel {
            logfile,
            logappend,
            r#type: spec.get("name").unwrap_or_default().to_string(),
        }),
        "spiceport" => ChardevBackend::Spiceport(ChardevSpicePort {
            logfile,
            logappend,
            fqdn: spec.get("name").unwrap_or_default().to_string(),
        }),
        "pty" => ChardevBackend::Pty(c),
        "null" => ChardevBackend::Null(c),
        "msmouse" => ChardevBackend::Msmouse(c),
        "wctablet" => ChardevBackend::Wctablet(c),
        "braille" => ChardevBackend::Braille(c),
        "testdev" => ChardevBackend::Testdev(c),
        "console" => ChardevBackend::Console(c),
        other => return Err(format!("'{other}' is not a valid char driver name")),
    })
}

/// What query-chardev shows for a chardev a QMP monitor serves itself.
fn monitor_filename(spec: &ChardevSpec) -> (&'static str, String) {
    match spec.backend.as_str() {
        "socket" => {
            let server = spec.get_bool("server").ok().flatten().unwrap_or(false);
            let suffix = if server { ",server" } else { "" };
            let name = match spec.get("path") {
                Some(p) => format!("unix:{p}{suffix}"),
                None => format!(
                    "tcp:{}:{}{suffix}",
                    spec.get("host").unwrap_or_default(),
                    spec.get("port").unwrap_or_default()
                ),
            };
            ("socket", name)
        }
        "stdio" => ("stdio", "stdio".into()),
        _ => ("null", spec.backend.clone()),
    }
}

fn mux_on(spec: &ChardevSpec) -> Result<bool, String> {
    Ok(opt_bool(spec, "mux")?.unwrap_or(false))
}

/// A `-chardev` string as the human monitor takes it: its spec, with
/// QEMU's texts for what is missing (`id` only where `need_id`).
fn spec_from_string(args: &str, need_id: bool) -> Result<ChardevSpec, String> {
    let opts = crate::cmdline::parse_chardev_string(args)
        .map_err(|e| format!("{}\nParsing chardev args failed", e.message))?;
    let id = match (opts.id.clone(), need_id) {
        (Some(id), _) => id,
        (None, true) => return Err("chardev: no id specified".into()),
        // QEMU prints the missing id with printf's "(null)".
        (None, false) => "(null)".to_string(),
    };
    let backend = match opts.get("backend") {
        Some("tty") => "serial",
        Some("parport") => "parallel",
        Some(b) => b,
        None => return Err(format!("chardev: \"{id}\" missing backend")),
    };
    Ok(ChardevSpec::from_opts(&opts, &id, backend))
}

/// HMP `chardev-add ARGS`: a chardev from a `-chardev` string (a mux
/// over it with `mux=on`), as QEMU's monitor adds one.
pub fn add_from_string(reg: &mut Registry, args: &str) -> Result<(), String> {
    let spec = spec_from_string(args, true)?;
    let backend = backend_from_spec(&spec)?;
    if mux_on(&spec)? {
        reg.add_muxed(&spec.id, &backend)?;
    } else {
        reg.add(&spec.id, &backend)?;
    }
    Ok(())
}

/// HMP `chardev-change ID ARGS`: the new backend from a `-chardev`
/// string, which must not name an id of its own.
pub fn backend_from_string(args: &str) -> Result<ChardevBackend, String> {
    let opts = crate::cmdline::parse_chardev_string(args)
        .map_err(|e| format!("{}\nParsing chardev args failed", e.message))?;
    if opts.id.is_some() {
        return Err("Unexpected 'id' parameter".into());
    }
    backend_from_spec(&spec_from_string(args, false)?)
}

/// Whether the main loop serves this monitor's transport itself (a
/// socket or stdio chardev without `mux=on` that no serial port uses);
/// otherwise the monitor is a frontend of a chardev in the registry.
pub fn served_by_main_loop(config: &Config, m: &MonitorConfig) -> bool {
    let Some(spec) = config.chardevs.iter().find(|c| c.id == m.chardev) else {
        return false;
    };
    let used_by_serial = config
        .serials
        .iter()
        .any(|s| matches!(&s.target, SerialTarget::Existing(id) if *id == spec.id));
    matches!(spec.backend.as_str(), "socket" | "stdio")
        && !mux_on(spec).unwrap_or(false)
        && !used_by_serial
}

/// Opens every chardev of the command line: `-chardev`s first (those
/// the main loop serves for a monitor are only listed; `mux=on` makes
/// `ID-base` and the mux `ID`), then one per `-serial`. Returns the
/// registry and each serial port's chardev, COM1 first.
pub fn open(config: &Config) -> Result<(Registry, Vec<Option<Chardev>>), String> {
    if config.serials.len() > 4 {
        return Err("too many serial ports".into());
    }
    let mut reg = Registry::new();
    for spec in &config.chardevs {
        let by_main_loop = config
            .monitors
            .iter()
            .any(|m| m.chardev == spec.id && served_by_main_loop(config, m));
        if by_main_loop {
            let (kind, filename) = monitor_filename(spec);
            reg.add_monitor(&spec.id, kind, &filename)
                .map_err(|e| format!("{}: {e}", spec.location))?;
            continue;
        }
        let fail = |e: String| format!("{}: {e}", spec.location);
        let backend = backend_from_spec(spec).map_err(fail)?;
        if mux_on(spec).map_err(fail)? {
            reg.add_muxed(&spec.id, &backend).map_err(fail)?;
        } else {
            reg.add(&spec.id, &backend).map_err(fail)?;
        }
    }
    let mut serials = Vec::new();
    for s in &config.serials {
        let chardev = match &s.target {
            SerialTarget::New(spec) => {
                let fail = |e: String| {
                    if s.location.is_empty() {
                        e
                    } else {
                        format!("{}: {e}", s.location)
                    }
                };
                // `mon:` (mux=on) shares the port with the human
                // monitor, which attaches to the mux before the port.
                let backend = backend_from_spec(spec).map_err(fail)?;
                if mux_on(spec).map_err(fail)? {
                    reg.add_muxed(&spec.id, &backend).map_err(fail)?
                } else {
                    reg.add(&spec.id, &backend).map_err(fail)?.0
                }
            }
            SerialTarget::Existing(id) => reg
                .find(id)
                .ok_or_else(|| format!("{}: chardev \"{id}\" not found", s.location))?,
        };
        serials.push(Some(chardev));
    }
    Ok((reg, serials))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(backend: &str, opts: &[(&str, &str)]) -> ChardevSpec {
        ChardevSpec {
            id: "c".into(),
            backend: backend.into(),
            opts: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            location: String::new(),
        }
    }

    #[test]
    fn parse_errors_are_qemus() {
        let e = |b, o| backend_from_spec(&spec(b, o)).err();
        assert_eq!(
            e("file", &[]).as_deref(),
            Some("chardev: file: no filename given")
        );
        assert_eq!(
            e("socket", &[]).as_deref(),
            Some("chardev: socket: no host given")
        );
        assert_eq!(
            e("socket", &[("host", "x")]).as_deref(),
            Some("chardev: socket: no port given")
        );
        assert_eq!(
            e("udp", &[]).as_deref(),
            Some("chardev: udp: remote port not specified")
        );
        assert_eq!(
            e("bogus", &[]).as_deref(),
            Some("'bogus' is not a valid char driver name")
        );
    }

    #[test]
    fn socket_defaults_follow_the_command_line() {
        let b = backend_from_spec(&spec("socket", &[("path", "/x"), ("server", "on")])).unwrap();
        let ChardevBackend::Socket(s) = b else {
            panic!("socket expected")
        };
        assert_eq!((s.server, s.wait), (Some(true), Some(true)));
        let b = backend_from_spec(&spec("socket", &[("path", "/x")])).unwrap();
        let ChardevBackend::Socket(s) = b else {
            panic!("socket expected")
        };
        assert_eq!((s.server, s.wait), (Some(false), Some(false)));
    }
}
