//! The QEMU 2.11-compatible command line.
//!
//! [`parse_args`] turns argv (without the program name) into an
//! [`Action`]: run a VM with a [`Config`], or print something and exit.
//! Syntax and error texts follow QEMU 2.11's `qemu-system-x86_64`;
//! [`command_line_options`] gives the QemuOpts groups as QEMU's
//! `query-command-line-options` reports them.
//!
//! Module map: `table` (option and group tables), `opts` (QemuOpts
//! syntax), `keyval` (`-blockdev` syntax and JSON), `numbers` (numbers
//! and sizes), `chardev` (chardevs, monitors, legacy chardev strings),
//! `machine` (machine properties, accelerator), `smbios`, `parse` (the
//! option loop), `finish` (checks after the loop), `config` (result).

// The binary does not consume most of the parsed configuration yet;
// until it does, the unused fields and helpers are expected.
#![allow(dead_code)]

mod chardev;
mod config;
mod finish;
mod keyval;
mod machine;
pub mod numbers;
mod opts;
mod parse;
mod smbios;
mod table;

#[cfg(test)]
mod tests;

use std::fmt;

use serde_json::{json, Value};

// Re-exported for the binary, which does not use all of them yet.
#[allow(unused_imports)]
pub use chardev::{
    parse_chardev_string, parse_group_string, ChardevSpec, MonitorConfig, MonitorMode,
    SerialConfig, SerialTarget,
};
#[allow(unused_imports)]
pub use config::{
    BlockdevSpec, BootConfig, Config, Defaults, DisplayKind, GivenOption, GlobalProperty,
    MachineConfig, MemoryConfig, NameConfig, OnOffAuto, OnOffSplit, RtcBase, RtcClock, RtcConfig,
    RtcDriftFix, SandboxConfig, SmpConfig, TraceConfig, WatchdogAction, DEFAULT_RAM_SIZE,
};
#[allow(unused_imports)]
pub use finish::LOG_ITEMS;
#[allow(unused_imports)]
pub use keyval::{
    keyval_bool, keyval_int, keyval_number, keyval_parse, keyval_size, keyval_uint,
    parse_keyval_or_json,
};
pub use numbers::strtol_prefix;
#[allow(unused_imports)]
pub use opts::{id_wellformed, is_help_option, Opts};
#[allow(unused_imports)]
pub use table::{ParamKind, OPTIONS};

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a VM.
    Run(Box<Config>),
    /// `-version`: print the version, exit 0.
    Version,
    /// `-h`/`-help`: print usage, exit 0.
    Help,
    /// `-machine help`: list machine types, exit 0.
    ListMachines,
    /// `-machine TYPE,help`: list the machine's properties, exit 0.
    MachineHelp { machine: String },
    /// `-cpu help`: list CPU models, exit 0.
    ListCpus,
    /// `-accel help` (or no accelerator named): QEMU prints
    /// "Possible accelerators: ..." and exits 0.
    ListAccels,
    /// `-device help`: list device types, exit 0.
    ListDevices,
    /// `-device DRIVER,help`: list the device's properties, exit 0.
    DeviceHelp { driver: String },
    /// `-chardev help`: list chardev backends, exit 0.
    ListChardevBackends,
    /// `-netdev help`: list netdev backends, exit 0.
    ListNetdevBackends,
    /// `-watchdog help`: list watchdog models, exit 0.
    ListWatchdogs,
    /// `-d` with `help` or an unknown item: print the log items
    /// ([`LOG_ITEMS`]) and exit 1, as QEMU 2.11 does.
    LogUsage,
}

/// A command-line error.  `Display` gives QEMU's text without the
/// program name: `LOCATION: MESSAGE` (location as typed, e.g.
/// `-m foo`), then any hint on following lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdlineError {
    /// The option words the error concerns, where QEMU names them.
    pub location: Option<String>,
    pub message: String,
    /// Further lines QEMU prints after the message.
    pub hint: Option<String>,
}

impl CmdlineError {
    pub fn new(message: impl Into<String>) -> Self {
        CmdlineError {
            location: None,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a hint line (or lines).
    pub fn with_hint(mut self, hint: &str) -> Self {
        self.hint = Some(hint.to_string());
        self
    }

    /// Sets the location unless one is set already.
    pub fn at(mut self, location: &str) -> Self {
        if self.location.is_none() && !location.is_empty() {
            self.location = Some(location.to_string());
        }
        self
    }
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{loc}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n{hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CmdlineError {}

/// Parses the command line (`args` without the program name).
pub fn parse_args(args: &[String]) -> Result<Action, CmdlineError> {
    let words = parse::scan(args)?;
    let mut parser = parse::Parser::new();
    for word in &words {
        if let Some(action) = parser.handle(word)? {
            return Ok(action);
        }
    }
    parser.finish()
}

/// One parameter of a QemuOpts group, for `query-command-line-options`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    pub name: String,
    pub kind: ParamKind,
    pub help: Option<String>,
    pub default: Option<String>,
}

/// One QemuOpts group, for `query-command-line-options`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionGroupInfo {
    /// The option name (`machine`, `smp-opts`, `chardev`, ...).
    pub option: String,
    /// Empty for groups that accept any parameter.
    pub parameters: Vec<ParamInfo>,
}

impl ParamInfo {
    /// As QMP's `CommandLineParameterInfo`.
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "name": self.name, "type": self.kind.as_str() });
        if let Some(h) = &self.help {
            v["help"] = json!(h);
        }
        if let Some(d) = &self.default {
            v["default"] = json!(d);
        }
        v
    }
}

impl OptionGroupInfo {
    /// As QMP's `CommandLineOptionInfo`.
    pub fn to_json(&self) -> Value {
        let params: Vec<Value> = self.parameters.iter().map(ParamInfo::to_json).collect();
        json!({ "option": self.option, "parameters": params })
    }
}

/// The QemuOpts groups this parser implements, in QEMU 2.11's order,
/// with their parameters as QEMU 2.11.0 reports them.
pub fn command_line_options() -> Vec<OptionGroupInfo> {
    table::GROUPS
        .iter()
        .map(|g| OptionGroupInfo {
            option: g.name.to_string(),
            parameters: g
                .params
                .iter()
                .map(|p| ParamInfo {
                    name: p.name.to_string(),
                    kind: p.kind,
                    help: p.help.map(str::to_string),
                    default: p.default.map(str::to_string),
                })
                .collect(),
        })
        .collect()
}
