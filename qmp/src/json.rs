//! The JSON side of a QMP monitor, with QEMU 2.11's dialect and limits.
//!
//! # Incoming: [`JsonStreamer`]
//!
//! QMP has no framing: a client writes JSON values back to back, split
//! across reads in any way.  Like QEMU, the streamer works in three stages:
//!
//! 1. a lexer turns bytes into tokens (whitespace is dropped);
//! 2. a splitter counts `{}` and `[]`; as soon as both counts are back to
//!    zero, or either goes negative, the tokens collected so far form one
//!    message.  A scalar outside any bracket (`42`, `"x"`, `true`) is a
//!    message by itself;
//! 3. a parser turns a message's tokens into a [`serde_json::Value`], or
//!    into the error text QEMU 2.11 reports for them.
//!
//! A lexical error (a byte no token can contain, a bad escape, `0123`, ...)
//! ends the current message with the error `Invalid JSON syntax`; the
//! offending byte is dropped and lexing restarts cleanly with the next byte,
//! so later requests still get through.  As in QEMU, a byte `0xFF` (never
//! valid in any token) therefore resets the whole streamer.
//!
//! The dialect is QEMU's: single-quoted strings (`'it\'s'`) besides
//! double-quoted ones; escapes `\" \' \\ \/ \b \f \n \r \t \uXXXX`; raw
//! control characters (but not NUL) are accepted inside strings, as QEMU 2.11
//! does; keywords are runs of `a`-`z` (only `true`, `false`, `null` parse);
//! an integer literal that fits `i64` is a signed integer, a non-negative one
//! that fits `u64` an unsigned one, and anything larger a float.  The
//! `%d`-style interpolation tokens of QEMU's internal JSON builder lex as in
//! QEMU but never parse (`Invalid JSON syntax`).
//!
//! Where a [`String`] cannot hold what QEMU 2.11 would have stored, the
//! choice is documented at [`JsonStreamer`].
//!
//! # Outgoing: [`to_qmp_string`] and friends
//!
//! The encoder writes exactly the bytes QEMU 2.11's `qobject_to_json()` and
//! `qobject_to_json_pretty()` write: `"key": value` members separated by
//! `", "`; four-space indentation when pretty; every non-ASCII or control
//! character escaped as `\uXXXX` (upper-case hex, surrogate pairs beyond the
//! BMP); floats printed as C's `%f` with trailing zeros removed; and object
//! members in the order QEMU's hash-table `QDict` iterates them (see
//! [`KeyOrder`]).

use std::fmt::{self, Write as _};

use serde_json::{Map, Number, Value};

/// Largest message accepted: the bytes of all tokens of one top-level value,
/// not counting whitespace between tokens (QEMU 2.11's `MAX_TOKEN_SIZE`,
/// 64 MiB).  A message that grows past it is answered `Invalid JSON syntax`
/// the moment it does; the rest of it is then read and dropped without being
/// stored, and the streamer carries on with the next message.
pub const MAX_MESSAGE_SIZE: usize = 64 << 20;

/// Largest number of tokens in one message (QEMU 2.11's `MAX_TOKEN_COUNT`,
/// 2 Mi).  Past it the message fails and is skipped like an oversized one.
/// This bounds the token index to 12 bytes a token, 24 MiB in all.
pub const MAX_TOKEN_COUNT: usize = 2 << 20;

/// Deepest nesting accepted: the number of `{` plus `[` open at once
/// (QEMU 2.11's `MAX_NESTING`, 1024).  A value nested 1024 deep parses; the
/// 1025th opening bracket fails the message, which is then skipped like an
/// oversized one.  The parser uses an explicit stack, never recursion.
pub const MAX_NESTING: usize = 1024;

/// The text QEMU answers for malformed input it cannot describe better
/// (`QERR_JSON_PARSING`).
pub const INVALID_JSON_SYNTAX: &str = "Invalid JSON syntax";

/// The QMP error class of every [`JsonError`].
pub const JSON_ERROR_CLASS: &str = "GenericError";

/// QEMU formats parser messages into a 1024-byte buffer.
const MAX_REASON_LEN: usize = 1023;

/// Buffers larger than this are released after the message that grew them.
const RETAINED_CAPACITY: usize = 1 << 20;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Which stage rejected a message.  The wire text does not depend on it; it
/// is there for logging and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonErrorKind {
    /// A byte no token can contain, or a malformed token.
    Lexical,
    /// Tokens that do not form a value.
    Grammar,
    /// [`MAX_MESSAGE_SIZE`], [`MAX_TOKEN_COUNT`] or [`MAX_NESTING`] exceeded.
    Limit,
}

/// A message that could not be parsed.  QMP reports it as an error of class
/// [`JSON_ERROR_CLASS`] whose `desc` is [`JsonError::desc`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    kind: JsonErrorKind,
    desc: String,
}

impl JsonError {
    fn syntax(kind: JsonErrorKind) -> Self {
        JsonError {
            kind,
            desc: INVALID_JSON_SYNTAX.to_owned(),
        }
    }

    /// `JSON parse error, <reason>`, as QEMU 2.11's `parse_error()`.
    fn parse(reason: &str) -> Self {
        let mut end = reason.len().min(MAX_REASON_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        JsonError {
            kind: JsonErrorKind::Grammar,
            desc: format!("JSON parse error, {}", &reason[..end]),
        }
    }

    /// The human-readable text QEMU puts in the error's `desc`.
    pub fn desc(&self) -> &str {
        &self.desc
    }

    /// The QMP error class, always [`JSON_ERROR_CLASS`].
    pub fn class(&self) -> &'static str {
        JSON_ERROR_CLASS
    }

    /// Which stage rejected the message.
    pub fn kind(&self) -> JsonErrorKind {
        self.kind
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.desc)
    }
}

impl std::error::Error for JsonError {}

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

/// The limits a [`JsonStreamer`] enforces.  [`Limits::default`] gives
/// QEMU 2.11's: [`MAX_MESSAGE_SIZE`], [`MAX_TOKEN_COUNT`], [`MAX_NESTING`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of token text in one message (whitespace not counted).
    pub max_message_size: usize,
    /// Tokens in one message.
    pub max_token_count: usize,
    /// `{` plus `[` open at once.
    pub max_nesting: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: MAX_MESSAGE_SIZE,
            max_token_count: MAX_TOKEN_COUNT,
            max_nesting: MAX_NESTING,
        }
    }
}

// ---------------------------------------------------------------------------
// Tokens and lexer states
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    LCurly,
    RCurly,
    LSquare,
    RSquare,
    Colon,
    Comma,
    Integer,
    Float,
    Keyword,
    Str,
    /// `%d`, `%s`, ...: QEMU's interpolation escapes.
    Interp,
}

/// One token of the message being collected; its text (for value tokens)
/// is `text[start..end]` of the streamer.
#[derive(Debug, Clone, Copy)]
struct TokRec {
    kind: Tok,
    start: u32,
    end: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Start,
    Str {
        quote: u8,
    },
    StrEscape {
        quote: u8,
    },
    StrHex {
        quote: u8,
        left: u8,
    },
    /// `0` or `-0`.
    Zero,
    /// `[-]1-9` and digits.
    NonZero,
    /// `-`.
    Neg,
    /// digits `.`
    Mantissa,
    /// digits `.` digits
    MantissaDigits,
    /// `e` or `E`.
    ExpE,
    /// `e+` or `e-`.
    ExpSign,
    /// exponent digits.
    ExpDigits,
    Keyword,
    Interp,
    InterpL,
    InterpLL,
    InterpI,
    InterpI6,
    InterpI64,
}

/// Bytes that stand for themselves inside a string: QEMU 2.11 accepts any
/// byte but NUL and those that never occur in UTF-8 (0xC0, 0xC1, 0xF5-0xFF).
fn is_string_byte(b: u8) -> bool {
    matches!(b, 0x01..=0xBF | 0xC2..=0xF4)
}

// ---------------------------------------------------------------------------
// The streamer
// ---------------------------------------------------------------------------

/// Splits a QMP byte stream into JSON messages and parses them.
///
/// Feed it bytes as they arrive with [`feed`](Self::feed) (or
/// [`feed_with`](Self::feed_with)); each complete message comes out as
/// `Ok(value)` or `Err(error)`, in order.  Time is linear in the input and
/// memory is bounded by [`Limits`].  No byte sequence makes it panic.
///
/// A number or keyword ends only when the next byte arrives (`42` alone
/// waits for more input; `42\n` yields it), exactly as in QEMU.  Objects,
/// arrays and strings complete on their closing byte.
///
/// Behaviour where a Rust `String` cannot follow QEMU 2.11 literally:
///
/// * `\u0000` is dropped from the string, as QEMU 2.11 (whose strings are
///   C strings) does.
/// * A `\uD800`-`\uDBFF` escape immediately followed by a `\uDC00`-`\uDFFF`
///   escape decodes to the one character the pair encodes.  A surrogate
///   escape that is not part of such a pair becomes U+FFFD, which is what
///   QEMU 2.11 ends up writing back for it.
/// * Raw bytes that are not well-formed UTF-8 become U+FFFD, one per
///   ill-formed sequence as QEMU's output side delimits them.
/// * A number too large for an `f64` (QEMU would store infinity, which JSON
///   cannot carry) fails the value without a reason, like an interpolation
///   token: `Invalid JSON syntax` at top level, otherwise the reason of the
///   enclosing container.
#[derive(Debug)]
pub struct JsonStreamer {
    limits: Limits,
    lex: Lex,
    /// Text of the value tokens of the message being collected.
    text: Vec<u8>,
    /// Where the token being lexed starts in `text`.
    tok_start: usize,
    tokens: Vec<TokRec>,
    /// Bytes of all completed tokens of the message (QEMU's `token_size`).
    msg_bytes: usize,
    brace: i64,
    bracket: i64,
    /// A limit was exceeded: the rest of the message is being skipped.
    discarding: bool,
}

impl Default for JsonStreamer {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonStreamer {
    /// A streamer with QEMU 2.11's limits.
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    /// A streamer with other limits (each at least 1; the size is capped at
    /// 2 GiB).
    pub fn with_limits(limits: Limits) -> Self {
        let limits = Limits {
            max_message_size: limits.max_message_size.clamp(1, 1 << 31),
            max_token_count: limits.max_token_count.max(1),
            max_nesting: limits.max_nesting.max(1),
        };
        JsonStreamer {
            limits,
            lex: Lex::Start,
            text: Vec::new(),
            tok_start: 0,
            tokens: Vec::new(),
            msg_bytes: 0,
            brace: 0,
            bracket: 0,
            discarding: false,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Feeds bytes; returns the messages they complete, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Result<Value, JsonError>> {
        let mut out = Vec::new();
        self.feed_with(bytes, |item| out.push(item));
        out
    }

    /// Feeds bytes, handing each message they complete to `sink`, in order.
    pub fn feed_with<F>(&mut self, bytes: &[u8], mut sink: F)
    where
        F: FnMut(Result<Value, JsonError>),
    {
        let mut i = 0;
        while i < bytes.len() {
            i = self.step(bytes, i, &mut sink);
        }
    }

    /// Ends the input: a pending number or keyword completes, any other
    /// partial token is a lexical error (QEMU's `json_lexer_flush()`).  A
    /// message whose brackets are still open stays pending.
    pub fn flush(&mut self) -> Vec<Result<Value, JsonError>> {
        let mut out = Vec::new();
        let mut sink = |item| out.push(item);
        match self.lex {
            Lex::Start => {}
            Lex::Zero | Lex::NonZero => self.finish(Tok::Integer, &mut sink),
            Lex::MantissaDigits | Lex::ExpDigits => self.finish(Tok::Float, &mut sink),
            Lex::Keyword => self.finish(Tok::Keyword, &mut sink),
            _ => self.lex_error(&mut sink),
        }
        out
    }

    /// Forgets all pending input, as when a client disconnects.
    pub fn reset(&mut self) {
        self.lex = Lex::Start;
        self.discarding = false;
        self.end_message();
    }

    /// Whether nothing is pending: no partial token, no open message.
    pub fn is_idle(&self) -> bool {
        self.lex == Lex::Start && self.tokens.is_empty() && !self.discarding
    }

    /// Processes `bytes[i]` (and, inside a string, the run of ordinary bytes
    /// it starts); returns the index of the next unprocessed byte.
    fn step<F>(&mut self, bytes: &[u8], i: usize, sink: &mut F) -> usize
    where
        F: FnMut(Result<Value, JsonError>),
    {
        let Some(&b) = bytes.get(i) else {
            return bytes.len();
        };
        match self.lex {
            Lex::Start => {
                self.start_byte(b, sink);
                i + 1
            }
            Lex::Str { quote } => {
                let rest = &bytes[i..];
                let run = rest
                    .iter()
                    .position(|&c| c == quote || c == b'\\' || !is_string_byte(c))
                    .unwrap_or(rest.len());
                if run > 0 {
                    self.append(&rest[..run], sink);
                    return i + run;
                }
                if b == quote {
                    self.append(&[b], sink);
                    self.finish(Tok::Str, sink);
                } else if b == b'\\' {
                    self.append(&[b], sink);
                    self.lex = Lex::StrEscape { quote };
                } else {
                    self.lex_error(sink);
                }
                i + 1
            }
            Lex::StrEscape { quote } => {
                match b {
                    b'b' | b'f' | b'n' | b'r' | b't' | b'/' | b'\\' | b'\'' | b'"' => {
                        self.append(&[b], sink);
                        self.lex = Lex::Str { quote };
                    }
                    b'u' => {
                        self.append(&[b], sink);
                        self.lex = Lex::StrHex { quote, left: 4 };
                    }
                    _ => self.lex_error(sink),
                }
                i + 1
            }
            Lex::StrHex { quote, left } => {
                if b.is_ascii_hexdigit() {
                    self.append(&[b], sink);
                    self.lex = if left <= 1 {
                        Lex::Str { quote }
                    } else {
                        Lex::StrHex {
                            quote,
                            left: left - 1,
                        }
                    };
                } else {
                    self.lex_error(sink);
                }
                i + 1
            }
            Lex::Neg => {
                match b {
                    b'0' => self.advance(b, Lex::Zero, sink),
                    b'1'..=b'9' => self.advance(b, Lex::NonZero, sink),
                    _ => self.lex_error(sink),
                }
                i + 1
            }
            Lex::Zero => match b {
                b'.' => {
                    self.advance(b, Lex::Mantissa, sink);
                    i + 1
                }
                // "0123": QEMU's lexer fails on the second digit.
                b'0'..=b'9' | 0x80..=0xFF => {
                    self.lex_error(sink);
                    i + 1
                }
                _ => {
                    self.finish(Tok::Integer, sink);
                    i
                }
            },
            Lex::NonZero => match b {
                b'0'..=b'9' => {
                    self.append(&[b], sink);
                    i + 1
                }
                b'.' => {
                    self.advance(b, Lex::Mantissa, sink);
                    i + 1
                }
                b'e' | b'E' => {
                    self.advance(b, Lex::ExpE, sink);
                    i + 1
                }
                0x80..=0xFF => {
                    self.lex_error(sink);
                    i + 1
                }
                _ => {
                    self.finish(Tok::Integer, sink);
                    i
                }
            },
            Lex::Mantissa => {
                match b {
                    b'0'..=b'9' => self.advance(b, Lex::MantissaDigits, sink),
                    _ => self.lex_error(sink),
                }
                i + 1
            }
            Lex::MantissaDigits => match b {
                b'0'..=b'9' => {
                    self.append(&[b], sink);
                    i + 1
                }
                b'e' | b'E' => {
                    self.advance(b, Lex::ExpE, sink);
                    i + 1
                }
                0x80..=0xFF => {
                    self.lex_error(sink);
                    i + 1
                }
                _ => {
                    self.finish(Tok::Float, sink);
                    i
                }
            },
            Lex::ExpE => {
                match b {
                    b'+' | b'-' => self.advance(b, Lex::ExpSign, sink),
                    b'0'..=b'9' => self.advance(b, Lex::ExpDigits, sink),
                    _ => self.lex_error(sink),
                }
                i + 1
            }
            Lex::ExpSign => {
                match b {
                    b'0'..=b'9' => self.advance(b, Lex::ExpDigits, sink),
                    _ => self.lex_error(sink),
                }
                i + 1
            }
            Lex::ExpDigits => match b {
                b'0'..=b'9' => {
                    self.append(&[b], sink);
                    i + 1
                }
                0x80..=0xFF => {
                    self.lex_error(sink);
                    i + 1
                }
                _ => {
                    self.finish(Tok::Float, sink);
                    i
                }
            },
            Lex::Keyword => match b {
                b'a'..=b'z' => {
                    self.append(&[b], sink);
                    i + 1
                }
                0x80..=0xFF => {
                    self.lex_error(sink);
                    i + 1
                }
                _ => {
                    self.finish(Tok::Keyword, sink);
                    i
                }
            },
            Lex::Interp => {
                match b {
                    b'd' | b'i' | b'p' | b's' | b'f' => self.advance_finish(b, sink),
                    b'l' => self.advance(b, Lex::InterpL, sink),
                    b'I' => self.advance(b, Lex::InterpI, sink),
                    _ => self.lex_error(sink),
                }
                i + 1
            }
            Lex::InterpL => {
                match b {
                    b'd' => self.advance_finish(b, sink),
                    b'l' => self.advance(b, Lex::InterpLL, sink),
                    _ => self.lex_error(sink),
                }
                i + 1
            }
            Lex::InterpLL | Lex::InterpI64 => {
                match b {
                    b'd' => self.advance_finish(b, sink),
                    _ => self.lex_error(sink),
                }
                i + 1
            }
            Lex::InterpI => {
                match b {
                    b'6' => self.advance(b, Lex::InterpI6, sink),
                    _ => self.lex_error(sink),
                }
                i + 1
            }
            Lex::InterpI6 => {
                match b {
                    b'4' => self.advance(b, Lex::InterpI64, sink),
                    _ => self.lex_error(sink),
                }
                i + 1
            }
        }
    }

    fn start_byte<F>(&mut self, b: u8, sink: &mut F)
    where
        F: FnMut(Result<Value, JsonError>),
    {
        let (punct, state) = match b {
            b' ' | b'\t' | b'\r' | b'\n' => return,
            b'{' => (Some(Tok::LCurly), Lex::Start),
            b'}' => (Some(Tok::RCurly), Lex::Start),
            b'[' => (Some(Tok::LSquare), Lex::Start),
            b']' => (Some(Tok::RSquare), Lex::Start),
            b':' => (Some(Tok::Colon), Lex::Start),
            b',' => (Some(Tok::Comma), Lex::Start),
            b'"' | b'\'' => (None, Lex::Str { quote: b }),
            b'0' => (None, Lex::Zero),
            b'1'..=b'9' => (None, Lex::NonZero),
            b'-' => (None, Lex::Neg),
            b'a'..=b'z' => (None, Lex::Keyword),
            b'%' => (None, Lex::Interp),
            _ => {
                self.lex_error(sink);
                return;
            }
        };
        self.tok_start = self.text.len();
        match punct {
            Some(kind) => self.finish(kind, sink),
            None => self.advance(b, state, sink),
        }
    }

    fn advance<F>(&mut self, b: u8, state: Lex, sink: &mut F)
    where
        F: FnMut(Result<Value, JsonError>),
    {
        self.append(&[b], sink);
        self.lex = state;
    }

    fn advance_finish<F>(&mut self, b: u8, sink: &mut F)
    where
        F: FnMut(Result<Value, JsonError>),
    {
        self.append(&[b], sink);
        self.finish(Tok::Interp, sink);
    }

    /// Adds bytes to the token being lexed, unless the message is being
    /// skipped; fails the message the moment it would outgrow its limit.
    fn append<F>(&mut self, bytes: &[u8], sink: &mut F)
    where
        F: FnMut(Result<Value, JsonError>),
    {
        if self.discarding {
            return;
        }
        let current = self.text.len().saturating_sub(self.tok_start);
        let total = self
            .msg_bytes
            .saturating_add(current)
            .saturating_add(bytes.len());
        if total > self.limits.max_message_size {
            self.exceed_limit(sink);
            return;
        }
        self.text.extend_from_slice(bytes);
    }

    fn track(&mut self, kind: Tok) {
        match kind {
            Tok::LCurly => self.brace = self.brace.saturating_add(1),
            Tok::RCurly => self.brace = self.brace.saturating_sub(1),
            Tok::LSquare => self.bracket = self.bracket.saturating_add(1),
            Tok::RSquare => self.bracket = self.bracket.saturating_sub(1),
            _ => {}
        }
    }

    fn balanced(&self) -> bool {
        self.brace < 0 || self.bracket < 0 || (self.brace == 0 && self.bracket == 0)
    }

    /// A token is complete.
    fn finish<F>(&mut self, kind: Tok, sink: &mut F)
    where
        F: FnMut(Result<Value, JsonError>),
    {
        self.lex = Lex::Start;
        self.track(kind);
        if self.discarding {
            if self.balanced() {
                self.discarding = false;
                self.end_message();
            }
            return;
        }
        let start = self.tok_start.min(self.text.len());
        let len = match kind {
            Tok::LCurly | Tok::RCurly | Tok::LSquare | Tok::RSquare | Tok::Colon | Tok::Comma => 1,
            _ => self.text.len().saturating_sub(start),
        };
        self.msg_bytes = self.msg_bytes.saturating_add(len);
        // Offsets fit: `text` never outgrows `max_message_size` <= 2 GiB.
        self.tokens.push(TokRec {
            kind,
            start: start as u32,
            end: self.text.len() as u32,
        });
        if self.balanced() {
            let result = parse_message(&self.tokens, &self.text);
            self.end_message();
            sink(result);
        } else {
            let depth = self.brace.saturating_add(self.bracket);
            let max_depth = i64::try_from(self.limits.max_nesting).unwrap_or(i64::MAX);
            if self.msg_bytes > self.limits.max_message_size
                || self.tokens.len() > self.limits.max_token_count
                || depth > max_depth
            {
                self.exceed_limit(sink);
            }
        }
    }

    /// Fails the current message for a limit and skips the rest of it,
    /// keeping only the bracket counts.
    fn exceed_limit<F>(&mut self, sink: &mut F)
    where
        F: FnMut(Result<Value, JsonError>),
    {
        let (brace, bracket) = (self.brace, self.bracket);
        self.end_message();
        self.brace = brace;
        self.bracket = bracket;
        self.discarding = true;
        sink(Err(JsonError::syntax(JsonErrorKind::Limit)));
    }

    /// A byte that fits no token: the message fails, the byte is dropped and
    /// lexing restarts.  While skipping an over-limit message (already
    /// reported), this just ends the skipping.
    fn lex_error<F>(&mut self, sink: &mut F)
    where
        F: FnMut(Result<Value, JsonError>),
    {
        self.lex = Lex::Start;
        let was_discarding = self.discarding;
        self.discarding = false;
        self.end_message();
        if !was_discarding {
            sink(Err(JsonError::syntax(JsonErrorKind::Lexical)));
        }
    }

    /// Forgets the collected message (not the lexer state).
    fn end_message(&mut self) {
        self.tokens.clear();
        self.text.clear();
        self.tok_start = 0;
        self.msg_bytes = 0;
        self.brace = 0;
        self.bracket = 0;
        if self.text.capacity() > RETAINED_CAPACITY {
            self.text = Vec::new();
        }
        if self.tokens.capacity() > RETAINED_CAPACITY / 12 {
            self.tokens = Vec::new();
        }
    }
}

/// Parses `input` as exactly one JSON value in QEMU's dialect (convenience
/// for tests and internal use).  Anything but a single complete value is
/// `Invalid JSON syntax`, or the first message's error.
pub fn parse_value(input: &[u8]) -> Result<Value, JsonError> {
    let mut streamer = JsonStreamer::new();
    let mut items = streamer.feed(input);
    items.extend(streamer.flush());
    let idle = streamer.is_idle();
    let mut items = items.into_iter();
    match (items.next(), items.next()) {
        (Some(Err(e)), _) => Err(e),
        (Some(Ok(v)), None) if idle => Ok(v),
        _ => Err(JsonError::syntax(JsonErrorKind::Grammar)),
    }
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

/// A container being parsed.
enum Frame {
    Array(Vec<Value>),
    /// `key` is `None` while the key of a member is being parsed and holds
    /// the key while its value is.
    Object {
        map: Map<String, Value>,
        key: Option<String>,
    },
}

/// Where a failure happened, for choosing QEMU's message.
#[derive(Clone, Copy)]
enum FailAt {
    /// In the innermost open container itself (separator, colon, ...).
    Own,
    /// In a value that the innermost open container (if any) asked for.
    Child,
}

/// QEMU 2.11's parser is recursive, and every level that sees a nested
/// failure overwrites the message with its own.  So the outermost container
/// decides, unless the failure is its own or there is no container.
fn failure(stack: &[Frame], at: FailAt, reason: Option<&str>) -> JsonError {
    let reason = match (stack.first(), at) {
        (None, _) => reason,
        (Some(_), FailAt::Own) if stack.len() == 1 => reason,
        (Some(Frame::Array(_)), _) => Some("expecting value"),
        (Some(Frame::Object { key: None, .. }), _) => Some("key is not a string in object"),
        (Some(Frame::Object { key: Some(_), .. }), _) => Some("Missing value in dict"),
    };
    match reason {
        Some(r) => JsonError::parse(r),
        None => JsonError::syntax(JsonErrorKind::Grammar),
    }
}

struct Cursor<'a> {
    tokens: &'a [TokRec],
    text: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<Tok> {
        self.tokens.get(self.pos).map(|t| t.kind)
    }

    fn next(&mut self) -> Option<Tok> {
        let kind = self.peek()?;
        self.pos += 1;
        Some(kind)
    }

    /// Text of the token just consumed.
    fn last_text(&self) -> &'a [u8] {
        let Some(t) = self.pos.checked_sub(1).and_then(|p| self.tokens.get(p)) else {
            return &[];
        };
        self.text
            .get(t.start as usize..t.end as usize)
            .unwrap_or(&[])
    }
}

enum Step {
    /// Parse a value at the cursor, for the innermost container (or as the
    /// message itself).
    Value,
    /// A value is complete; give it to the innermost container.
    Deliver(Value),
}

fn parse_message(tokens: &[TokRec], text: &[u8]) -> Result<Value, JsonError> {
    let mut cur = Cursor {
        tokens,
        text,
        pos: 0,
    };
    let mut stack: Vec<Frame> = Vec::new();
    let mut step = Step::Value;
    loop {
        step = match step {
            Step::Value => {
                let Some(kind) = cur.peek() else {
                    return Err(failure(&stack, FailAt::Child, Some("premature EOI")));
                };
                match kind {
                    Tok::LCurly => {
                        cur.pos += 1;
                        stack.push(Frame::Object {
                            map: Map::new(),
                            key: None,
                        });
                        match cur.peek() {
                            None => {
                                return Err(failure(&stack, FailAt::Own, Some("premature EOI")))
                            }
                            Some(Tok::RCurly) => {
                                cur.pos += 1;
                                stack.pop();
                                Step::Deliver(Value::Object(Map::new()))
                            }
                            Some(_) => Step::Value,
                        }
                    }
                    Tok::LSquare => {
                        cur.pos += 1;
                        stack.push(Frame::Array(Vec::new()));
                        match cur.peek() {
                            None => {
                                return Err(failure(&stack, FailAt::Own, Some("premature EOI")))
                            }
                            Some(Tok::RSquare) => {
                                cur.pos += 1;
                                stack.pop();
                                Step::Deliver(Value::Array(Vec::new()))
                            }
                            Some(_) => Step::Value,
                        }
                    }
                    Tok::Integer | Tok::Float => {
                        cur.pos += 1;
                        match number_value(cur.last_text(), kind == Tok::Integer) {
                            Some(v) => Step::Deliver(v),
                            None => return Err(failure(&stack, FailAt::Child, None)),
                        }
                    }
                    Tok::Str => {
                        cur.pos += 1;
                        Step::Deliver(Value::String(decode_string(cur.last_text())))
                    }
                    Tok::Keyword => {
                        cur.pos += 1;
                        match cur.last_text() {
                            b"true" => Step::Deliver(Value::Bool(true)),
                            b"false" => Step::Deliver(Value::Bool(false)),
                            b"null" => Step::Deliver(Value::Null),
                            other => {
                                let reason =
                                    format!("invalid keyword '{}'", String::from_utf8_lossy(other));
                                return Err(failure(&stack, FailAt::Child, Some(&reason)));
                            }
                        }
                    }
                    // QMP input has no arguments to interpolate.
                    Tok::Interp => return Err(failure(&stack, FailAt::Child, None)),
                    Tok::RCurly | Tok::RSquare | Tok::Colon | Tok::Comma => {
                        return Err(failure(&stack, FailAt::Child, Some("expecting value")));
                    }
                }
            }
            Step::Deliver(value) => {
                let Some(frame) = stack.last_mut() else {
                    // Like QEMU, tokens after the value (there can be none
                    // given how messages are split) are ignored.
                    return Ok(value);
                };
                match frame {
                    Frame::Array(items) => {
                        items.push(value);
                        match cur.next() {
                            None => {
                                return Err(failure(&stack, FailAt::Own, Some("premature EOI")))
                            }
                            Some(Tok::RSquare) => match stack.pop() {
                                Some(Frame::Array(items)) => Step::Deliver(Value::Array(items)),
                                _ => return Err(JsonError::syntax(JsonErrorKind::Grammar)),
                            },
                            Some(Tok::Comma) => Step::Value,
                            Some(_) => {
                                return Err(failure(
                                    &stack,
                                    FailAt::Own,
                                    Some("expected separator in list"),
                                ))
                            }
                        }
                    }
                    Frame::Object { map, key } => match key.take() {
                        None => {
                            let Value::String(k) = value else {
                                return Err(failure(
                                    &stack,
                                    FailAt::Own,
                                    Some("key is not a string in object"),
                                ));
                            };
                            match cur.next() {
                                None => {
                                    return Err(failure(&stack, FailAt::Own, Some("premature EOI")))
                                }
                                Some(Tok::Colon) => {
                                    *key = Some(k);
                                    Step::Value
                                }
                                Some(_) => {
                                    return Err(failure(
                                        &stack,
                                        FailAt::Own,
                                        Some("missing : in object pair"),
                                    ))
                                }
                            }
                        }
                        Some(k) => {
                            map.insert(k, value);
                            match cur.next() {
                                None => {
                                    return Err(failure(&stack, FailAt::Own, Some("premature EOI")))
                                }
                                Some(Tok::RCurly) => match stack.pop() {
                                    Some(Frame::Object { map, .. }) => {
                                        Step::Deliver(Value::Object(map))
                                    }
                                    _ => return Err(JsonError::syntax(JsonErrorKind::Grammar)),
                                },
                                Some(Tok::Comma) => {
                                    if cur.peek().is_none() {
                                        return Err(failure(
                                            &stack,
                                            FailAt::Own,
                                            Some("premature EOI"),
                                        ));
                                    }
                                    Step::Value
                                }
                                Some(_) => {
                                    return Err(failure(
                                        &stack,
                                        FailAt::Own,
                                        Some("expected separator in dict"),
                                    ))
                                }
                            }
                        }
                    },
                }
            }
        };
    }
}

/// QEMU 2.11: an integer literal is `i64` if it fits, else `u64` if
/// non-negative and it fits, else a double; a float literal is a double.
fn number_value(text: &[u8], integer: bool) -> Option<Value> {
    let s = std::str::from_utf8(text).ok()?;
    if integer {
        if let Ok(i) = s.parse::<i64>() {
            return Some(Value::from(i));
        }
        if !s.starts_with('-') {
            if let Ok(u) = s.parse::<u64>() {
                return Some(Value::from(u));
            }
        }
    }
    let f = s.parse::<f64>().ok()?;
    Number::from_f64(f).map(Value::Number)
}

fn hex4(digits: Option<&[u8]>) -> Option<u32> {
    let digits = digits?;
    if digits.len() != 4 {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, &d| {
        let v = char::from(d).to_digit(16)?;
        Some(acc << 4 | v)
    })
}

/// Decodes a string token (quotes included) that the lexer accepted.
fn decode_string(raw: &[u8]) -> String {
    let body = match raw.len() {
        0 | 1 => &raw[..0],
        n => &raw[1..n - 1],
    };
    let mut out = String::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let rest = &body[i..];
        let run = rest.iter().position(|&c| c == b'\\').unwrap_or(rest.len());
        push_sanitized(&mut out, &rest[..run]);
        i += run;
        let Some(&escape) = body.get(i + 1) else {
            break;
        };
        i += 2;
        match escape {
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'n' => out.push('\n'),
            b'r' => out.push('\r'),
            b't' => out.push('\t'),
            b'u' => {
                let Some(unit) = hex4(body.get(i..i + 4)) else {
                    break;
                };
                i += 4;
                match unit {
                    // QEMU 2.11 appends a C string, so U+0000 vanishes.
                    0 => {}
                    0xD800..=0xDBFF => {
                        let low = if body.get(i..i + 2) == Some(b"\\u") {
                            hex4(body.get(i + 2..i + 6)).filter(|u| (0xDC00..=0xDFFF).contains(u))
                        } else {
                            None
                        };
                        match low {
                            Some(low) => {
                                i += 6;
                                let cp = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                                out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                            }
                            None => out.push('\u{FFFD}'),
                        }
                    }
                    _ => out.push(char::from_u32(unit).unwrap_or('\u{FFFD}')),
                }
            }
            // `"`, `'`, `\`, `/` stand for themselves; the lexer admits no
            // other escape.
            other => out.push(char::from(other)),
        }
    }
    out
}

/// Appends raw string bytes, replacing each ill-formed UTF-8 sequence with
/// U+FFFD the way QEMU's `mod_utf8_codepoint()` delimits them.
fn push_sanitized(out: &mut String, mut bytes: &[u8]) {
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let (ch, used) = decode_one(rest);
                out.push(ch.unwrap_or('\u{FFFD}'));
                bytes = rest.get(used.max(1)..).unwrap_or(&[]);
            }
        }
    }
}

/// One (possibly ill-formed) UTF-8 sequence: its character if valid, and
/// how many bytes it spans.
fn decode_one(bytes: &[u8]) -> (Option<char>, usize) {
    const MIN_CP: [u32; 5] = [0x80, 0x800, 0x10000, 0x20_0000, 0x400_0000];
    let Some(&lead) = bytes.first() else {
        return (None, 0);
    };
    if lead < 0x80 {
        return (Some(char::from(lead)), 1);
    }
    if lead >= 0xFE || lead & 0x40 == 0 {
        return (None, 1);
    }
    let len = lead.leading_ones() as usize;
    let mut cp = u32::from(lead) & (0x7F >> len);
    for k in 1..len {
        match bytes.get(k) {
            Some(&c) if c & 0xC0 == 0x80 => cp = cp << 6 | u32::from(c & 0x3F),
            _ => return (None, k),
        }
    }
    let overlong = MIN_CP.get(len - 2).is_some_and(|&min| cp < min);
    if overlong || (0xD800..=0xDFFF).contains(&cp) {
        return (None, len);
    }
    (char::from_u32(cp), len)
}

// ---------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------

/// The order in which object members are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrder {
    /// QEMU 2.11's: its `QDict` is a 512-bucket hash table iterated bucket
    /// by bucket, each bucket newest member first.  Given members inserted in
    /// the order QEMU inserts them (schema order, as serde produces), this
    /// reproduces QEMU's bytes, e.g. the greeting's
    /// `{"micro": 0, "minor": 11, "major": 2}` and the response's
    /// `{"return": {}, "id": 1}`.
    Qemu,
    /// The map's own order.
    Insertion,
}

/// Compact JSON exactly as QEMU 2.11's `qobject_to_json()` writes it
/// (members in [`KeyOrder::Qemu`] order), without a line terminator.
pub fn to_qmp_string(value: &Value) -> String {
    encode(value, false, KeyOrder::Qemu)
}

/// Pretty JSON exactly as QEMU 2.11's `qobject_to_json_pretty()` writes it
/// (`-mon ...,pretty=on`), without a line terminator.
pub fn to_qmp_string_pretty(value: &Value) -> String {
    encode(value, true, KeyOrder::Qemu)
}

/// What QEMU 2.11's monitor puts on the wire for one QMP reply or event:
/// the JSON text plus a newline, every `\n` (pretty output has several)
/// written as `\r\n`.
pub fn to_qmp_wire(value: &Value, pretty: bool) -> String {
    let json = encode(value, pretty, KeyOrder::Qemu);
    let mut out = String::with_capacity(json.len() + 2);
    for (i, line) in json.split('\n').enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        out.push_str(line);
    }
    out.push_str("\r\n");
    out
}

/// Encodes `value` in QEMU 2.11's format.
pub fn encode(value: &Value, pretty: bool, order: KeyOrder) -> String {
    let mut out = String::new();
    encode_into(&mut out, value, pretty, order);
    out
}

/// Container being written.
enum OutFrame<'a> {
    Array(std::slice::Iter<'a, Value>),
    Object(std::vec::IntoIter<(&'a String, &'a Value)>),
}

/// Appends `value` in QEMU 2.11's format to `out`.  Iterative: any depth is
/// safe.
pub fn encode_into(out: &mut String, value: &Value, pretty: bool, order: KeyOrder) {
    let mut stack: Vec<(OutFrame<'_>, bool)> = Vec::new();
    let mut next = Some(value);
    loop {
        if let Some(v) = next.take() {
            match v {
                Value::Array(items) => {
                    out.push('[');
                    stack.push((OutFrame::Array(items.iter()), true));
                }
                Value::Object(map) => {
                    out.push('{');
                    stack.push((
                        OutFrame::Object(ordered_members(map, order).into_iter()),
                        true,
                    ));
                }
                scalar => write_scalar(out, scalar),
            }
        }
        let depth = stack.len();
        let Some((frame, first)) = stack.last_mut() else {
            return;
        };
        let (member, close) = match frame {
            OutFrame::Array(it) => (it.next().map(|v| (None, v)), ']'),
            OutFrame::Object(it) => (it.next().map(|(k, v)| (Some(k), v)), '}'),
        };
        match member {
            Some((key, v)) => {
                if !*first {
                    out.push_str(if pretty { "," } else { ", " });
                }
                *first = false;
                newline(out, pretty, depth);
                if let Some(k) = key {
                    write_str(out, k);
                    out.push_str(": ");
                }
                next = Some(v);
            }
            None => {
                stack.pop();
                newline(out, pretty, depth - 1);
                out.push(close);
            }
        }
    }
}

fn newline(out: &mut String, pretty: bool, indent: usize) {
    if pretty {
        out.push('\n');
        for _ in 0..indent {
            out.push_str("    ");
        }
    }
}

fn ordered_members(map: &Map<String, Value>, order: KeyOrder) -> Vec<(&String, &Value)> {
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    if order == KeyOrder::Qemu {
        // Stable sort on (bucket, newest first).
        let mut keyed: Vec<(u32, usize, (&String, &Value))> = members
            .into_iter()
            .enumerate()
            .map(|(i, m)| (qdict_bucket(m.0), i, m))
            .collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        members = keyed.into_iter().map(|(_, _, m)| m).collect();
    }
    members
}

/// QEMU's `tdb_hash(key) % QDICT_BUCKET_MAX` (a C string: stops at NUL).
fn qdict_bucket(key: &str) -> u32 {
    let bytes = key.as_bytes();
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let mut value = 0x238F_13AFu32.wrapping_mul(len as u32);
    for (i, &b) in bytes[..len].iter().enumerate() {
        let shift = (i as u32).wrapping_mul(5) % 24;
        value = value.wrapping_add(u32::from(b) << shift);
    }
    1_103_515_243u32.wrapping_mul(value).wrapping_add(12345) % 512
}

fn write_scalar(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        // Containers are handled by the caller.
        Value::Array(_) | Value::Object(_) => {}
    }
}

/// QEMU 2.11's `qnum_to_string()`: integers in decimal; doubles as `%f`
/// with trailing zeros, then a trailing point, removed.
fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        let text = format!("{f:.6}");
        let trimmed = text.trim_end_matches('0');
        out.push_str(trimmed.strip_suffix('.').unwrap_or(trimmed));
    }
}

/// QEMU 2.11's string quoting: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`;
/// other characters below 0x20 or from 0x7F up as `\uXXXX` (upper-case,
/// surrogate pairs beyond the BMP); Unicode noncharacters as `\uFFFD`.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    let mut plain_from = 0;
    for (idx, ch) in s.char_indices() {
        let cp = u32::from(ch);
        let plain = (0x20..0x7F).contains(&cp) && ch != '"' && ch != '\\';
        if plain {
            continue;
        }
        out.push_str(&s[plain_from..idx]);
        plain_from = idx + ch.len_utf8();
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            _ => {
                let noncharacter = (0xFDD0..=0xFDEF).contains(&cp) || cp & 0xFFFE == 0xFFFE;
                let cp = if noncharacter { 0xFFFD } else { cp };
                if cp > 0xFFFF {
                    let v = cp - 0x10000;
                    let _ = write!(
                        out,
                        "\\u{:04X}\\u{:04X}",
                        0xD800 + (v >> 10),
                        0xDC00 + (v & 0x3FF)
                    );
                } else {
                    let _ = write!(out, "\\u{cp:04X}");
                }
            }
        }
    }
    out.push_str(&s[plain_from..]);
    out.push('"');
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    fn feed_all(input: &[u8]) -> Vec<Result<Value, JsonError>> {
        JsonStreamer::new().feed(input)
    }

    fn err(desc: &str) -> Result<Value, String> {
        Err(desc.to_owned())
    }

    fn simplify(items: Vec<Result<Value, JsonError>>) -> Vec<Result<Value, String>> {
        items
            .into_iter()
            .map(|r| r.map_err(|e| e.desc().to_owned()))
            .collect()
    }

    fn run(input: &[u8]) -> Vec<Result<Value, String>> {
        simplify(feed_all(input))
    }

    fn one(input: &str) -> Result<Value, String> {
        let mut items = run(input.as_bytes());
        assert_eq!(items.len(), 1, "input {input:?} gave {items:?}");
        items.remove(0)
    }

    fn parse_err(reason: &str) -> Result<Value, String> {
        err(&format!("JSON parse error, {reason}"))
    }

    #[test]
    fn split_at_every_boundary() {
        let stream: &[u8] =
            b"{\"execute\": \"qmp_capabilities\", \"id\": 'a\\'b'}\r\n  {\"execute\":\"query-status\",\"arguments\":{\"x\":[1,-2.5e3,true,null]}}\n";
        let expected = vec![
            Ok(json!({"execute": "qmp_capabilities", "id": "a'b"})),
            Ok(json!({"execute": "query-status", "arguments": {"x": [1, -2500.0, true, null]}})),
        ];
        for cut in 0..=stream.len() {
            let mut s = JsonStreamer::new();
            let mut got = s.feed(&stream[..cut]);
            got.extend(s.feed(&stream[cut..]));
            assert_eq!(simplify(got), expected, "cut at {cut}");
            assert!(s.is_idle());
        }
        for cut1 in 0..stream.len() {
            for cut2 in cut1..=stream.len() {
                let mut s = JsonStreamer::new();
                let mut got = s.feed(&stream[..cut1]);
                got.extend(s.feed(&stream[cut1..cut2]));
                got.extend(s.feed(&stream[cut2..]));
                assert_eq!(simplify(got), expected, "cuts at {cut1}, {cut2}");
            }
        }
        let mut s = JsonStreamer::new();
        let mut got = Vec::new();
        for b in stream {
            got.extend(s.feed(std::slice::from_ref(b)));
        }
        assert_eq!(simplify(got), expected);
    }

    #[test]
    fn whitespace_and_back_to_back() {
        assert_eq!(
            run(b"\n\n  \t{\"a\":1}{\"b\":2}\r\n\r\n[]  {}\n"),
            vec![
                Ok(json!({"a": 1})),
                Ok(json!({"b": 2})),
                Ok(json!([])),
                Ok(json!({}))
            ]
        );
        // Top-level scalars are messages too; numbers and keywords wait for
        // the byte after them.
        let mut s = JsonStreamer::new();
        assert_eq!(simplify(s.feed(b"\"x\" 42")), vec![Ok(json!("x"))]);
        assert_eq!(simplify(s.feed(b" true")), vec![Ok(json!(42))]);
        assert!(!s.is_idle());
        assert_eq!(simplify(s.flush()), vec![Ok(json!(true))]);
        assert!(s.is_idle());
        assert_eq!(
            run(b"1 2,3"),
            vec![Ok(json!(1)), Ok(json!(2)), parse_err("expecting value")]
        );
    }

    #[test]
    fn single_quoted_strings() {
        assert_eq!(one("'abc' "), Ok(json!("abc")));
        assert_eq!(one(r#"'it\'s "quoted"' "#), Ok(json!("it's \"quoted\"")));
        assert_eq!(one(r#""it's \'x\' \"y\"" "#), Ok(json!("it's 'x' \"y\"")));
        assert_eq!(
            one(r#"{'execute': 'stop'}"#),
            Ok(json!({"execute": "stop"}))
        );
        assert_eq!(one(r#"'\/\\\b\f\n\r\t'"#), Ok(json!("/\\\u{8}\u{c}\n\r\t")));
    }

    #[test]
    fn unicode() {
        assert_eq!(one(r#""\u00e9\u00E9\u20AC""#), Ok(json!("éé€")));
        assert_eq!(one(r#""\u00e9\u20ac""#), Ok(json!("é€")));
        // Surrogate pair, and raw UTF-8.
        assert_eq!(one(r#""\ud83d\ude00 😀""#), Ok(json!("😀 😀")));
        // Lone surrogates.
        assert_eq!(one(r#""a\ud83db""#), Ok(json!("a\u{FFFD}b")));
        assert_eq!(one(r#""a\ude00b""#), Ok(json!("a\u{FFFD}b")));
        assert_eq!(one(r#""\ud83d\u0041""#), Ok(json!("\u{FFFD}A")));
        // \u0000 vanishes, as in QEMU 2.11.
        assert_eq!(one(r#""a\u0000b""#), Ok(json!("ab")));
        // Ill-formed raw UTF-8 becomes U+FFFD, one per sequence.
        assert_eq!(
            run(b"\"a\x80b\xed\xa0\x80c\xe2\x82\"\n"),
            vec![Ok(json!("a\u{FFFD}b\u{FFFD}c\u{FFFD}"))]
        );
        // Bad escapes are lexical errors.
        assert_eq!(run(br#""\x" {"a":1}"#)[0], err(INVALID_JSON_SYNTAX));
        assert_eq!(run(br#""\u12G4""#)[0], err(INVALID_JSON_SYNTAX));
        // Raw control characters are accepted inside strings (QEMU 2.11).
        assert_eq!(one("\"a\nb\tc\u{1}\""), Ok(json!("a\nb\tc\u{1}")));
        // A NUL byte is not.
        // A NUL byte is not; lexing restarts after it (here `b` is then
        // a keyword, and the closing quote opens a new string).
        let mut s = JsonStreamer::new();
        assert_eq!(
            simplify(s.feed(b"\"a\x00b\" ")),
            vec![err(INVALID_JSON_SYNTAX), parse_err("invalid keyword 'b'")]
        );
        assert!(!s.is_idle());
    }

    #[test]
    fn numbers() {
        let v = one("[0, -0, 42, -1, 9223372036854775807, -9223372036854775808, 9223372036854775808, 18446744073709551615, 18446744073709551616, -9223372036854775809, 1.5, 1e3, 1E+3, 2.5e-3, -0.0, 1e-400]");
        let Ok(Value::Array(items)) = v else {
            panic!("not an array: {v:?}");
        };
        assert_eq!(items[0].as_i64(), Some(0));
        assert_eq!(items[1].as_i64(), Some(0));
        assert_eq!(items[2].as_i64(), Some(42));
        assert_eq!(items[3].as_i64(), Some(-1));
        assert_eq!(items[4].as_i64(), Some(i64::MAX));
        assert_eq!(items[5].as_i64(), Some(i64::MIN));
        assert!(items[6].is_u64() && !items[6].is_i64());
        assert_eq!(items[6].as_u64(), Some(1 << 63));
        assert_eq!(items[7].as_u64(), Some(u64::MAX));
        assert!(items[8].is_f64());
        assert_eq!(items[8].as_f64(), Some(18446744073709551616.0));
        assert!(items[9].is_f64());
        assert_eq!(items[9].as_f64(), Some(-9223372036854775809.0));
        for (i, f) in [(10, 1.5), (11, 1000.0), (12, 1000.0), (13, 0.0025)] {
            assert!(items[i].is_f64(), "item {i}");
            assert_eq!(items[i].as_f64(), Some(f));
        }
        assert!(items[14]
            .as_f64()
            .is_some_and(|f| f == 0.0 && f.is_sign_negative()));
        assert_eq!(items[15].as_f64(), Some(0.0));
        // Lexical errors: a leading zero, a bare '-', '1.', '1e'.
        for bad in ["0123 ", "- ", "1. ", "1e ", "1e+ ", ".5 ", "+1 "] {
            assert_eq!(run(bad.as_bytes())[0], err(INVALID_JSON_SYNTAX), "{bad:?}");
        }
        // Out of range for a double.
        assert_eq!(one("1e400 "), err(INVALID_JSON_SYNTAX));
        assert_eq!(one("[1e400]"), parse_err("expecting value"));
    }

    #[test]
    fn keywords() {
        assert_eq!(one("true "), Ok(json!(true)));
        assert_eq!(one("false "), Ok(json!(false)));
        assert_eq!(one("null "), Ok(json!(null)));
        assert_eq!(one("nul "), parse_err("invalid keyword 'nul'"));
        let long = "x".repeat(5000);
        let Err(e) = one(&format!("{long} ")) else {
            panic!("accepted");
        };
        assert_eq!(e.len(), "JSON parse error, ".len() + MAX_REASON_LEN);
    }

    #[test]
    fn grammar_errors() {
        let cases: &[(&str, &str)] = &[
            (r#"{"a" 1}"#, "missing : in object pair"),
            (r#"{"a":}"#, "Missing value in dict"),
            (r#"{"a":1,}"#, "key is not a string in object"),
            (r#"{1:2}"#, "key is not a string in object"),
            (r#"{{}:2}"#, "key is not a string in object"),
            (r#"{,}"#, "key is not a string in object"),
            (r#"{"a":1 "b":2}"#, "expected separator in dict"),
            (r#"[1,]"#, "expecting value"),
            (r#"[,1]"#, "expecting value"),
            (r#"[1 2]"#, "expected separator in list"),
            (r#"[1:2]"#, "expected separator in list"),
            (r#"[}"#, "expecting value"),
            (r#"{"a":1]"#, "expected separator in dict"),
            (r#"{"a": [1 2]}"#, "Missing value in dict"),
            (r#"[{"a" 1}]"#, "expecting value"),
            (r#"{"a": {"b" 1}}"#, "Missing value in dict"),
            (r#"{"a": {"b": 1}, "c": [nul]}"#, "Missing value in dict"),
            (r#"[[[[nope]]]]"#, "expecting value"),
            (r#"}"#, "expecting value"),
            (r#"]"#, "expecting value"),
            (r#":"#, "expecting value"),
            (r#","#, "expecting value"),
            (r#"{"execute": foo}"#, "Missing value in dict"),
        ];
        for (input, reason) in cases {
            let got = run(input.as_bytes());
            assert_eq!(got.first(), Some(&parse_err(reason)), "input {input}");
        }
        assert_eq!(one("%d"), err(INVALID_JSON_SYNTAX));
        assert_eq!(one("[%lld]"), parse_err("expecting value"));
        assert_eq!(one("{%s: 1}"), parse_err("key is not a string in object"));
        // Duplicate keys: the last value wins, in the first one's place.
        assert_eq!(one(r#"{"a":1,"b":2,"a":3}"#), Ok(json!({"a": 3, "b": 2})));
        let Ok(Value::Object(m)) = one(r#"{"z":1,"a":2,"z":3}"#) else {
            panic!("not an object");
        };
        assert_eq!(m.keys().collect::<Vec<_>>(), ["z", "a"]);
    }

    #[test]
    fn errors_then_recovery() {
        let ok = Ok(json!({"execute": "x"}));
        assert_eq!(
            run(b"garbage\n{\"execute\":\"x\"}"),
            vec![parse_err("invalid keyword 'garbage'"), ok.clone()]
        );
        assert_eq!(
            run(b"}{\"execute\":\"x\"}"),
            vec![parse_err("expecting value"), ok.clone()]
        );
        assert_eq!(
            run(b"@{\"execute\":\"x\"}"),
            vec![err(INVALID_JSON_SYNTAX), ok.clone()]
        );
        assert_eq!(
            run(b"\xff\xfe{\"execute\":\"x\"}"),
            vec![
                err(INVALID_JSON_SYNTAX),
                err(INVALID_JSON_SYNTAX),
                ok.clone()
            ]
        );
        // 0xFF in the middle of a message throws the message away.
        assert_eq!(
            run(b"{\"execute\": \xff{\"execute\":\"x\"}"),
            vec![err(INVALID_JSON_SYNTAX), ok.clone()]
        );
        // A lexical error inside a value fails it; what follows is lexed
        // afresh, as in QEMU 2.11 (the stray '}' is a second error).
        assert_eq!(
            run(b"{\"a\": @}\n{\"execute\":\"x\"}"),
            vec![
                err(INVALID_JSON_SYNTAX),
                parse_err("expecting value"),
                ok.clone()
            ]
        );
        // An upper-case letter is not a keyword byte.
        assert_eq!(
            run(b"Garbage {\"execute\":\"x\"}"),
            vec![
                err(INVALID_JSON_SYNTAX),
                parse_err("invalid keyword 'arbage'"),
                ok.clone()
            ]
        );
        assert_eq!(
            run(b"{\"a\":1,}{\"execute\":\"x\"}"),
            vec![parse_err("key is not a string in object"), ok.clone()]
        );
        // Non-ASCII right after a number or keyword.
        assert_eq!(
            run(b"1\xc3\xa9 {\"execute\":\"x\"}"),
            vec![
                err(INVALID_JSON_SYNTAX),
                err(INVALID_JSON_SYNTAX),
                ok.clone()
            ]
        );
        // Unterminated string + 0xFF resynchronises.
        assert_eq!(
            run(b"{\"execute\": \"oops\n\xff{\"execute\":\"x\"}"),
            vec![err(INVALID_JSON_SYNTAX), ok.clone()]
        );
        // Flush of a partial token is a lexical error.
        let mut s = JsonStreamer::new();
        assert!(s.feed(b"{\"a\": \"unfinished").is_empty());
        assert_eq!(simplify(s.flush()), vec![err(INVALID_JSON_SYNTAX)]);
        assert!(s.is_idle());
        assert_eq!(simplify(s.feed(b"{\"execute\":\"x\"}")), vec![ok]);
    }

    #[test]
    fn reset_forgets_pending() {
        let mut s = JsonStreamer::new();
        assert!(s.feed(b"{\"a\": [1, 'x").is_empty());
        s.reset();
        assert!(s.is_idle());
        assert_eq!(simplify(s.feed(b"{\"b\":2}")), vec![Ok(json!({"b": 2}))]);
    }

    fn nested(depth: usize) -> Vec<u8> {
        let mut v = vec![b'['; depth];
        v.extend(std::iter::repeat_n(b']', depth));
        v
    }

    #[test]
    fn nesting_limit() {
        let Ok(v) = one(std::str::from_utf8(&nested(MAX_NESTING)).unwrap_or_default()) else {
            panic!("1024 deep rejected");
        };
        let mut depth = 0;
        let mut cur = &v;
        while let Some(inner) = cur.as_array().and_then(|a| a.first()) {
            depth += 1;
            cur = inner;
        }
        assert_eq!(depth, MAX_NESTING - 1);

        let mut input = nested(MAX_NESTING + 1);
        input.extend_from_slice(b"{\"execute\":\"x\"}");
        let got = feed_all(&input);
        assert_eq!(got.len(), 2, "{:?}", simplify(got.clone()));
        assert!(
            matches!(&got[0], Err(e) if e.kind() == JsonErrorKind::Limit && e.desc() == INVALID_JSON_SYNTAX)
        );
        assert_eq!(got[1], Ok(json!({"execute": "x"})));

        // Mixed objects and arrays count together.
        let mut mixed = Vec::new();
        for _ in 0..MAX_NESTING / 2 {
            mixed.extend_from_slice(b"{\"a\":[");
        }
        mixed.extend_from_slice(b"1");
        for _ in 0..MAX_NESTING / 2 {
            mixed.extend_from_slice(b"]}");
        }
        assert!(matches!(
            one(std::str::from_utf8(&mixed).unwrap_or_default()),
            Ok(Value::Object(_))
        ));
        let mut deeper = b"[".to_vec();
        deeper.extend_from_slice(&mixed);
        deeper.extend_from_slice(b"]");
        assert_eq!(run(&deeper), vec![err(INVALID_JSON_SYNTAX)]);
    }

    #[test]
    fn very_deep_input_does_not_recurse() {
        let depth = 100_000;
        let mut input = nested(depth);
        input.extend_from_slice(b"[1]");
        let mut s = JsonStreamer::new();
        let mut got = Vec::new();
        for chunk in input.chunks(4093) {
            got.extend(s.feed(chunk));
        }
        assert_eq!(
            simplify(got),
            vec![err(INVALID_JSON_SYNTAX), Ok(json!([1]))]
        );
        // Unclosed: the streamer stays in the skipped message, 0xFF resets.
        let mut s = JsonStreamer::new();
        assert_eq!(
            simplify(s.feed(&vec![b'{'; depth])),
            vec![err(INVALID_JSON_SYNTAX)]
        );
        assert!(!s.is_idle());
        assert_eq!(simplify(s.feed(b"\xff[2]")), vec![Ok(json!([2]))]);
        // Encoding a deep value does not recurse either.
        let mut deep = json!(0);
        for _ in 0..50 {
            deep = json!([deep]);
        }
        assert_eq!(
            to_qmp_string(&deep),
            format!("{}0{}", "[".repeat(50), "]".repeat(50))
        );
    }

    #[test]
    fn size_limit_with_recovery() {
        let limits = Limits {
            max_message_size: 100,
            ..Limits::default()
        };
        let mut s = JsonStreamer::with_limits(limits);
        // Exactly at the limit: accepted.  Token bytes count, whitespace not.
        let exact = format!("{{\"a\" : \"{}\"}}", "x".repeat(100 - 8));
        assert_eq!(simplify(s.feed(exact.as_bytes())).len(), 1);
        let spaced = format!("{{ \"a\" :   \"{}\" }}", "x".repeat(100 - 8));
        assert!(matches!(&s.feed(spaced.as_bytes())[..], [Ok(_)]));
        // One byte more, inside a string: rejected, then skipped.
        let over = format!(
            "{{\"a\":\"{}\", \"b\": [1, {{}}]}}{{\"execute\":\"x\"}}",
            "x".repeat(100)
        );
        let mut got = Vec::new();
        for chunk in over.as_bytes().chunks(7) {
            got.extend(s.feed(chunk));
        }
        assert_eq!(
            simplify(got),
            vec![err(INVALID_JSON_SYNTAX), Ok(json!({"execute": "x"}))]
        );
        // A top-level scalar over the limit.
        let big = format!("'{}' 7 ", "y".repeat(500));
        assert_eq!(
            simplify(s.feed(big.as_bytes())),
            vec![err(INVALID_JSON_SYNTAX), Ok(json!(7))]
        );
        // Many small tokens.
        let many = format!("[{}1]{{}}", "1,".repeat(60));
        assert_eq!(
            simplify(s.feed(many.as_bytes())),
            vec![err(INVALID_JSON_SYNTAX), Ok(json!({}))]
        );
        assert!(s.is_idle());

        let mut s = JsonStreamer::with_limits(Limits {
            max_token_count: 10,
            ..Limits::default()
        });
        assert!(matches!(&s.feed(b"[1,2,3,4]")[..], [Ok(_)]));
        assert_eq!(
            simplify(s.feed(b"[1,2,3,4,5,6] 6 ")),
            vec![err(INVALID_JSON_SYNTAX), Ok(json!(6))]
        );
    }

    #[test]
    fn real_size_limit() {
        // A string one byte over 64 MiB, fed in 64 KiB reads.
        let mut input = Vec::with_capacity(MAX_MESSAGE_SIZE + 64);
        input.extend_from_slice(b"{\"execute\": \"");
        input.resize(MAX_MESSAGE_SIZE + 1, b'z');
        input.extend_from_slice(b"\"}\n{\"execute\":\"x\"}");
        let mut s = JsonStreamer::new();
        let mut got = Vec::new();
        for chunk in input.chunks(64 << 10) {
            got.extend(s.feed(chunk));
        }
        assert_eq!(
            simplify(got),
            vec![err(INVALID_JSON_SYNTAX), Ok(json!({"execute": "x"}))]
        );
        assert!(s.text.capacity() <= RETAINED_CAPACITY);
    }

    #[test]
    fn ten_mib_string_is_fast() {
        let payload = "ab\\\"é".repeat(2 << 20);
        let line = format!("{{\"execute\": \"x\", \"arguments\": {{\"data\": \"{payload}\"}}}}\n");
        assert!(line.len() > 10 << 20);
        for chunk_size in [line.len(), 4096, 1000] {
            let start = Instant::now();
            let mut s = JsonStreamer::new();
            let mut got = Vec::new();
            for chunk in line.as_bytes().chunks(chunk_size) {
                got.extend(s.feed(chunk));
            }
            let elapsed = start.elapsed();
            assert_eq!(got.len(), 1);
            let data = got[0]
                .as_ref()
                .ok()
                .and_then(|v| v["arguments"]["data"].as_str())
                .map(str::len);
            assert_eq!(data, Some("ab\"é".len() * (2 << 20)));
            assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
        }
    }

    #[test]
    fn never_panics_on_noise() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"{}[]:,\"'\\u0123456789abcdefABCDEF-+.eE%ldI64 \n\t\x00\x7f\x80\xbf\xc0\xc3\xe2\xed\xf0\xf4\xf5\xfe\xff";
        let valid = b"{\"execute\":\"x\"}";
        for _ in 0..2000 {
            let len = (rand() % 64) as usize;
            let noise: Vec<u8> = (0..len)
                .map(|_| alphabet[(rand() % alphabet.len() as u64) as usize])
                .collect();
            let mut s = JsonStreamer::with_limits(Limits {
                max_message_size: 40,
                max_token_count: 12,
                max_nesting: 4,
            });
            let mut pos = 0;
            while pos < noise.len() {
                let n = 1 + (rand() % 8) as usize;
                let end = (pos + n).min(noise.len());
                for item in s.feed(&noise[pos..end]).into_iter().flatten() {
                    // Whatever parses must encode.
                    let _ = to_qmp_string_pretty(&item);
                }
                pos = end;
            }
            let _ = s.flush();
            // 0xFF always brings the streamer back.
            let got = s.feed(b"\xff");
            assert!(got.len() <= 1);
            assert_eq!(simplify(s.feed(valid)), vec![Ok(json!({"execute": "x"}))]);
        }
    }

    #[test]
    fn parse_value_helper() {
        assert_eq!(parse_value(b" {\"a\": [1]} "), Ok(json!({"a": [1]})));
        assert_eq!(parse_value(b"42"), Ok(json!(42)));
        assert!(parse_value(b"1 2").is_err());
        assert!(parse_value(b"{\"a\":").is_err());
        assert!(parse_value(b"").is_err());
    }

    #[test]
    fn encoder_matches_qemu_bytes() {
        assert_eq!(to_qmp_string(&json!({"return": {}})), r#"{"return": {}}"#);
        assert_eq!(
            to_qmp_string(&json!({"id": "a", "return": []})),
            r#"{"return": [], "id": "a"}"#
        );
        assert_eq!(
            to_qmp_string(
                &json!({"QMP": {"version": {"qemu": {"major": 2, "minor": 11, "micro": 0}, "package": ""}, "capabilities": []}})
            ),
            r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 11, "major": 2}, "package": ""}, "capabilities": []}}"#
        );
        assert_eq!(
            to_qmp_string(
                &json!({"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}})
            ),
            r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}"#
        );
        assert_eq!(
            to_qmp_string(
                &json!({"error": {"class": "GenericError", "desc": "Invalid JSON syntax"}})
            ),
            r#"{"error": {"class": "GenericError", "desc": "Invalid JSON syntax"}}"#
        );
        // Same-bucket members come newest first: QEMU inserts running,
        // singlestep, status (schema order) and prints status, singlestep,
        // running.
        assert_eq!(
            to_qmp_string(
                &json!({"return": {"running": true, "singlestep": false, "status": "running"}})
            ),
            r#"{"return": {"status": "running", "singlestep": false, "running": true}}"#
        );
        assert_eq!(
            encode(&json!({"b": 1, "a": [1, 2]}), false, KeyOrder::Insertion),
            r#"{"b": 1, "a": [1, 2]}"#
        );
        // Numbers.
        assert_eq!(
            to_qmp_string(&json!([0, -1, i64::MIN, u64::MAX, 1.5, 2.0, 0.1, -0.0, 1e-7, 123456.7890125, 1e20, 0.0078125])),
            "[0, -1, -9223372036854775808, 18446744073709551615, 1.5, 2, 0.1, -0, 0, 123456.789012, 100000000000000000000, 0.007812]"
        );
        // Strings.
        assert_eq!(
            to_qmp_string(&json!(
                "a\"b\\c/d\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f} é€😀\u{fffe}\u{fdd0}\u{1fffe}\u{0}"
            )),
            r#""a\"b\\c/d\b\f\n\r\t\u0001\u001F\u007F \u00E9\u20AC\uD83D\uDE00\uFFFD\uFFFD\uFFFD\u0000""#
        );
        // Pretty.
        let v = json!({"return": {"running": true, "status": "running", "list": [1, {}, []]}});
        assert_eq!(
            encode(&v, true, KeyOrder::Insertion),
            "{\n    \"return\": {\n        \"running\": true,\n        \"status\": \"running\",\n        \"list\": [\n            1,\n            {\n            },\n            [\n            ]\n        ]\n    }\n}"
        );
        assert_eq!(to_qmp_string_pretty(&json!({})), "{\n}");
        assert_eq!(to_qmp_string_pretty(&json!([])), "[\n]");
        assert_eq!(to_qmp_string_pretty(&json!(5)), "5");
        assert_eq!(
            to_qmp_wire(&json!({"return": {}}), false),
            "{\"return\": {}}\r\n"
        );
        assert_eq!(
            to_qmp_wire(&json!({"return": {}}), true),
            "{\r\n    \"return\": {\r\n    }\r\n}\r\n"
        );
    }

    #[test]
    fn round_trip() {
        let v = json!({"s": "x\u{1}é😀", "n": [1, -2, 3.25, u64::MAX], "o": {"t": true, "f": false, "z": null}});
        let text = to_qmp_string(&v);
        assert_eq!(parse_value(text.as_bytes()), Ok(v.clone()));
        let pretty = to_qmp_string_pretty(&v);
        assert_eq!(parse_value(pretty.as_bytes()), Ok(v));
    }
}
