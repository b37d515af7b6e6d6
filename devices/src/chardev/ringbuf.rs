//! The `ringbuf` (and `memory`) backend: what the frontend writes is kept
//! in a ring of a power-of-two size, the oldest bytes overwritten first;
//! `ringbuf-write` adds to the same ring and `ringbuf-read` takes from it.
//! Also the base64 coding those two commands use.

/// QEMU's default ring size.
pub const DEFAULT_SIZE: u64 = 65536;

pub struct Ring {
    buf: Vec<u8>,
    /// Total bytes ever written and read; their difference is the fill.
    prod: u64,
    cons: u64,
}

impl Ring {
    /// `size` must be a power of two (checked by the caller, with QEMU's
    /// error).
    pub fn new(size: usize) -> Ring {
        Ring {
            buf: vec![0; size],
            prod: 0,
            cons: 0,
        }
    }

    fn mask(&self) -> u64 {
        self.buf.len() as u64 - 1
    }

    /// Appends everything; when full, the oldest bytes are lost.
    pub fn write(&mut self, data: &[u8]) {
        let size = self.buf.len() as u64;
        for &b in data {
            let at = (self.prod & self.mask()) as usize;
            self.buf[at] = b;
            self.prod += 1;
            if self.prod - self.cons > size {
                self.cons = self.prod - size;
            }
        }
    }

    pub fn count(&self) -> usize {
        (self.prod - self.cons) as usize
    }

    /// Takes up to `max` of the oldest bytes.
    pub fn read(&mut self, max: usize) -> Vec<u8> {
        let n = max.min(self.count());
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.buf[(self.cons & self.mask()) as usize]);
            self.cons += 1;
        }
        out
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(ALPHABET[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn rank(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        b'=' => Some(0),
        _ => None,
    }
}

/// Decodes as QEMU's `qbase64_decode`: only the base64 alphabet, `=` and
/// newlines are allowed; decoding itself is lenient (an incomplete last
/// group is dropped, each trailing `=` drops one byte).
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    // The text is a C string in QEMU: it ends at the first NUL.
    let text = text.split('\0').next().unwrap_or_default();
    if !text.bytes().all(|c| c == b'\n' || rank(c).is_some()) {
        return Err("Base64 data contains invalid characters".into());
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut saved, mut n) = (0u32, 0);
    for c in text.bytes() {
        if let Some(r) = rank(c) {
            saved = (saved << 6) | r;
            n += 1;
            if n == 4 {
                out.extend_from_slice(&[(saved >> 16) as u8, (saved >> 8) as u8, saved as u8]);
                saved = 0;
                n = 0;
            }
        }
    }
    let padding = text
        .bytes()
        .rev()
        .filter(|c| *c != b'\n')
        .take(2)
        .take_while(|c| *c == b'=')
        .count();
    out.truncate(out.len().saturating_sub(padding));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_overwrites_oldest() {
        let mut r = Ring::new(4);
        r.write(b"abcdef");
        assert_eq!(r.count(), 4);
        assert_eq!(r.read(2), b"cd");
        r.write(b"gh");
        assert_eq!(r.read(100), b"efgh");
        assert!(r.read(1).is_empty());
    }

    #[test]
    fn base64_round_trip() {
        for s in [&b""[..], b"a", b"ab", b"abc", b"abcd", b"\0\xff\x10"] {
            assert_eq!(base64_decode(&base64_encode(s)).unwrap(), s);
        }
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
        assert_eq!(base64_decode("aGVs\nbG8=").unwrap(), b"hello");
        assert_eq!(
            base64_decode("a*b").unwrap_err(),
            "Base64 data contains invalid characters"
        );
    }
}
