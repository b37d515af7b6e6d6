//! HMP command-line syntax: the command name, the arguments each command
//! declares in QEMU's `args_type` notation, and the monitor's integer
//! expressions (`x /4gx 0x1000 + 8*2`, `$rip`).
//!
//! The argument types understood, as QEMU's monitor reads them:
//! `s` a word or a quoted string, `F` a file name, `B` a block device,
//! `S` the rest of the line, `i` a 32-bit expression, `l` a 64-bit
//! expression, `M` a size in MiB unless a suffix says otherwise, `o` a
//! size in bytes, `T` a time in seconds (`ms`, `us`, `ns` suffixes), `b`
//! `on`/`off`, `/` a `/count format size` memory format, `O` a
//! `key=value,...` option list, `-x` a flag; `?` after a type makes it
//! optional.

use std::collections::HashMap;

/// One parsed argument.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// `/count format size`.
    Fmt {
        count: i64,
        format: u8,
        size: i64,
    },
    /// `key=value` pairs in order.
    Opts(Vec<(String, String)>),
}

pub type Args = HashMap<String, Arg>;

/// Looks up CPU registers for `$name` in expressions.
pub trait Registers {
    fn register(&mut self, name: &str) -> Result<u64, String>;
}

/// The last `/fmt` given (QEMU keeps it between `x` commands).
#[derive(Clone, Copy, Debug)]
pub struct DefaultFormat {
    pub format: u8,
    pub size: i64,
}

impl Default for DefaultFormat {
    fn default() -> Self {
        DefaultFormat {
            format: b'x',
            size: 4,
        }
    }
}

/// A cursor over a command line.
pub struct Cursor<'a> {
    s: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(s: &'a str) -> Cursor<'a> {
        Cursor {
            s: s.as_bytes(),
            pos: 0,
        }
    }

    pub fn peek(&self) -> u8 {
        self.s.get(self.pos).copied().unwrap_or(0)
    }

    pub fn skip_space(&mut self) {
        while self.peek().is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub fn rest(&self) -> &'a str {
        std::str::from_utf8(&self.s[self.pos.min(self.s.len())..]).unwrap_or("")
    }

    pub fn text(&self, from: usize, to: usize) -> &'a str {
        std::str::from_utf8(&self.s[from..to.min(self.s.len())]).unwrap_or("")
    }

    /// A command name: everything up to a blank or a `/`.
    pub fn command_name(&mut self) -> &'a str {
        let start = self.pos;
        while !self.at_end() && self.peek() != b'/' && !self.peek().is_ascii_whitespace() {
            self.pos += 1;
        }
        self.text(start, self.pos)
    }

    /// A word or a double-quoted string with C escapes; `None` when
    /// there is none.
    pub fn string(&mut self) -> Option<String> {
        self.skip_space();
        if self.at_end() {
            return None;
        }
        let mut out = Vec::new();
        if self.peek() == b'"' {
            self.pos += 1;
            loop {
                match self.peek() {
                    0 if self.at_end() => return None,
                    b'"' => {
                        self.pos += 1;
                        break;
                    }
                    b'\\' => {
                        self.pos += 1;
                        let c = match self.peek() {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b'\\' => b'\\',
                            b'\'' => b'\'',
                            b'"' => b'"',
                            _ => return None,
                        };
                        out.push(c);
                        self.pos += 1;
                    }
                    c => {
                        out.push(c);
                        self.pos += 1;
                    }
                }
            }
        } else {
            while !self.at_end() && !self.peek().is_ascii_whitespace() {
                out.push(self.peek());
                self.pos += 1;
            }
        }
        Some(String::from_utf8_lossy(&out).into_owned())
    }
}

/// The monitor's integer expressions. QEMU's precedence, lowest first:
/// `+ -`, then `& | ^`, then `* / %`, then unary `+ - ~`, parentheses,
/// numbers (C syntax: `0x`, leading `0` octal), `'c'` and `$register`.
struct Expr<'c, 'a> {
    c: &'c mut Cursor<'a>,
    regs: &'c mut dyn Registers,
}

type ExprResult = Result<i64, String>;

impl Expr<'_, '_> {
    fn next(&mut self) {
        if !self.c.at_end() {
            self.c.pos += 1;
        }
        self.c.skip_space();
    }

    fn sum(&mut self) -> ExprResult {
        let mut v = self.logic()?;
        loop {
            let op = self.c.peek();
            if op != b'+' && op != b'-' {
                return Ok(v);
            }
            self.next();
            let r = self.logic()?;
            v = if op == b'+' {
                v.wrapping_add(r)
            } else {
                v.wrapping_sub(r)
            };
        }
    }

    fn logic(&mut self) -> ExprResult {
        let mut v = self.prod()?;
        loop {
            let op = self.c.peek();
            if !matches!(op, b'&' | b'|' | b'^') {
                return Ok(v);
            }
            self.next();
            let r = self.prod()?;
            v = match op {
                b'&' => v & r,
                b'|' => v | r,
                _ => v ^ r,
            };
        }
    }

    fn prod(&mut self) -> ExprResult {
        let mut v = self.unary()?;
        loop {
            let op = self.c.peek();
            if !matches!(op, b'*' | b'/' | b'%') {
                return Ok(v);
            }
            self.next();
            let r = self.unary()?;
            v = match op {
                b'*' => v.wrapping_mul(r),
                _ if r == 0 => return Err("division by zero".into()),
                b'/' => v.wrapping_div(r),
                _ => v.wrapping_rem(r),
            };
        }
    }

    fn unary(&mut self) -> ExprResult {
        match self.c.peek() {
            b'+' => {
                self.next();
                self.unary()
            }
            b'-' => {
                self.next();
                Ok(self.unary()?.wrapping_neg())
            }
            b'~' => {
                self.next();
                Ok(!self.unary()?)
            }
            b'(' => {
                self.next();
                let v = self.sum()?;
                if self.c.peek() != b')' {
                    return Err("')' expected".into());
                }
                self.next();
                Ok(v)
            }
            b'\'' => {
                self.c.pos += 1;
                if self.c.at_end() {
                    return Err("character constant expected".into());
                }
                let v = i64::from(self.c.peek());
                self.c.pos += 1;
                if self.c.peek() != b'\'' {
                    return Err("missing terminating ' character".into());
                }
                self.next();
                Ok(v)
            }
            b'$' => {
                self.c.pos += 1;
                let start = self.c.pos;
                while self.c.peek().is_ascii_alphanumeric() || matches!(self.c.peek(), b'_' | b'.')
                {
                    self.c.pos += 1;
                }
                let name = self.c.text(start, self.c.pos).to_string();
                self.c.skip_space();
                self.regs.register(&name).map(|v| v as i64)
            }
            0 if self.c.at_end() => Err("unexpected end of expression".into()),
            _ => {
                let v = self.number()?;
                self.c.skip_space();
                Ok(v)
            }
        }
    }

    /// A number as C's strtoull with base 0 reads it.
    fn number(&mut self) -> ExprResult {
        let rest = self.c.rest().as_bytes();
        let (radix, skip) = if rest.len() > 2
            && rest[0] == b'0'
            && (rest[1] | 0x20) == b'x'
            && rest[2].is_ascii_hexdigit()
        {
            (16, 2)
        } else if rest.first() == Some(&b'0') {
            (8, 0)
        } else {
            (10, 0)
        };
        let digits = rest[skip..]
            .iter()
            .take_while(|b| (**b as char).is_digit(radix))
            .count();
        if digits == 0 {
            return Err("invalid char in expression".into());
        }
        let text = std::str::from_utf8(&rest[skip..skip + digits]).unwrap_or("0");
        let v = u64::from_str_radix(text, radix).map_err(|_| "number too large".to_string())?;
        self.c.pos += skip + digits;
        Ok(v as i64)
    }
}

/// Reads an expression at the cursor.
pub fn expression(c: &mut Cursor<'_>, regs: &mut dyn Registers) -> ExprResult {
    c.skip_space();
    Expr { c, regs }.sum()
}

/// A size with an optional suffix (`k`, `M`, `G`, `T`, `P`, `E`, `b`);
/// `default_shift` applies without one. Returns the bytes and the length
/// read.
fn size(s: &str, default_shift: u32) -> Option<(u64, usize)> {
    let num_len = s
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    if num_len == 0 {
        return None;
    }
    let value: f64 = s[..num_len].parse().ok()?;
    let (shift, used) = match s.as_bytes().get(num_len).map(|b| b.to_ascii_uppercase()) {
        Some(b'B') => (0, 1),
        Some(b'K') => (10, 1),
        Some(b'M') => (20, 1),
        Some(b'G') => (30, 1),
        Some(b'T') => (40, 1),
        Some(b'P') => (50, 1),
        Some(b'E') => (60, 1),
        _ => (default_shift, 0),
    };
    let bytes = value * (1u64 << shift) as f64;
    if !(0.0..1.8446744073709552e19).contains(&bytes) {
        return None;
    }
    Some((bytes as u64, num_len + used))
}

/// A whole string as QEMU's qemu_strtosz reads it: a size and an
/// optional suffix, nothing after them.
pub fn whole_size(s: &str, default_shift: u32) -> Option<u64> {
    size(s, default_shift).and_then(|(v, used)| (used == s.len()).then_some(v))
}

/// `key=value,...` (`,,` escapes a comma); a leading value without a key
/// belongs to `implied`.
fn options(text: &str, implied: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let mut items = Vec::new();
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                cur.push(',');
            } else {
                parts.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(ch);
        }
    }
    parts.push(cur);
    for (i, part) in parts.into_iter().enumerate() {
        match part.split_once('=') {
            Some((k, v)) => items.push((k.to_string(), v.to_string())),
            None if i == 0 && implied.is_some() => {
                items.push((implied.unwrap_or_default().to_string(), part))
            }
            None if part.is_empty() => {}
            // As QemuOpts: a bare word is a flag, `noNAME` clears it
            // (`device_add virtio-blk-pci,help`).
            None => match part.strip_prefix("no") {
                Some(name) => items.push((name.to_string(), "off".to_string())),
                None => items.push((part, "on".to_string())),
            },
        }
    }
    Ok(items)
}

/// Parses the arguments after the command name as `args_type` declares;
/// `Err` carries the text QEMU prints for the failure.
pub fn arguments(
    cmd_name: &str,
    args_type: &str,
    c: &mut Cursor<'_>,
    regs: &mut dyn Registers,
    fmt: &mut DefaultFormat,
) -> Result<Args, String> {
    let mut args = Args::new();
    if !args_type.is_empty() {
        for spec in args_type.split(',') {
            let Some((key, ty)) = spec.split_once(':') else {
                continue;
            };
            let kind = ty.as_bytes().first().copied().unwrap_or(b's');
            let optional = ty.ends_with('?');
            match kind {
                b's' | b'F' | b'B' => {
                    c.skip_space();
                    if optional && c.at_end() {
                        continue;
                    }
                    match c.string() {
                        Some(s) => {
                            args.insert(key.into(), Arg::Str(s));
                        }
                        None => {
                            return Err(match kind {
                                b'F' => format!("{cmd_name}: filename expected"),
                                b'B' => format!("{cmd_name}: block device name expected"),
                                _ => format!("{cmd_name}: string expected"),
                            })
                        }
                    }
                }
                b'S' => {
                    c.skip_space();
                    if c.at_end() {
                        if optional {
                            continue;
                        }
                        return Err(format!("{cmd_name}: string expected"));
                    }
                    args.insert(key.into(), Arg::Str(c.rest().to_string()));
                    c.pos += c.rest().len();
                }
                b'O' => {
                    c.skip_space();
                    if c.at_end() {
                        if optional {
                            continue;
                        }
                        return Err(format!("{cmd_name}: string expected"));
                    }
                    let text = c.string().unwrap_or_default();
                    let implied = match cmd_name {
                        "device_add" => Some("driver"),
                        "object_add" => Some("qom-type"),
                        "netdev_add" => Some("type"),
                        _ => None,
                    };
                    args.insert(key.into(), Arg::Opts(options(&text, implied)?));
                }
                b'i' | b'l' => {
                    c.skip_space();
                    if optional && c.at_end() {
                        continue;
                    }
                    // `i.`: present only when a '.' introduces it (the
                    // `i` command's index: `i /b 0x70.0x0f`).
                    if ty.ends_with('.') {
                        if c.peek() != b'.' {
                            continue;
                        }
                        c.pos += 1;
                        c.skip_space();
                    }
                    let v = expression(c, regs)?;
                    if kind == b'i' && (v >> 32) & 0xffff_ffff != 0 {
                        return Err(format!(
                            "'{cmd_name}' has failed: integer is for 32-bit values"
                        ));
                    }
                    args.insert(key.into(), Arg::Int(v));
                }
                b'M' | b'o' => {
                    c.skip_space();
                    if optional && c.at_end() {
                        continue;
                    }
                    let shift = if kind == b'M' { 20 } else { 0 };
                    let (v, used) = size(c.rest(), shift)
                        .filter(|(v, _)| *v <= i64::MAX as u64)
                        .ok_or_else(|| "invalid size".to_string())?;
                    c.pos += used;
                    args.insert(key.into(), Arg::Int(v as i64));
                }
                b'T' => {
                    c.skip_space();
                    if optional && c.at_end() {
                        continue;
                    }
                    let rest = c.rest();
                    let n = rest
                        .bytes()
                        .take_while(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+'))
                        .count();
                    let mut v: f64 = rest[..n]
                        .parse()
                        .map_err(|_| "invalid number".to_string())?;
                    c.pos += n;
                    for (suffix, div) in [("ms", 1e3), ("us", 1e6), ("ns", 1e9)] {
                        if c.rest().starts_with(suffix) {
                            v /= div;
                            c.pos += 2;
                            break;
                        }
                    }
                    args.insert(key.into(), Arg::Float(v));
                }
                b'b' => {
                    c.skip_space();
                    if optional && c.at_end() {
                        continue;
                    }
                    let word = c.string().unwrap_or_default();
                    let v = match word.as_str() {
                        "on" => true,
                        "off" => false,
                        _ => return Err("Expected 'on' or 'off'".into()),
                    };
                    args.insert(key.into(), Arg::Bool(v));
                }
                b'-' => {
                    let flag = ty.as_bytes().get(1).copied().unwrap_or(0);
                    c.skip_space();
                    let mut set = false;
                    if c.peek() == b'-' {
                        let save = c.pos;
                        c.pos += 1;
                        if c.peek() == flag {
                            c.pos += 1;
                            set = true;
                        } else if !args_type.split(',').any(|s| {
                            s.split_once(':')
                                .is_some_and(|(_, t)| t.as_bytes() == [b'-', c.peek()])
                        }) {
                            return Err(format!(
                                "{cmd_name}: unsupported option -{}",
                                c.peek() as char
                            ));
                        } else {
                            c.pos = save;
                        }
                    }
                    args.insert(key.into(), Arg::Bool(set));
                }
                b'/' => {
                    c.skip_space();
                    let (count, format, size) = if c.peek() == b'/' {
                        c.pos += 1;
                        let mut count = 1i64;
                        if c.peek().is_ascii_digit() {
                            count = 0;
                            while c.peek().is_ascii_digit() {
                                count = count
                                    .saturating_mul(10)
                                    .saturating_add(i64::from(c.peek() - b'0'));
                                c.pos += 1;
                            }
                        }
                        let (mut size, mut format) = (-1i64, None);
                        loop {
                            match c.peek() {
                                f @ (b'o' | b'd' | b'u' | b'x' | b'i' | b'c') => format = Some(f),
                                b'b' => size = 1,
                                b'h' => size = 2,
                                b'w' => size = 4,
                                b'g' | b'L' => size = 8,
                                _ => break,
                            }
                            c.pos += 1;
                        }
                        if !c.at_end() && !c.peek().is_ascii_whitespace() {
                            return Err(format!("invalid char in format: '{}'", c.peek() as char));
                        }
                        let format = format.unwrap_or(fmt.format);
                        if format != b'i' {
                            if size < 0 {
                                size = fmt.size;
                            }
                            fmt.size = size;
                        }
                        fmt.format = format;
                        (count, format, size)
                    } else {
                        let size = if fmt.format == b'i' { -1 } else { fmt.size };
                        (1, fmt.format, size)
                    };
                    args.insert(
                        key.into(),
                        Arg::Fmt {
                            count,
                            format,
                            size,
                        },
                    );
                }
                _ => {}
            }
        }
    }
    c.skip_space();
    if !c.at_end() {
        return Err(format!(
            "{cmd_name}: extraneous characters at the end of line"
        ));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoRegs;
    impl Registers for NoRegs {
        fn register(&mut self, _: &str) -> Result<u64, String> {
            Err("unknown register".into())
        }
    }

    fn eval(s: &str) -> ExprResult {
        expression(&mut Cursor::new(s), &mut NoRegs)
    }

    #[test]
    fn expressions_follow_the_monitor_rules() {
        assert_eq!(eval("0x10 + 2*3"), Ok(22));
        assert_eq!(eval("010"), Ok(8));
        assert_eq!(eval("1 + 6 & 3"), Ok(3));
        assert_eq!(eval("-(1+2)"), Ok(-3));
        assert_eq!(eval("'A'"), Ok(65));
        assert_eq!(eval(""), Err("unexpected end of expression".into()));
        assert_eq!(eval("4/0"), Err("division by zero".into()));
        assert_eq!(eval("zz"), Err("invalid char in expression".into()));
        assert_eq!(eval("(1"), Err("')' expected".into()));
        assert_eq!(eval("$rip"), Err("unknown register".into()));
    }

    #[test]
    fn formats_remember_the_last_size() {
        let mut fmt = DefaultFormat::default();
        let a = arguments(
            "x",
            "fmt:/,addr:l",
            &mut Cursor::new("/2gx 0x100"),
            &mut NoRegs,
            &mut fmt,
        )
        .unwrap();
        assert_eq!(
            a["fmt"],
            Arg::Fmt {
                count: 2,
                format: b'x',
                size: 8
            }
        );
        assert_eq!(a["addr"], Arg::Int(0x100));
        let a = arguments(
            "x",
            "fmt:/,addr:l",
            &mut Cursor::new("/3d 0"),
            &mut NoRegs,
            &mut fmt,
        )
        .unwrap();
        assert_eq!(
            a["fmt"],
            Arg::Fmt {
                count: 3,
                format: b'd',
                size: 8
            }
        );
        let e = arguments(
            "x",
            "fmt:/,addr:l",
            &mut Cursor::new("/3q 0"),
            &mut NoRegs,
            &mut fmt,
        );
        assert_eq!(e, Err("invalid char in format: 'q'".into()));
    }

    #[test]
    fn flags_strings_and_leftovers() {
        let mut fmt = DefaultFormat::default();
        let a = arguments(
            "eject",
            "force:-f,device:B",
            &mut Cursor::new("-f cd0"),
            &mut NoRegs,
            &mut fmt,
        )
        .unwrap();
        assert_eq!(a["force"], Arg::Bool(true));
        assert_eq!(a["device"], Arg::Str("cd0".into()));
        let e = arguments("stop", "", &mut Cursor::new("now"), &mut NoRegs, &mut fmt);
        assert_eq!(
            e,
            Err("stop: extraneous characters at the end of line".into())
        );
        let e = arguments(
            "eject",
            "force:-f,device:B",
            &mut Cursor::new(""),
            &mut NoRegs,
            &mut fmt,
        );
        assert_eq!(e, Err("eject: block device name expected".into()));
        let a = arguments(
            "object_add",
            "object:O",
            &mut Cursor::new("iothread,id=io1"),
            &mut NoRegs,
            &mut fmt,
        )
        .unwrap();
        assert_eq!(
            a["object"],
            Arg::Opts(vec![
                ("qom-type".into(), "iothread".into()),
                ("id".into(), "io1".into())
            ])
        );
    }
}
