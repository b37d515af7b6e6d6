//! Decoding JSON values into the generated types, with QEMU's input-visitor
//! rules: members are looked up by name, optional members may be absent,
//! leftover members are refused, and each error names the member by its
//! full path (`a.b[2].c`) in QEMU's words. Encoding is the plain
//! [`ToQObject`] conversion.

use crate::error::Error;
use serde_json::{Map, Number, Value};
use std::collections::HashSet;

/// The JSON type of a value, as an alternate sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QType {
    Null,
    Number,
    String,
    Dict,
    List,
    Bool,
    /// Never matches: stands for branch types that cannot occur.
    Any,
}

impl QType {
    fn of(v: &Value) -> QType {
        match v {
            Value::Null => QType::Null,
            Value::Bool(_) => QType::Bool,
            Value::Number(_) => QType::Number,
            Value::String(_) => QType::String,
            Value::Array(_) => QType::List,
            Value::Object(_) => QType::Dict,
        }
    }
}

enum Frame<'a> {
    Dict {
        /// Name of this object in its parent.
        name: Option<String>,
        map: &'a Map<String, Value>,
        unvisited: HashSet<&'a str>,
    },
    List {
        name: Option<String>,
        items: &'a [Value],
        /// Elements consumed so far.
        next: usize,
    },
}

/// Walks one JSON value while generated code decodes it.
pub struct InputVisitor<'a> {
    root: Option<&'a Value>,
    stack: Vec<Frame<'a>>,
    /// Scalars are strings to be parsed, as in QEMU's keyval visitor
    /// (command-line `-blockdev a=b,c.d=e`).
    keyval: bool,
}

pub trait Visit: Sized {
    fn visit(v: &mut InputVisitor<'_>, name: Option<&str>) -> Result<Self, Error>;
}

pub trait ToQObject {
    fn to_qobject(&self) -> Value;
}

fn type_error(what: &str, expected: &str) -> Error {
    Error::generic(format!(
        "Invalid parameter type for '{what}', expected: {expected}"
    ))
}

fn value_error(what: &str, expected: &str) -> Error {
    Error::generic(format!("Parameter '{what}' expects {expected}"))
}

impl<'a> InputVisitor<'a> {
    pub fn new(root: &'a Value) -> InputVisitor<'a> {
        InputVisitor {
            root: Some(root),
            stack: Vec::new(),
            keyval: false,
        }
    }

    /// A visitor for values produced by keyval parsing: every scalar is a
    /// string, converted to the member's type as it is read.
    pub fn new_keyval(root: &'a Value) -> InputVisitor<'a> {
        InputVisitor {
            root: Some(root),
            stack: Vec::new(),
            keyval: true,
        }
    }

    /// A visitor positioned inside `map`, as QEMU's command marshallers
    /// are after starting the argument struct.
    fn in_object(map: &'a Map<String, Value>) -> InputVisitor<'a> {
        let mut v = InputVisitor {
            root: None,
            stack: Vec::new(),
            keyval: false,
        };
        v.push_dict(None, map);
        v
    }

    fn push_dict(&mut self, name: Option<&str>, map: &'a Map<String, Value>) {
        self.stack.push(Frame::Dict {
            name: name.map(str::to_string),
            map,
            unvisited: map.keys().map(String::as_str).collect(),
        });
    }

    /// The full name of member `name` of the innermost container.
    pub fn full_name(&self, name: Option<&str>) -> String {
        let mut out = String::new();
        let mut name = name;
        for frame in self.stack.iter().rev() {
            match frame {
                Frame::Dict { name: own, .. } => {
                    out.insert_str(0, name.unwrap_or("<anonymous>"));
                    out.insert(0, '.');
                    name = own.as_deref();
                }
                Frame::List {
                    name: own, next, ..
                } => {
                    let idx = if self.keyval {
                        format!(".{}", next.wrapping_sub(1))
                    } else {
                        format!("[{}]", next.wrapping_sub(1))
                    };
                    out.insert_str(0, &idx);
                    name = own.as_deref();
                }
            }
        }
        match name {
            Some(n) => {
                out.insert_str(0, n);
                out
            }
            None if out.starts_with('.') => out[1..].to_string(),
            None if out.is_empty() => "<anonymous>".to_string(),
            None => out,
        }
    }

    fn try_get(&mut self, name: Option<&str>, consume: bool) -> Option<&'a Value> {
        match self.stack.last_mut() {
            None => self.root,
            Some(Frame::Dict { map, unvisited, .. }) => {
                let key = name?;
                let v = map.get(key);
                if consume && v.is_some() {
                    unvisited.remove(key);
                }
                v
            }
            Some(Frame::List { items, next, .. }) => {
                let v = items.get(*next);
                if consume {
                    *next += 1;
                }
                v
            }
        }
    }

    fn get(&mut self, name: Option<&str>, consume: bool) -> Result<&'a Value, Error> {
        match self.try_get(name, consume) {
            Some(v) => Ok(v),
            None => Err(Error::generic(format!(
                "Parameter '{}' is missing",
                self.full_name(name)
            ))),
        }
    }

    /// Whether an optional member is present.
    pub fn present(&mut self, name: &str) -> bool {
        self.try_get(Some(name), false).is_some()
    }

    pub fn member<T: Visit>(&mut self, name: &str) -> Result<T, Error> {
        T::visit(self, Some(name))
    }

    pub fn optional_member<T: Visit>(&mut self, name: &str) -> Result<Option<T>, Error> {
        if self.present(name) {
            T::visit(self, Some(name)).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Decodes an object: enters it, lets `members` read what it wants,
    /// then refuses whatever was left unread.
    pub fn visit_struct<T>(
        &mut self,
        name: Option<&str>,
        members: impl FnOnce(&mut Self) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let value = self.get(name, true)?;
        let Value::Object(map) = value else {
            return Err(type_error(&self.full_name(name), "object"));
        };
        self.push_dict(name, map);
        let result = members(self).and_then(|r| self.check_struct().map(|()| r));
        self.stack.pop();
        result
    }

    fn check_struct(&self) -> Result<(), Error> {
        if let Some(Frame::Dict { map, unvisited, .. }) = self.stack.last() {
            // Report the first leftover in the order the client sent them.
            if let Some(key) = map.keys().find(|k| unvisited.contains(k.as_str())) {
                return Err(Error::generic(format!(
                    "Parameter '{}' is unexpected",
                    self.full_name(Some(key))
                )));
            }
        }
        Ok(())
    }

    fn visit_list<T: Visit>(&mut self, name: Option<&str>) -> Result<Vec<T>, Error> {
        let value = self.get(name, true)?;
        let Value::Array(items) = value else {
            return Err(type_error(&self.full_name(name), "array"));
        };
        self.stack.push(Frame::List {
            name: name.map(str::to_string),
            items,
            next: 0,
        });
        let mut out = Vec::with_capacity(items.len());
        let mut result = Ok(());
        for _ in 0..items.len() {
            match T::visit(self, None) {
                Ok(v) => out.push(v),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.stack.pop();
        result.map(|()| out)
    }

    /// The type of the next value, without consuming it (for alternates).
    pub fn peek_type(&mut self, name: Option<&str>) -> Result<QType, Error> {
        let v = self.get(name, false)?;
        if self.keyval {
            // Keyval scalars are all strings; objects and lists keep their type.
            return Ok(match v {
                Value::String(_) => QType::String,
                other => QType::of(other),
            });
        }
        Ok(QType::of(v))
    }

    pub fn alternate_type_error(&self, name: Option<&str>, alternate: &str) -> Error {
        type_error(name.unwrap_or("null"), alternate)
    }

    fn keyval_str(&mut self, name: Option<&str>) -> Result<&'a str, Error> {
        let v = self.get(name, true)?;
        match v {
            Value::String(s) => Ok(s),
            Value::Object(_) | Value::Array(_) => Err(Error::generic(format!(
                "Parameters '{}.*' are unexpected",
                self.full_name(name)
            ))),
            _ => Err(Error::generic(format!(
                "Internal error: parameter {} invalid",
                self.full_name(name)
            ))),
        }
    }

    pub fn type_str(&mut self, name: Option<&str>) -> Result<String, Error> {
        if self.keyval {
            return self.keyval_str(name).map(str::to_string);
        }
        match self.get(name, true)? {
            Value::String(s) => Ok(s.clone()),
            _ => Err(type_error(&self.full_name(name), "string")),
        }
    }

    pub fn type_int64(&mut self, name: Option<&str>) -> Result<i64, Error> {
        if self.keyval {
            let s = self.keyval_str(name)?;
            return parse_c_int(s)
                .and_then(|v| i64::try_from(v).ok())
                .ok_or_else(|| value_error(&self.full_name(name), "integer"));
        }
        match self.get(name, true)? {
            Value::Number(n) if n.as_i64().is_some() => Ok(n.as_i64().unwrap_or_default()),
            _ => Err(type_error(&self.full_name(name), "integer")),
        }
    }

    pub fn type_uint64(&mut self, name: Option<&str>) -> Result<u64, Error> {
        if self.keyval {
            let s = self.keyval_str(name)?;
            return parse_c_uint(s).ok_or_else(|| value_error(&self.full_name(name), "integer"));
        }
        match self.get(name, true)? {
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    Ok(u)
                } else if let Some(i) = n.as_i64() {
                    // Negative values are accepted and wrap, as QEMU does.
                    Ok(i as u64)
                } else {
                    Err(value_error(&self.full_name(name), "uint64"))
                }
            }
            _ => Err(value_error(&self.full_name(name), "uint64")),
        }
    }

    pub fn type_size(&mut self, name: Option<&str>) -> Result<u64, Error> {
        if self.keyval {
            let s = self.keyval_str(name)?;
            return parse_size(s).ok_or_else(|| value_error(&self.full_name(name), "size"));
        }
        self.type_uint64(name)
    }

    pub fn type_bool(&mut self, name: Option<&str>) -> Result<bool, Error> {
        if self.keyval {
            return match self.keyval_str(name)? {
                "on" => Ok(true),
                "off" => Ok(false),
                _ => Err(value_error(&self.full_name(name), "'on' or 'off'")),
            };
        }
        match self.get(name, true)? {
            Value::Bool(b) => Ok(*b),
            _ => Err(type_error(&self.full_name(name), "boolean")),
        }
    }

    pub fn type_number(&mut self, name: Option<&str>) -> Result<f64, Error> {
        if self.keyval {
            let s = self.keyval_str(name)?;
            return s
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| type_error(&self.full_name(name), "number"));
        }
        match self.get(name, true)? {
            Value::Number(n) => Ok(n.as_f64().unwrap_or_default()),
            _ => Err(type_error(&self.full_name(name), "number")),
        }
    }

    pub fn type_any(&mut self, name: Option<&str>) -> Result<Value, Error> {
        self.get(name, true).cloned()
    }

    pub fn type_null(&mut self, name: Option<&str>) -> Result<(), Error> {
        match self.get(name, true)? {
            Value::Null => Ok(()),
            _ => Err(type_error(&self.full_name(name), "null")),
        }
    }

    pub fn type_enum<T>(
        &mut self,
        name: Option<&str>,
        lookup: impl Fn(&str) -> Option<T>,
    ) -> Result<T, Error> {
        let s = self.type_str(name)?;
        lookup(&s).ok_or_else(|| Error::generic(format!("Invalid parameter '{s}'")))
    }
}

/// An integer as C's strtoll/strtoull with base 0 reads it: decimal, 0x hex
/// or leading-0 octal, with an optional sign.
fn parse_c_int(s: &str) -> Option<i128> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i128::from_str_radix(hex, 16).ok()?
    } else if body.len() > 1 && body.starts_with('0') {
        i128::from_str_radix(&body[1..], 8).ok()?
    } else {
        if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        body.parse::<i128>().ok()?
    };
    Some(if neg { -v } else { v })
}

fn parse_c_uint(s: &str) -> Option<u64> {
    let v = parse_c_int(s)?;
    if v < 0 {
        // strtoull accepts a minus sign and negates modulo 2^64.
        u64::try_from(-v).ok().map(|u| u.wrapping_neg())
    } else {
        u64::try_from(v).ok()
    }
}

/// A size with an optional binary suffix (k, M, G, T, P, E; B for bytes),
/// as QEMU's qemu_strtosz reads it.
pub fn parse_size(s: &str) -> Option<u64> {
    let split = s
        .find(|c: char| {
            !(c.is_ascii_digit()
                || c == '.'
                || c == 'x'
                || c == 'X'
                || c.is_ascii_hexdigit() && s.starts_with("0x"))
        })
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let mult: u64 = match suffix {
        "" | "B" | "b" => 1,
        "k" | "K" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        "T" | "t" => 1 << 40,
        "P" | "p" => 1 << 50,
        "E" | "e" => 1 << 60,
        _ => return None,
    };
    if num.contains('.') {
        let f: f64 = num.parse().ok()?;
        let total = f * mult as f64;
        if !(0.0..18446744073709550000.0).contains(&total) {
            return None;
        }
        return Some(total as u64);
    }
    let n = parse_c_uint(num)?;
    n.checked_mul(mult)
}

impl Visit for String {
    fn visit(v: &mut InputVisitor<'_>, name: Option<&str>) -> Result<Self, Error> {
        v.type_str(name)
    }
}

impl Visit for i64 {
    fn visit(v: &mut InputVisitor<'_>, name: Option<&str>) -> Result<Self, Error> {
        v.type_int64(name)
    }
}

impl Visit for u64 {
    fn visit(v: &mut InputVisitor<'_>, name: Option<&str>) -> Result<Self, Error> {
        v.type_uint64(name)
    }
}

macro_rules! sized_int {
    ($t:ty, $wide:ident, $qapi:literal) => {
        impl Visit for $t {
            fn visit(v: &mut InputVisitor<'_>, name: Option<&str>) -> Result<Self, Error> {
                let wide = v.$wide(name)?;
                // QEMU names only the member here, not its full path.
                <$t>::try_from(wide).map_err(|_| value_error(name.unwrap_or("null"), $qapi))
            }
        }
    };
}
sized_int!(i8, type_int64, "int8");
sized_int!(i16, type_int64, "int16");
sized_int!(i32, type_int64, "int32");
sized_int!(u8, type_uint64, "uint8");
sized_int!(u16, type_uint64, "uint16");
sized_int!(u32, type_uint64, "uint32");

impl Visit for bool {
    fn visit(v: &mut InputVisitor<'_>, name: Option<&str>) -> Result<Self, Error> {
        v.type_bool(name)
    }
}

impl Visit for f64 {
    fn visit(v: &mut InputVisitor<'_>, name: Option<&str>) -> Result<Self, Error> {
        v.type_number(name)
    }
}

impl Visit for Value {
    fn visit(v: &mut InputVisitor<'_>, name: Option<&str>) -> Result<Self, Error> {
        v.type_any(name)
    }
}

impl Visit for () {
    fn visit(v: &mut InputVisitor<'_>, name: Option<&str>) -> Result<Self, Error> {
        v.type_null(name)
    }
}

impl<T: Visit> Visit for Vec<T> {
    fn visit(v: &mut InputVisitor<'_>, name: Option<&str>) -> Result<Self, Error> {
        v.visit_list(name)
    }
}

impl<T: Visit> Visit for Box<T> {
    fn visit(v: &mut InputVisitor<'_>, name: Option<&str>) -> Result<Self, Error> {
        T::visit(v, name).map(Box::new)
    }
}

impl ToQObject for String {
    fn to_qobject(&self) -> Value {
        Value::String(self.clone())
    }
}

macro_rules! int_to_qobject {
    ($($t:ty),*) => {$(
        impl ToQObject for $t {
            fn to_qobject(&self) -> Value {
                Value::Number(Number::from(*self))
            }
        }
    )*};
}
int_to_qobject!(i8, i16, i32, i64, u8, u16, u32, u64);

impl ToQObject for bool {
    fn to_qobject(&self) -> Value {
        Value::Bool(*self)
    }
}

impl ToQObject for f64 {
    fn to_qobject(&self) -> Value {
        Number::from_f64(*self)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

impl ToQObject for Value {
    fn to_qobject(&self) -> Value {
        self.clone()
    }
}

impl ToQObject for () {
    fn to_qobject(&self) -> Value {
        Value::Null
    }
}

impl<T: ToQObject> ToQObject for Vec<T> {
    fn to_qobject(&self) -> Value {
        Value::Array(self.iter().map(ToQObject::to_qobject).collect())
    }
}

impl<T: ToQObject> ToQObject for Box<T> {
    fn to_qobject(&self) -> Value {
        (**self).to_qobject()
    }
}

/// Decodes a command's `arguments` object with `members`, refusing
/// unknown members, as QEMU's generated marshallers do.
pub fn decode_args<T>(
    args: &Map<String, Value>,
    members: impl FnOnce(&mut InputVisitor<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    let mut v = InputVisitor::in_object(args);
    let r = members(&mut v)?;
    v.check_struct()?;
    Ok(r)
}

/// For commands without arguments: any member is unexpected.
pub fn decode_no_args(args: &Map<String, Value>) -> Result<(), Error> {
    decode_args(args, |_| Ok(()))
}

/// Decodes a whole value as type `T` (used for `-blockdev` JSON, tests).
pub fn from_value<T: Visit>(value: &Value) -> Result<T, Error> {
    T::visit(&mut InputVisitor::new(value), None)
}

/// Decodes a keyval-parsed value as type `T`.
pub fn from_keyval<T: Visit>(value: &Value) -> Result<T, Error> {
    T::visit(&mut InputVisitor::new_keyval(value), None)
}
