//! QemuOpts: the `key=value,key=value` syntax of most options.
//!
//! Rules (as QEMU 2.11 parses them):
//! - elements are separated by `,`; a doubled `,,` in a value stands
//!   for one comma;
//! - where the option has an implied key, a first element without `=`
//!   is the value of that key (`-m 512` is `size=512`);
//! - any other element without `=` is a flag: `name` means `name=on`
//!   and `noname` means `name=off` (`server,nowait`);
//! - `id=` names the set and is kept apart from the other parameters;
//! - in a group with a fixed parameter list, an unknown name is an
//!   error, and booleans, numbers and sizes are checked as they are set.

use super::numbers::{parse_size, parse_u64, NumError};
use super::table::{GroupDef, ParamKind};
use super::CmdlineError;

/// One set of options: what one `-chardev ...` (or several merged
/// `-machine ...`) produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Opts {
    /// The `id=` value, if any.
    pub id: Option<String>,
    /// Parameters in the order given (the `id` excluded); a later
    /// entry with the same name overrides an earlier one.
    pub items: Vec<(String, String)>,
    /// The command-line words this set came from (`-chardev ...`), for
    /// error messages reported later.
    pub location: String,
}

impl Opts {
    /// The value of the last `name=` given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.items
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `name` was given.
    pub fn has(&self, name: &str) -> bool {
        self.items.iter().any(|(k, _)| k == name)
    }

    /// A boolean parameter (`on`/`off`).
    pub fn get_bool(&self, name: &str) -> Result<Option<bool>, CmdlineError> {
        self.get(name).map(|v| parse_bool(name, v)).transpose()
    }

    /// A number parameter.
    pub fn get_number(&self, name: &str) -> Result<Option<u64>, CmdlineError> {
        self.get(name).map(|v| parse_number(name, v)).transpose()
    }

    /// A size parameter, in bytes.
    pub fn get_size(&self, name: &str) -> Result<Option<u64>, CmdlineError> {
        self.get(name)
            .map(|v| parse_size_param(name, v))
            .transpose()
    }

    /// Whether a parameter named `help` or `?` was given.
    pub fn has_help(&self) -> bool {
        self.items.iter().any(|(k, _)| is_help_option(k))
    }
}

/// `help` and `?` ask for a list instead of a value.
pub fn is_help_option(s: &str) -> bool {
    s == "help" || s == "?"
}

/// Parses a QemuOpts boolean: only `on` and `off`.
pub fn parse_bool(name: &str, value: &str) -> Result<bool, CmdlineError> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(CmdlineError::new(format!(
            "Parameter '{name}' expects 'on' or 'off'"
        ))),
    }
}

/// Parses a QemuOpts number.
pub fn parse_number(name: &str, value: &str) -> Result<u64, CmdlineError> {
    parse_u64(value).map_err(|e| match e {
        NumError::Range => CmdlineError::new(format!(
            "Value '{value}' is too large for parameter '{name}'"
        )),
        NumError::Invalid => CmdlineError::new(format!("Parameter '{name}' expects a number")),
    })
}

/// Parses a QemuOpts size.
pub fn parse_size_param(name: &str, value: &str) -> Result<u64, CmdlineError> {
    parse_size(value).map_err(|e| match e {
        NumError::Range => CmdlineError::new(format!(
            "Value '{value}' is out of range for parameter '{name}'"
        )),
        NumError::Invalid => CmdlineError::new(format!(
            "Parameter '{name}' expects a non-negative number below 2^64"
        ))
        .with_hint(SIZE_HINT),
    })
}

/// The hint after a bad size.
pub const SIZE_HINT: &str =
    "A size may end in k, M, G, T, P or E for KiB, MiB, GiB, TiB, PiB or EiB.";

/// Whether `id` is a well-formed identifier: a letter, then letters,
/// digits, `-`, `.` and `_`.
pub fn id_wellformed(id: &str) -> bool {
    let mut chars = id.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// Reads a value from `p`, turning `,,` into `,`; stops at a single
/// comma.  Returns the value and the index of the stopping comma (or
/// the end).
fn get_opt_value(s: &str, mut p: usize) -> (String, usize) {
    let b = s.as_bytes();
    let mut out = Vec::new();
    while p < b.len() {
        if b[p] == b',' {
            if b.get(p + 1) != Some(&b',') {
                break;
            }
            p += 1;
        }
        out.push(b[p]);
        p += 1;
    }
    (String::from_utf8_lossy(&out).into_owned(), p)
}

/// Reads a name from `p` up to `delim` or the end.
fn get_opt_name(s: &str, p: usize, delim: u8) -> (String, usize) {
    let b = s.as_bytes();
    let end = b[p..]
        .iter()
        .position(|&c| c == delim)
        .map_or(b.len(), |i| p + i);
    (s[p..end].to_string(), end)
}

/// Splits `params` into (name, value) pairs by QemuOpts rules, leaving
/// out `id`.  `implied` is the key of a leading value without `=`.
pub fn tokenize(params: &str, implied: Option<&str>) -> Vec<(String, String)> {
    let b = params.as_bytes();
    let mut items = Vec::new();
    let mut p = 0;
    while p < b.len() {
        let pe = b[p..].iter().position(|&c| c == b'=');
        let pc = b[p..].iter().position(|&c| c == b',');
        let is_flag = match (pe, pc) {
            (None, _) => true,
            (Some(e), Some(c)) => c < e,
            (Some(_), None) => false,
        };
        let (name, value, next) = if is_flag {
            match implied {
                Some(key) if p == 0 => {
                    let (v, n) = get_opt_value(params, p);
                    (key.to_string(), v, n)
                }
                _ => flag_item(params, p),
            }
        } else {
            let (name, eq) = get_opt_name(params, p, b'=');
            let (v, n) = get_opt_value(params, eq + 1);
            (name, v, n)
        };
        if name != "id" {
            items.push((name, value));
        }
        if b.get(next) != Some(&b',') {
            break;
        }
        p = next + 1;
    }
    items
}

/// A bare `name` (on) or `noname` (off).
fn flag_item(params: &str, p: usize) -> (String, String, usize) {
    let (name, next) = get_opt_name(params, p, b',');
    match name.strip_prefix("no") {
        Some(rest) => (rest.to_string(), "off".to_string(), next),
        None => (name, "on".to_string(), next),
    }
}

/// Finds the `id=` of a parameter string the way QEMU does: at the
/// start, or after the first `,id=` anywhere.
pub fn find_id(params: &str) -> Option<String> {
    if let Some(rest) = params.strip_prefix("id=") {
        return Some(get_opt_value(rest, 0).0);
    }
    params
        .find(",id=")
        .map(|pos| get_opt_value(&params[pos + 4..], 0).0)
}

/// Checks one parameter against the group and its value against the
/// parameter's type.
pub fn validate_item(group: &GroupDef, name: &str, value: &str) -> Result<(), CmdlineError> {
    if group.accepts_any {
        return Ok(());
    }
    let Some(def) = group.param(name) else {
        return Err(CmdlineError::new(format!("Invalid parameter '{name}'")));
    };
    match def.kind {
        ParamKind::Str => Ok(()),
        ParamKind::Bool => parse_bool(name, value).map(|_| ()),
        ParamKind::Num => parse_number(name, value).map(|_| ()),
        ParamKind::Size => parse_size_param(name, value).map(|_| ()),
    }
}

/// All the sets of one group given on the command line.
#[derive(Debug, Clone)]
pub struct OptsList {
    pub group: &'static GroupDef,
    pub sets: Vec<Opts>,
}

impl OptsList {
    pub fn new(group: &'static GroupDef) -> Self {
        OptsList {
            group,
            sets: Vec::new(),
        }
    }

    /// Finds the set with this id (`None`: the set without id).
    pub fn find(&self, id: Option<&str>) -> Option<usize> {
        self.sets.iter().position(|o| o.id.as_deref() == id)
    }

    /// Creates a set (or, for merging groups, returns the existing
    /// one).  With `fail_if_exists`, a second set with the same id is
    /// an error.
    pub fn create(
        &mut self,
        id: Option<&str>,
        fail_if_exists: bool,
        location: &str,
    ) -> Result<usize, CmdlineError> {
        if let Some(id) = id {
            if !id_wellformed(id) {
                return Err(CmdlineError::new("Parameter 'id' expects an identifier")
                    .with_hint("An identifier starts with a letter and has only letters, digits, '-', '.' and '_'."));
            }
        }
        if id.is_some() || self.group.merge {
            if let Some(i) = self.find(id) {
                if fail_if_exists && !self.group.merge {
                    return Err(CmdlineError::new(format!(
                        "Duplicate ID '{}' for {}",
                        id.unwrap_or_default(),
                        self.group.name
                    )));
                }
                return Ok(i);
            }
        }
        self.sets.push(Opts {
            id: id.map(str::to_string),
            items: Vec::new(),
            location: location.to_string(),
        });
        Ok(self.sets.len() - 1)
    }

    /// Adds parameters parsed from `params` to set `index`.
    pub fn do_parse(
        &mut self,
        index: usize,
        params: &str,
        implied: Option<&str>,
    ) -> Result<(), CmdlineError> {
        for (name, value) in tokenize(params, implied) {
            self.set(index, &name, &value)?;
        }
        Ok(())
    }

    /// Sets one parameter, checking it.
    pub fn set(&mut self, index: usize, name: &str, value: &str) -> Result<(), CmdlineError> {
        validate_item(self.group, name, value)?;
        self.sets[index]
            .items
            .push((name.to_string(), value.to_string()));
        Ok(())
    }

    /// Parses one option argument into a (new or merged) set, as
    /// QEMU's `qemu_opts_parse` does.  Returns the set's index.
    pub fn parse(
        &mut self,
        params: &str,
        permit_implied: bool,
        location: &str,
    ) -> Result<usize, CmdlineError> {
        let id = find_id(params);
        let index = self.create(id.as_deref(), true, location)?;
        let implied = if permit_implied {
            self.group.implied
        } else {
            None
        };
        let before = self.sets[index].items.len();
        if let Err(e) = self.do_parse(index, params, implied) {
            self.sets[index].items.truncate(before);
            return Err(e);
        }
        Ok(index)
    }
}
