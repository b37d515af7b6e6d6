//! `secret`: a password or key given inline (`data`) or in a file
//! (`file`), raw or base64, that later commands refer to by id.

use crate::qom::props::{Access, ObjectState, PropInfo, PropInput};
use qmp::Error;
use serde_json::Value;
use std::any::Any;

const FORMATS: &[&str] = &["raw", "base64"];

#[derive(Default)]
pub struct Secret {
    data: Option<String>,
    file: Option<String>,
    /// Index into FORMATS.
    format: usize,
    keyid: Option<String>,
    iv: Option<String>,
    /// The secret's bytes once loaded.
    value: Option<Vec<u8>>,
}

impl Secret {
    pub fn new() -> Secret {
        Secret::default()
    }

    /// The decoded secret, for the commands that use one.
    #[allow(dead_code)] // first user: LUKS images and TLS, with the block layer
    pub fn bytes(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }

    fn load(&mut self) -> Result<(), Error> {
        let raw = match (&self.data, &self.file) {
            (Some(_), Some(_)) => {
                return Err(Error::generic("'data' and 'file' are mutually exclusive"))
            }
            (None, None) => return Err(Error::generic("Either 'data' or 'file' must be provided")),
            (Some(d), None) => d.as_bytes().to_vec(),
            (None, Some(f)) => {
                std::fs::read(f).map_err(|e| Error::generic(format!("Unable to read {f}: {e}")))?
            }
        };
        if self.keyid.is_some() {
            // AES-256-CBC decryption needs a cipher crate vmm does not
            // carry yet; refusing is better than storing ciphertext.
            return Err(Error::generic(
                "Encrypted secrets ('keyid') are not supported by vmm yet",
            ));
        }
        if self.iv.is_some() {
            return Err(Error::generic("'iv' property set, but no 'keyid' given"));
        }
        self.value = Some(if FORMATS[self.format] == "base64" {
            base64_decode(&raw)?
        } else {
            raw
        });
        Ok(())
    }
}

impl ObjectState for Secret {
    fn properties(&self) -> Vec<PropInfo> {
        vec![
            PropInfo::new("loaded", "bool", Access::ReadWrite),
            PropInfo::new("format", "QCryptoSecretFormat", Access::ReadWrite),
            PropInfo::new("data", "string", Access::ReadWrite),
            PropInfo::new("file", "string", Access::ReadWrite),
            PropInfo::new("keyid", "string", Access::ReadWrite),
            PropInfo::new("iv", "string", Access::ReadWrite),
        ]
    }

    fn get(&self, name: &str) -> Result<Value, Error> {
        let opt = |s: &Option<String>| Value::from(s.clone().unwrap_or_default());
        Ok(match name {
            "loaded" => Value::from(self.value.is_some()),
            "format" => Value::from(FORMATS[self.format]),
            "data" => opt(&self.data),
            "file" => opt(&self.file),
            "keyid" => opt(&self.keyid),
            _ => opt(&self.iv),
        })
    }

    fn set(&mut self, input: &PropInput) -> Result<(), Error> {
        if input.name == "loaded" {
            return match (input.bool()?, self.value.is_some()) {
                (true, false) => self.load(),
                (false, _) => {
                    self.value = None;
                    Ok(())
                }
                (true, true) => Ok(()),
            };
        }
        if self.value.is_some() {
            return Err(Error::generic("Cannot set property when secret is loaded"));
        }
        match input.name {
            "format" => self.format = input.choice(FORMATS)?,
            "data" => self.data = Some(input.str()?),
            "file" => self.file = Some(input.str()?),
            "keyid" => self.keyid = Some(input.str()?),
            _ => self.iv = Some(input.str()?),
        }
        Ok(())
    }

    fn complete(&mut self, _id: &str) -> Result<(), Error> {
        if self.value.is_none() {
            self.load()?;
        }
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Standard base64 with padding; whitespace is not allowed, as in QEMU.
fn base64_decode(input: &[u8]) -> Result<Vec<u8>, Error> {
    let invalid = || Error::generic("Base64 data contains invalid characters");
    if input.contains(&0) {
        return Err(Error::generic(
            "Base64 data contains embedded NUL characters",
        ));
    }
    if !input.len().is_multiple_of(4) {
        return Err(Error::generic("Base64 data length is not a multiple of 4"));
    }
    let sextet = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let chunks = input.chunks(4).count();
    for (i, chunk) in input.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return Err(invalid());
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | sextet(c).ok_or_else(invalid)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64_decode(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode(b"aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode(b"YWJj").unwrap(), b"abc");
        assert!(base64_decode(b"a*bc").is_err());
        assert!(base64_decode(b"ab=c").is_err());
    }
}
