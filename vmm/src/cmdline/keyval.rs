//! QEMU's keyval syntax (used by `-blockdev`), or JSON when the
//! argument starts with `{`.
//!
//! keyval: `key=value,key=value`; `,,` in a value is a comma; a dotted
//! key `a.b.c=v` builds nested objects and numeric fragments
//! `a.0=x,a.1=y` build lists (no gaps, no mixing with names).  Every
//! scalar is a string; [`keyval_bool`] and friends convert a scalar the
//! way QEMU's keyval input visitor does once the expected type is known.

use serde_json::{Map, Value};

use super::numbers::{parse_f64, parse_i64, parse_size, parse_u64};
use super::CmdlineError;

/// The longest key fragment QEMU accepts is 127 bytes.
const MAX_FRAGMENT: usize = 127;

/// The parse tree before lists are formed: objects keep insertion order.
#[derive(Debug, Clone)]
enum Node {
    Str(String),
    Dict(Vec<(String, Node)>),
}

impl Node {
    fn dict_mut(&mut self) -> Option<&mut Vec<(String, Node)>> {
        match self {
            Node::Dict(d) => Some(d),
            Node::Str(_) => None,
        }
    }
}

/// Parses the argument of `-blockdev` (and options like it): JSON when
/// it starts with `{`, else keyval with `implied_key` for a leading
/// value without `=`.
pub fn parse_keyval_or_json(
    params: &str,
    implied_key: Option<&str>,
) -> Result<Value, CmdlineError> {
    if params.starts_with('{') {
        parse_json_object(params)
    } else {
        keyval_parse(params, implied_key)
    }
}

/// Parses keyval syntax into a JSON object whose leaves are strings.
pub fn keyval_parse(params: &str, implied_key: Option<&str>) -> Result<Value, CmdlineError> {
    let mut root = Node::Dict(Vec::new());
    let mut pos = 0;
    let mut implied = implied_key;
    while pos < params.len() {
        pos = parse_one(&mut root, params, pos, implied)?;
        implied = None;
    }
    listify(root, &mut Vec::new())
}

/// Converts a list index fragment: leading decimal digits, capped at
/// `i32::MAX`.  Returns the index and the number of digits.
fn key_to_index(s: &str) -> Option<(usize, usize)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let value = s[..digits]
        .parse::<u64>()
        .map_or(i32::MAX as usize, |v| v.min(i32::MAX as u64) as usize);
    Some((value, digits))
}

/// Length of the QAPI name at the start of `s` (`__RFQDN_` prefix
/// allowed), or 0 when there is none.
fn qapi_name_len(s: &str) -> usize {
    let b = s.as_bytes();
    let mut p = 0;
    if b.first() == Some(&b'_') {
        if b.get(1) != Some(&b'_') {
            return 0;
        }
        p = 2;
        while p < b.len() && (b[p].is_ascii_alphanumeric() || b[p] == b'-' || b[p] == b'.') {
            p += 1;
        }
        if b.get(p) != Some(&b'_') {
            return 0;
        }
        p += 1;
    }
    if !b.get(p).is_some_and(u8::is_ascii_alphabetic) {
        return 0;
    }
    p += 1;
    while p < b.len() && (b[p].is_ascii_alphanumeric() || b[p] == b'-' || b[p] == b'_') {
        p += 1;
    }
    p
}

/// Splits `key` into its fragments, checking each.
fn key_fragments(key: &str) -> Result<Vec<&str>, CmdlineError> {
    let mut frags = Vec::new();
    let mut s = 0;
    loop {
        let rest = &key[s..];
        let len = match key_to_index(rest) {
            Some((_, digits)) if s != 0 => digits,
            _ => qapi_name_len(rest),
        };
        if len == 0 || (s + len < key.len() && key.as_bytes()[s + len] != b'.') {
            return Err(CmdlineError::new(format!("Invalid parameter '{key}'")));
        }
        if len > MAX_FRAGMENT {
            let what = if s != 0 || len != key.len() {
                " fragment"
            } else {
                ""
            };
            return Err(CmdlineError::new(format!(
                "Parameter{what} '{}' is too long",
                &rest[..len]
            )));
        }
        frags.push(&rest[..len]);
        s += len;
        if s >= key.len() {
            return Ok(frags);
        }
        s += 1;
    }
}

/// Parses one `key=value` starting at `pos`; returns where the next
/// one starts.
fn parse_one(
    root: &mut Node,
    params: &str,
    pos: usize,
    implied: Option<&str>,
) -> Result<usize, CmdlineError> {
    let rest = &params[pos..];
    let len = rest.find(['=', ',']).unwrap_or(rest.len());
    let use_implied = implied.filter(|_| len > 0 && rest.as_bytes().get(len) != Some(&b'='));
    let key = use_implied.unwrap_or(&rest[..len]);
    let frags = key_fragments(key)?;
    let value_start = if use_implied.is_some() {
        pos
    } else {
        if rest.as_bytes().get(len) != Some(&b'=') {
            return Err(CmdlineError::new(format!(
                "Expected '=' after parameter '{key}'"
            )));
        }
        pos + len + 1
    };
    let (value, next) = read_value(params, value_start);
    put_leaf(root, key, &frags, value)?;
    Ok(next)
}

/// Reads a value (`,,` is a comma) from `p`; returns it and the index
/// after the terminating comma.
fn read_value(params: &str, mut p: usize) -> (String, usize) {
    let b = params.as_bytes();
    let mut out = Vec::new();
    while p < b.len() {
        if b[p] == b',' {
            p += 1;
            if b.get(p) != Some(&b',') {
                break;
            }
        }
        out.push(b[p]);
        p += 1;
    }
    (String::from_utf8_lossy(&out).into_owned(), p)
}

/// Stores `value` at the path `frags`, creating objects on the way.
fn put_leaf(root: &mut Node, key: &str, frags: &[&str], value: String) -> Result<(), CmdlineError> {
    let mut cur = root;
    let mut consumed = 0;
    for frag in &frags[..frags.len() - 1] {
        consumed += frag.len();
        let prefix = &key[..consumed];
        consumed += 1;
        let Some(dict) = cur.dict_mut() else {
            return Err(inconsistent(prefix));
        };
        let idx = match dict.iter().position(|(k, _)| k == frag) {
            Some(i) if matches!(dict[i].1, Node::Dict(_)) => i,
            Some(_) => return Err(inconsistent(prefix)),
            None => {
                dict.push((frag.to_string(), Node::Dict(Vec::new())));
                dict.len() - 1
            }
        };
        cur = &mut dict[idx].1;
    }
    let last = frags[frags.len() - 1];
    let Some(dict) = cur.dict_mut() else {
        return Err(inconsistent(key));
    };
    match dict.iter().position(|(k, _)| k == last) {
        Some(i) if matches!(dict[i].1, Node::Str(_)) => dict[i].1 = Node::Str(value),
        Some(_) => return Err(inconsistent(key)),
        None => dict.push((last.to_string(), Node::Str(value))),
    }
    Ok(())
}

fn inconsistent(prefix: &str) -> CmdlineError {
    CmdlineError::new(format!("Parameters '{prefix}.*' used inconsistently"))
}

/// The path to a node as QEMU prints it: each fragment followed by `.`.
fn reassemble(path: &[String]) -> String {
    path.iter().map(|p| format!("{p}.")).collect()
}

/// Turns objects whose keys are all list indexes into lists.
fn listify(node: Node, path: &mut Vec<String>) -> Result<Value, CmdlineError> {
    let entries = match node {
        Node::Str(s) => return Ok(Value::String(s)),
        Node::Dict(entries) => entries,
    };
    let mut has_index = false;
    let mut has_member = false;
    let mut converted = Vec::with_capacity(entries.len());
    for (key, child) in entries {
        let whole_index = key_to_index(&key).filter(|&(_, digits)| digits == key.len());
        if whole_index.is_some() {
            has_index = true;
        } else {
            has_member = true;
        }
        path.push(key.clone());
        let value = listify(child, path)?;
        path.pop();
        converted.push((key, whole_index.map(|(i, _)| i), value));
    }
    if has_index && has_member {
        return Err(CmdlineError::new(format!(
            "Parameters '{}*' used inconsistently",
            reassemble(path)
        )));
    }
    if !has_index {
        let map: Map<String, Value> = converted.into_iter().map(|(k, _, v)| (k, v)).collect();
        return Ok(Value::Object(map));
    }
    make_list(converted, path)
}

/// Builds a list from (key, index, value) triples, reporting the first
/// missing index.
fn make_list(
    items: Vec<(String, Option<usize>, Value)>,
    path: &[String],
) -> Result<Value, CmdlineError> {
    let nelt = items.len() + 1;
    let mut slots: Vec<Option<Value>> = vec![None; nelt];
    let mut max_index: Option<usize> = None;
    for (_, index, value) in items {
        let index = index.unwrap_or_default();
        max_index = Some(max_index.map_or(index, |m| m.max(index)));
        if index < nelt - 1 {
            slots[index] = Some(value);
        }
    }
    let count = max_index.map_or(0, |m| (m + 1).min(nelt));
    let mut list = Vec::with_capacity(count);
    for (i, slot) in slots.into_iter().take(count).enumerate() {
        match slot {
            Some(v) => list.push(v),
            None => {
                return Err(CmdlineError::new(format!(
                    "Parameter '{}{i}' missing",
                    reassemble(path)
                )))
            }
        }
    }
    Ok(Value::Array(list))
}

/// Parses QEMU-flavoured JSON (single-quoted strings allowed) that
/// must be an object.
pub fn parse_json_object(text: &str) -> Result<Value, CmdlineError> {
    let normal = normalize_quotes(text);
    match serde_json::from_str::<Value>(&normal) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(CmdlineError::new("JSON parse error, expecting an object")),
        Err(e) => Err(CmdlineError::new(format!(
            "JSON parse error, {}",
            json_problem(&e)
        ))),
    }
}

fn json_problem(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Eof => "unexpected end of input",
        _ => "invalid syntax",
    };
    format!("{what} at column {}", e.column())
}

/// Rewrites single-quoted strings (a QEMU JSON extension) as standard
/// double-quoted ones.
fn normalize_quotes(text: &str) -> String {
    #[derive(PartialEq)]
    enum State {
        Plain,
        Double,
        Single,
    }
    let mut out = String::with_capacity(text.len());
    let mut state = State::Plain;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (&state, c) {
            (State::Plain, '"') => {
                state = State::Double;
                out.push('"');
            }
            (State::Plain, '\'') => {
                state = State::Single;
                out.push('"');
            }
            (State::Double, '\\') => {
                out.push('\\');
                out.extend(chars.next());
            }
            (State::Double, '"') | (State::Single, '\'') => {
                state = State::Plain;
                out.push('"');
            }
            (State::Single, '\\') => match chars.next() {
                Some('\'') => out.push('\''),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            (State::Single, '"') => out.push_str("\\\""),
            (_, c) => out.push(c),
        }
    }
    out
}

/// Converts a keyval scalar to a boolean (`on`/`off`).  `name` is the
/// member's full name (`file.locking`) for the error.
pub fn keyval_bool(name: &str, s: &str) -> Result<bool, CmdlineError> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(CmdlineError::new(format!(
            "Parameter '{name}' expects 'on' or 'off'"
        ))),
    }
}

/// Converts a keyval scalar to a signed integer (base 0 like `strtoll`).
pub fn keyval_int(name: &str, s: &str) -> Result<i64, CmdlineError> {
    parse_i64(s).map_err(|_| expects(name, "integer"))
}

/// Converts a keyval scalar to an unsigned integer (negative values
/// wrap, as QEMU's `qemu_strtou64` allows).
pub fn keyval_uint(name: &str, s: &str) -> Result<u64, CmdlineError> {
    parse_u64(s).map_err(|_| expects(name, "integer"))
}

/// Converts a keyval scalar to a size in bytes (suffixes allowed).
pub fn keyval_size(name: &str, s: &str) -> Result<u64, CmdlineError> {
    parse_size(s).map_err(|_| expects(name, "size"))
}

/// Converts a keyval scalar to a finite floating-point number.
pub fn keyval_number(name: &str, s: &str) -> Result<f64, CmdlineError> {
    parse_f64(s).map_err(|_| {
        CmdlineError::new(format!(
            "Invalid parameter type for '{name}', expected: number"
        ))
    })
}

fn expects(name: &str, what: &str) -> CmdlineError {
    CmdlineError::new(format!("Parameter '{name}' expects {what}"))
}
