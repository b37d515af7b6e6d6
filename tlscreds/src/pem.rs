//! PEM blocks found the way GnuTLS finds them: the first `-----BEGIN `
//! line whose label starts with the one wanted, anything before it
//! ignored, the body up to `-----END ` decoded as base64 with white
//! space skipped.

use crate::error::Reason;
use base64ct::{Base64, Encoding};

const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";
const DASHES: &[u8] = b"-----";

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Where the next `-----BEGIN LABEL` (for any of `labels`) starts, at or
/// after `from`.
fn next_begin(data: &[u8], from: usize, labels: &[&str]) -> Option<usize> {
    let rest = data.get(from..)?;
    labels
        .iter()
        .filter_map(|label| {
            let mut marker = BEGIN.to_vec();
            marker.extend_from_slice(label.as_bytes());
            find(rest, &marker)
        })
        .min()
        .map(|at| from + at)
}

/// The label of the BEGIN line at `at` (the text up to its closing
/// dashes), if the line is complete.
fn label_at(data: &[u8], at: usize) -> Option<&str> {
    let rest = data.get(at + BEGIN.len()..)?;
    let len = find(rest, DASHES)?;
    std::str::from_utf8(&rest[..len]).ok()
}

/// The raw text between the BEGIN line at `at` and its END line.
fn body_at(data: &[u8], at: usize) -> Result<&[u8], Reason> {
    let after_begin = at + BEGIN.len();
    let rest = data.get(after_begin..).ok_or(Reason::Base64)?;
    let close = find(rest, DASHES).ok_or(Reason::Base64)?;
    let body = &rest[close + DASHES.len()..];
    let end = find(body, END).ok_or(Reason::Base64)?;
    Ok(&body[..end])
}

/// Base64 text with white space skipped; like GnuTLS, empty text is an
/// error.
fn decode_body(body: &[u8]) -> Result<Vec<u8>, Reason> {
    let text: Vec<u8> = body
        .iter()
        .copied()
        .filter(|c| !matches!(c, b'\n' | b'\r' | b' ' | b'\t'))
        .take_while(|&c| c != b'-')
        .collect();
    if text.is_empty() {
        return Err(Reason::Base64);
    }
    let text = std::str::from_utf8(&text).map_err(|_| Reason::Base64)?;
    Base64::decode_vec(text).map_err(|_| Reason::Base64)
}

/// The first block for any of `labels`, decoded. No such block at all is
/// GnuTLS's "unexpected header" error.
pub fn first(data: &[u8], labels: &[&str]) -> Result<Vec<u8>, Reason> {
    let at = next_begin(data, 0, labels).ok_or(Reason::Base64Header)?;
    decode_body(body_at(data, at)?)
}

/// Every block for any of `labels`, each decoded or its error, in file
/// order.
pub fn all(data: &[u8], labels: &[&str]) -> Vec<Result<Vec<u8>, Reason>> {
    let mut blocks = Vec::new();
    let mut from = 0;
    while let Some(at) = next_begin(data, from, labels) {
        blocks.push(body_at(data, at).and_then(decode_body));
        from = at + 1;
    }
    blocks
}

/// A block whose label ends in `suffix` (`PRIVATE KEY`): its label and
/// its raw body (headers included), for the caller to decode.
pub fn first_with_suffix<'a>(data: &'a [u8], suffix: &str) -> Option<(&'a str, &'a [u8])> {
    let mut from = 0;
    while let Some(at) = next_begin(data, from, &[""]) {
        if let Some(label) = label_at(data, at) {
            if label.ends_with(suffix) {
                return body_at(data, at).ok().map(|body| (label, body));
            }
        }
        from = at + 1;
    }
    None
}

/// Decodes a body that [`first_with_suffix`] found.
pub fn decode(body: &[u8]) -> Result<Vec<u8>, Reason> {
    decode_body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_blocks_after_text() {
        let pem =
            b"subject=CN = x\n-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n\
                    -----BEGIN CERTIFICATE-----\r\nBAUG\r\n-----END CERTIFICATE-----\r\n";
        assert_eq!(first(pem, &["CERTIFICATE"]), Ok(vec![0, 1, 2, 3]));
        assert_eq!(
            all(pem, &["CERTIFICATE"]),
            vec![Ok(vec![0, 1, 2, 3]), Ok(vec![4, 5, 6])]
        );
        assert_eq!(
            first(b"nothing", &["CERTIFICATE"]),
            Err(Reason::Base64Header)
        );
        assert_eq!(
            first(
                b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----",
                &["CERTIFICATE"]
            ),
            Err(Reason::Base64)
        );
        assert_eq!(
            first(b"-----BEGIN CERTIFICATE-----\nAAEC\n", &["CERTIFICATE"]),
            Err(Reason::Base64)
        );
        assert_eq!(
            first(
                b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----",
                &["CERTIFICATE"]
            ),
            Err(Reason::Base64)
        );
    }

    #[test]
    fn finds_keys_by_suffix() {
        let pem = b"-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n\
                    -----BEGIN EC PRIVATE KEY-----\nAAEC\n-----END EC PRIVATE KEY-----\n";
        let (label, body) = first_with_suffix(pem, "PRIVATE KEY").expect("key");
        assert_eq!(label, "EC PRIVATE KEY");
        assert_eq!(decode(body), Ok(vec![0, 1, 2]));
        assert!(first_with_suffix(b"-----BEGIN CERTIFICATE-----", "PRIVATE KEY").is_none());
    }
}
