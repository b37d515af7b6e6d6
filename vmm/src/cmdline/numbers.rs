//! Number and size parsing with the semantics of QEMU's `qemu_strtou64`
//! (C `strtoull` with base 0, whole string) and `qemu_strtosz` (a
//! floating-point value with an optional binary suffix).

/// Why a number did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumError {
    /// Not a number, or trailing characters.
    Invalid,
    /// A number, but out of range.
    Range,
}

fn skip_space(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
        i += 1;
    }
    i
}

/// What strtol reads before the digits: white space, an optional sign
/// and the base prefix. Returns (negative, radix, where the digits start).
fn sign_and_radix(b: &[u8]) -> (bool, u32, usize) {
    let mut i = skip_space(b, 0);
    let mut negative = false;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        negative = b[i] == b'-';
        i += 1;
    }
    let (radix, start) = detect_radix(b, i);
    (negative, radix, start)
}

/// Parses an unsigned 64-bit integer the way `strtoull(s, &end, 0)`
/// does, requiring that the whole string is consumed: leading white
/// space, an optional sign (a minus negates modulo 2^64), and a `0x`
/// (hex) or `0` (octal) prefix select the base.
pub fn parse_u64(s: &str) -> Result<u64, NumError> {
    let b = s.as_bytes();
    let (negative, radix, start) = sign_and_radix(b);
    let (value, end, overflow) = accumulate(b, start, radix);
    if end == start || end != b.len() {
        return Err(NumError::Invalid);
    }
    if overflow {
        return Err(NumError::Range);
    }
    Ok(if negative {
        value.wrapping_neg()
    } else {
        value
    })
}

/// Parses a signed 64-bit integer like `strtoll(s, &end, 0)` over the
/// whole string.
pub fn parse_i64(s: &str) -> Result<i64, NumError> {
    let b = s.as_bytes();
    let (negative, radix, start) = sign_and_radix(b);
    let (value, end, overflow) = accumulate(b, start, radix);
    if end == start || end != b.len() {
        return Err(NumError::Invalid);
    }
    let limit = if negative {
        i64::MIN.unsigned_abs()
    } else {
        i64::MAX as u64
    };
    if overflow || value > limit {
        return Err(NumError::Range);
    }
    Ok(if negative {
        (value as i64).wrapping_neg()
    } else {
        value as i64
    })
}

/// The value C's `strtol(s, NULL, 0)` gives: the longest prefix that
/// is a number (0 when none is), clamped to the 64-bit range on
/// overflow.
pub fn strtol_prefix(s: &str) -> i64 {
    let b = s.as_bytes();
    let (negative, radix, start) = sign_and_radix(b);
    let (value, _, overflow) = accumulate(b, start, radix);
    match (negative, overflow) {
        (false, true) => i64::MAX,
        (true, true) => i64::MIN,
        (false, false) => i64::try_from(value).unwrap_or(i64::MAX),
        (true, false) if value > i64::MIN.unsigned_abs() => i64::MIN,
        (true, false) => (value as i64).wrapping_neg(),
    }
}

/// Returns the radix and the index of the first digit.  For octal the
/// leading `0` is itself a digit, which `accumulate` handles by
/// starting one position earlier.
fn detect_radix(b: &[u8], i: usize) -> (u32, usize) {
    if b.get(i) != Some(&b'0') {
        return (10, i);
    }
    let x = matches!(b.get(i + 1), Some(b'x' | b'X'));
    if x && b.get(i + 2).is_some_and(|c| c.is_ascii_hexdigit()) {
        (16, i + 2)
    } else {
        (8, i)
    }
}

fn accumulate(b: &[u8], start: usize, radix: u32) -> (u64, usize, bool) {
    let mut value: u64 = 0;
    let mut overflow = false;
    let mut i = start;
    while i < b.len() {
        let Some(d) = (b[i] as char).to_digit(radix) else {
            break;
        };
        match value
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(u64::from(d)))
        {
            Some(v) => value = v,
            None => overflow = true,
        }
        i += 1;
    }
    (value, i, overflow)
}

/// Parses the longest prefix of `s` that C's `strtod` would accept
/// (decimal or hexadecimal integer/fraction with exponent, `inf`,
/// `nan`).  Returns the value and the number of bytes consumed, or
/// `None` when nothing was consumed.
pub fn strtod_prefix(s: &str) -> Option<(f64, usize)> {
    let b = s.as_bytes();
    let lead = skip_space(b, 0);
    let mut i = lead;
    let negative = i < b.len() && b[i] == b'-';
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let sign = if negative { -1.0 } else { 1.0 };
    let rest = &s[i..];
    let lower = rest.to_ascii_lowercase();
    if lower.starts_with("infinity") {
        return Some((sign * f64::INFINITY, i + 8));
    }
    if lower.starts_with("inf") {
        return Some((sign * f64::INFINITY, i + 3));
    }
    if lower.starts_with("nan") {
        return Some((f64::NAN, i + 3));
    }
    if lower.starts_with("0x") && b.get(i + 2).is_some_and(|c| c.is_ascii_hexdigit()) {
        let (v, end, _) = accumulate(b, i + 2, 16);
        return Some((sign * v as f64, end));
    }
    let end = decimal_float_end(b, i)?;
    let text = &s[i..end];
    let v: f64 = text.parse().ok()?;
    Some((sign * v, end))
}

/// End index of a decimal floating-point lexeme starting at `i`.
fn decimal_float_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    let mut digits = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            i = j;
        }
    }
    Some(i)
}

/// Multiplier for a size suffix letter (case-insensitive), binary units.
fn suffix_multiplier(c: u8) -> Option<f64> {
    let exp = match c.to_ascii_uppercase() {
        b'B' => 0,
        b'K' => 1,
        b'M' => 2,
        b'G' => 3,
        b'T' => 4,
        b'P' => 5,
        b'E' => 6,
        _ => return None,
    };
    Some(1024f64.powi(exp))
}

/// Parses a size the way QEMU's `qemu_strtosz` does: a number (which
/// may have a fraction only when a suffix other than `B` follows), an
/// optional suffix `B`, `K`, `M`, `G`, `T`, `P` or `E` (any case,
/// powers of 1024), nothing after.  Values of 2^64 - 1024 and above
/// and negative values are out of range.
pub fn parse_size(s: &str) -> Result<u64, NumError> {
    let (val, mut end) = strtod_prefix(s).ok_or(NumError::Invalid)?;
    if val.is_nan() {
        return Err(NumError::Invalid);
    }
    let has_fraction = val.fract() != 0.0 && val.is_finite();
    let mul = match s.as_bytes().get(end).copied().and_then(suffix_multiplier) {
        Some(m) => {
            end += 1;
            m
        }
        None => 1.0,
    };
    let result = if mul == 1.0 && has_fraction {
        Err(NumError::Invalid)
    } else if val * mul >= 18446744073709550592.0 || val < 0.0 {
        Err(NumError::Range)
    } else {
        Ok((val * mul) as u64)
    };
    if end != s.len() {
        return Err(NumError::Invalid);
    }
    result
}

/// Parses a finite floating-point number over the whole string.
pub fn parse_f64(s: &str) -> Result<f64, NumError> {
    match strtod_prefix(s) {
        Some((v, end)) if end == s.len() && v.is_finite() => Ok(v),
        Some((v, end)) if end == s.len() && v.is_infinite() => Err(NumError::Range),
        _ => Err(NumError::Invalid),
    }
}

#[cfg(test)]
mod strtol_tests {
    use super::strtol_prefix;

    #[test]
    fn strtol_reads_the_longest_number_prefix() {
        assert_eq!(strtol_prefix("12"), 12);
        assert_eq!(strtol_prefix(" -0x10z"), -16);
        assert_eq!(strtol_prefix("010"), 8);
        assert_eq!(strtol_prefix("5px"), 5);
        assert_eq!(strtol_prefix("x"), 0);
        assert_eq!(strtol_prefix("0x"), 0);
        assert_eq!(strtol_prefix("99999999999999999999"), i64::MAX);
        assert_eq!(strtol_prefix("-99999999999999999999"), i64::MIN);
    }
}
