//! `qemu-io DEVICE "COMMAND"`: qemu-io's I/O commands on a drive or block
//! node, printing what qemu-io prints, so that block tests need no guest.
//! The I/O is synchronous; `aio_*` are the same requests.

use block::Node;
use std::fmt::Write;
use std::time::Instant;

/// qemu-io's `cvtnum`: a byte count with an optional k/M/G/T/P/E suffix.
fn parse_num(s: &str) -> Option<u64> {
    // Hex digits include b and e: a 0x number takes no suffix.
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).ok();
    }
    let (digits, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1u64 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        't' | 'T' => (&s[..s.len() - 1], 1 << 40),
        'p' | 'P' => (&s[..s.len() - 1], 1 << 50),
        'e' | 'E' => (&s[..s.len() - 1], 1 << 60),
        'b' | 'B' => (&s[..s.len() - 1], 1),
        _ => (s, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// qemu-io's `cvtstr`: "512 bytes", "4 KiB", "1.500000 MiB".
fn human(value: f64) -> String {
    let units = [
        (1u64 << 60, " EiB"),
        (1 << 50, " PiB"),
        (1 << 40, " TiB"),
        (1 << 30, " GiB"),
        (1 << 20, " MiB"),
        (1 << 10, " KiB"),
    ];
    let (v, suffix) = units
        .iter()
        .find(|(u, _)| value >= *u as f64)
        .map(|(u, s)| (value / *u as f64, *s))
        .unwrap_or((value, " bytes"));
    let text = format!("{v:.6}");
    match text.find(".000") {
        Some(i) if text[i..].bytes().skip(1).all(|b| b == b'0') => {
            format!("{}{suffix}", &text[..i])
        }
        _ => format!("{text}{suffix}"),
    }
}

/// The two report lines qemu-io prints after a request.
fn report(out: &mut String, what: &str, offset: u64, count: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    let _ = writeln!(out, "{what} {count}/{count} bytes at offset {offset}");
    let _ = writeln!(
        out,
        "{}, 1 ops; {:05.2} sec ({}/sec and {:.4} ops/sec)",
        human(count as f64),
        secs,
        human(count as f64 / secs),
        1.0 / secs
    );
}

struct Options {
    pattern: Option<u8>,
    zeroes: bool,
    quiet: bool,
    verbose: bool,
    rest: Vec<String>,
}

fn options(words: &[&str]) -> Result<Options, String> {
    let mut o = Options {
        pattern: None,
        zeroes: false,
        quiet: false,
        verbose: false,
        rest: Vec::new(),
    };
    let mut i = 0;
    while i < words.len() {
        match words[i] {
            "-P" => {
                i += 1;
                let p = words.get(i).ok_or("-P requires a pattern")?;
                let v = parse_num(p)
                    .filter(|v| *v <= 0xff)
                    .ok_or_else(|| format!("non-numeric pattern: {p}"))?;
                o.pattern = Some(v as u8);
            }
            "-z" => o.zeroes = true,
            "-q" => o.quiet = true,
            "-v" => o.verbose = true,
            w if w.starts_with('-') && w.len() > 1 && w.as_bytes()[1].is_ascii_alphabetic() => {
                return Err(format!("unsupported option {w}"));
            }
            w => o.rest.push(w.to_string()),
        }
        i += 1;
    }
    Ok(o)
}

fn offset_count(o: &Options) -> Result<(u64, u64), String> {
    let [off, cnt] = o.rest.as_slice() else {
        return Err("bad number of arguments".into());
    };
    let offset = parse_num(off).ok_or_else(|| format!("non-numeric offset argument -- {off}"))?;
    let count = parse_num(cnt).ok_or_else(|| format!("non-numeric length argument -- {cnt}"))?;
    if count > (1 << 31) {
        return Err(format!("length cannot exceed 2147483647, given {count}"));
    }
    Ok((offset, count))
}

fn dump(out: &mut String, offset: u64, buf: &[u8]) {
    for (i, chunk) in buf.chunks(16).enumerate() {
        let _ = write!(out, "{:08x}:  ", offset + 16 * i as u64);
        for b in chunk {
            let _ = write!(out, "{b:02x} ");
        }
        let text: String = chunk
            .iter()
            .map(|b| {
                if (0x20..0x7f).contains(b) {
                    *b as char
                } else {
                    '.'
                }
            })
            .collect();
        let _ = writeln!(out, " {text}");
    }
}

/// Runs one qemu-io command line on `node`, appending its output.
pub fn run(node: &Node, line: &str, out: &mut String) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&name, args)) = words.split_first() else {
        return;
    };
    let result = match name {
        "read" | "r" | "aio_read" | "readv" => read(node, args, out, name),
        "write" | "w" | "aio_write" | "writev" => write(node, args, out, name),
        "flush" | "f" | "aio_flush" => node
            .flush()
            .map_err(|e| format!("flush failed: {}", block::strerror(&e))),
        "discard" | "d" => discard(node, args, out),
        "length" | "l" => {
            let _ = writeln!(out, "{}", human(node.size() as f64));
            Ok(())
        }
        _ => Err(format!("command \"{name}\" not found")),
    };
    if let Err(e) = result {
        let _ = writeln!(out, "{e}");
    }
}

fn vector_count(o: &Options, vectored: bool) -> Result<(u64, u64), String> {
    if !vectored {
        return offset_count(o);
    }
    // readv/writev OFFSET LEN [LEN...]: one request of the summed length.
    let (first, lens) = o.rest.split_first().ok_or("bad number of arguments")?;
    let offset =
        parse_num(first).ok_or_else(|| format!("non-numeric offset argument -- {first}"))?;
    let mut total = 0u64;
    for l in lens {
        total += parse_num(l).ok_or_else(|| format!("non-numeric length argument -- {l}"))?;
    }
    Ok((offset, total))
}

fn read(node: &Node, args: &[&str], out: &mut String, name: &str) -> Result<(), String> {
    let o = options(args)?;
    let (offset, count) = vector_count(&o, name == "readv")?;
    let mut buf = vec![0u8; count as usize];
    let started = Instant::now();
    node.read(offset, &mut buf)
        .map_err(|e| format!("read failed: {}", block::strerror(&e)))?;
    if let Some(p) = o.pattern {
        if buf.iter().any(|b| *b != p) {
            let _ = writeln!(
                out,
                "Pattern verification failed at offset {offset}, {count} bytes"
            );
        }
    }
    if o.quiet {
        return Ok(());
    }
    if o.verbose {
        dump(out, offset, &buf);
    }
    report(out, "read", offset, count, started);
    Ok(())
}

fn write(node: &Node, args: &[&str], out: &mut String, name: &str) -> Result<(), String> {
    let o = options(args)?;
    if o.zeroes && o.pattern.is_some() {
        return Err("-z and -P cannot be specified at the same time".into());
    }
    let (offset, count) = vector_count(&o, name == "writev")?;
    let started = Instant::now();
    if o.zeroes {
        node.write_zeroes(offset, count, false)
            .map_err(|e| format!("write failed: {}", block::strerror(&e)))?;
    } else {
        let buf = vec![o.pattern.unwrap_or(0xcd); count as usize];
        node.write(offset, &buf)
            .map_err(|e| format!("write failed: {}", block::strerror(&e)))?;
    }
    if !o.quiet {
        report(out, "wrote", offset, count, started);
    }
    Ok(())
}

fn discard(node: &Node, args: &[&str], out: &mut String) -> Result<(), String> {
    let o = options(args)?;
    let (offset, count) = offset_count(&o)?;
    let started = Instant::now();
    node.discard(offset, count)
        .map_err(|e| format!("discard failed: {}", block::strerror(&e)))?;
    if !o.quiet {
        report(out, "discard", offset, count, started);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_numbers_as_qemu_io() {
        assert_eq!(human(512.0), "512 bytes");
        assert_eq!(human(4096.0), "4 KiB");
        assert_eq!(human(1536.0), "1.500000 KiB");
        assert_eq!(parse_num("4k"), Some(4096));
        assert_eq!(parse_num("0x200"), Some(512));
        assert_eq!(parse_num("0xab"), Some(0xab));
        assert_eq!(parse_num("1e"), Some(1 << 60));
        assert_eq!(parse_num("x"), None);
    }
}
