//! `secret`: a password or key given inline (`data`) or in a file
//! (`file`), raw or base64, optionally encrypted with AES-256-CBC under
//! another secret's key (`keyid`, `iv`), that later commands refer to
//! by id. Behaviour and error texts follow QEMU 2.11's crypto/secret.c.

use crate::qom::props::{Access, ObjectState, PropInfo, PropInput};
use crate::qom::tree::Tree;
use crate::qom::types;
use aes::cipher::{BlockDecryptMut, KeyIvInit};
use qmp::Error;
use serde_json::Value;
use std::any::Any;

const FORMATS: &[&str] = &["raw", "base64"];
const BASE64: usize = 1;

#[derive(Default)]
pub struct Secret {
    data: Option<String>,
    file: Option<String>,
    /// Index into FORMATS.
    format: usize,
    keyid: Option<String>,
    iv: Option<String>,
    /// The secret's bytes once loaded (decoded and decrypted).
    value: Option<Vec<u8>>,
}

impl Secret {
    pub fn new() -> Secret {
        Secret::default()
    }

    /// The decoded secret, for the commands that use one.
    pub fn bytes(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }

    /// `data` or the contents of `file`, as given.
    fn input(&self) -> Result<Vec<u8>, Error> {
        match (&self.data, &self.file) {
            (Some(_), Some(_)) => Err(Error::generic("'file' and 'data' are mutually exclusive")),
            (None, None) => Err(Error::generic("Either 'file' or 'data' must be provided")),
            (Some(d), None) => Ok(d.as_bytes().to_vec()),
            (None, Some(f)) => {
                std::fs::read(f).map_err(|e| Error::generic(format!("Unable to read {f}: {e}")))
            }
        }
    }

    /// Setting `loaded` to true (object-add's completion does it too):
    /// every time, the input is read again, then decrypted or decoded.
    fn load(&mut self, tree: &Tree) -> Result<(), Error> {
        let input = self.input()?;
        let value = match &self.keyid {
            Some(keyid) => {
                let key = lookup(tree, keyid)?;
                decrypt(&key, self.iv.as_deref(), self.format == BASE64, &input)?
            }
            None if self.format == BASE64 => base64_decode(&input, true)?,
            None => input,
        };
        self.value = Some(value);
        Ok(())
    }
}

/// The bytes of the secret `/objects/ID`, as another object reads them.
pub fn lookup(tree: &Tree, id: &str) -> Result<Vec<u8>, Error> {
    let objects = tree
        .resolve("/objects")
        .map_err(|_| Error::generic(format!("No secret with id '{id}'")))?;
    let Some(obj) = tree.child(objects, id) else {
        return Err(Error::generic(format!("No secret with id '{id}'")));
    };
    if !types::is_a(tree.type_name(obj), "secret") {
        return Err(Error::generic(format!(
            "Object with id '{id}' is not a secret"
        )));
    }
    // A secret whose own setter is running (its key is itself) shows no
    // state, and has no data yet either.
    tree.state(obj)
        .as_any()
        .downcast_ref::<Secret>()
        .and_then(Secret::bytes)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| Error::generic(format!("Secret with id '{id}' has no data")))
}

/// AES-256-CBC decryption of `input` (base64 text when `base64`) with
/// `key` and the base64 `iv`; the padding is checked and removed as
/// QEMU 2.11 does it: only the last byte is read, and it must be at
/// most 16 and at most the data's length.
fn decrypt(key: &[u8], iv: Option<&str>, base64: bool, input: &[u8]) -> Result<Vec<u8>, Error> {
    const BLOCK: usize = 16;
    if key.len() != 32 {
        return Err(Error::generic("Key should be 32 bytes in length"));
    }
    let Some(iv) = iv else {
        return Err(Error::generic("IV is required to decrypt secret"));
    };
    // QEMU decodes the IV as a C string: no NUL check, it stops at one.
    let iv_text = iv.split('\0').next().unwrap_or_default();
    let iv = base64_decode(iv_text.as_bytes(), false)?;
    if iv.len() != BLOCK {
        return Err(Error::generic(format!(
            "IV should be 16 bytes in length not {}",
            iv.len()
        )));
    }
    let mut data = if base64 {
        base64_decode(input, true)?
    } else {
        input.to_vec()
    };
    if !data.len().is_multiple_of(BLOCK) {
        return Err(Error::generic(format!(
            "Length {} must be a multiple of block size {BLOCK}",
            data.len()
        )));
    }
    let mut cipher = cbc::Decryptor::<aes::Aes256>::new_from_slices(key, &iv)
        .map_err(|_| Error::generic("Key should be 32 bytes in length"))?;
    for block in data.chunks_exact_mut(BLOCK) {
        cipher.decrypt_block_mut(block.into());
    }
    // Empty ciphertext: QEMU reads the byte before its buffer here; vmm
    // refuses it as padding that cannot be right.
    let pad = data.last().copied().unwrap_or(0);
    if data.is_empty() || usize::from(pad) > BLOCK || usize::from(pad) > data.len() {
        return Err(Error::generic(format!(
            "Incorrect number of padding bytes ({pad}) found on decrypted data"
        )));
    }
    data.truncate(data.len() - usize::from(pad));
    Ok(data)
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
            // QEMU 2.11 answers whether `data` is set, not whether the
            // secret is loaded (a secret from a file reads false).
            "loaded" => Value::from(self.data.is_some()),
            "format" => Value::from(FORMATS[self.format]),
            "data" => opt(&self.data),
            "file" => opt(&self.file),
            "keyid" => opt(&self.keyid),
            _ => opt(&self.iv),
        })
    }

    /// As in QEMU 2.11, the other properties can be changed at any time;
    /// they take effect when `loaded` is next set.
    fn set(&mut self, input: &PropInput, tree: &Tree) -> Result<(), Error> {
        match input.name {
            "loaded" => {
                if input.bool()? {
                    return self.load(tree);
                }
                self.value = None;
            }
            "format" => self.format = input.choice(FORMATS)?,
            "data" => self.data = Some(input.str()?),
            "file" => self.file = Some(input.str()?),
            "keyid" => self.keyid = Some(input.str()?),
            _ => self.iv = Some(input.str()?),
        }
        Ok(())
    }

    fn complete(&mut self, _id: &str, tree: &Tree) -> Result<(), Error> {
        self.load(tree)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// QEMU's base64 decoding (qbase64_decode over GLib's decoder): the
/// text may hold only the base64 alphabet, `=` and newlines; newlines
/// are skipped, `=` counts as a zero digit that drops a byte of its
/// group, and an incomplete last group is dropped. `counted`: the text
/// has a length of its own (file or `data`), so an embedded NUL is an
/// error rather than its end.
fn base64_decode(input: &[u8], counted: bool) -> Result<Vec<u8>, Error> {
    if counted && input.contains(&0) {
        return Err(Error::generic(
            "Base64 data contains embedded NUL characters",
        ));
    }
    let digit = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => 0,
            _ => return None,
        } as u32)
    };
    if input.iter().any(|&c| c != b'\n' && digit(c).is_none()) {
        return Err(Error::generic("Base64 data contains invalid characters"));
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let (mut n, mut count, mut last) = (0u32, 0, [0u8; 2]);
    for &c in input {
        let Some(d) = digit(c) else { continue };
        last = [c, last[0]];
        n = (n << 6) | d;
        count += 1;
        if count == 4 {
            out.push((n >> 16) as u8);
            if last[1] != b'=' {
                out.push((n >> 8) as u8);
            }
            if last[0] != b'=' {
                out.push(n as u8);
            }
            n = 0;
            count = 0;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_as_glib() {
        assert_eq!(base64_decode(b"aGVsbG8=", true).unwrap(), b"hello");
        assert_eq!(base64_decode(b"aGk=", true).unwrap(), b"hi");
        assert_eq!(base64_decode(b"YWJj\n", true).unwrap(), b"abc");
        assert_eq!(base64_decode(b"YW\nJj", true).unwrap(), b"abc");
        // An incomplete last group is dropped.
        assert_eq!(base64_decode(b"YWJjZA", true).unwrap(), b"abc");
        assert!(base64_decode(b"a*bc", true).is_err());
        assert!(base64_decode(b"YW\0J", true).is_err());
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The key and IV of NIST SP 800-38A F.2.5/F.2.6 (CBC-AES256); the
    /// ciphertexts are the NIST vector's first two blocks, and
    /// "secret plaintext" as `openssl enc -aes-256-cbc -K KEY -iv IV`
    /// encrypts it (a full block of PKCS#7 padding follows).
    #[test]
    fn decrypts_aes_256_cbc_as_qemu() {
        let key = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
        let iv = "AAECAwQFBgcICQoLDA0ODw==".to_string();
        let sealed = hex("7a1dedc7fd7ef7281e873e0b7ffda3b4b49eb3451fb93157c00d1d3ed8169f21");
        assert_eq!(
            decrypt(&key, Some(&iv), false, &sealed).unwrap(),
            b"secret plaintext"
        );
        let cipher = hex(concat!(
            "f58c4c04d6e5f1ba779eabfb5f7bfbd6",
            "9cfc4e967edb808d679f777bc6702c7d",
        ));
        assert_eq!(
            decrypt(&key, Some(&iv), false, &cipher[..16])
                .unwrap_err()
                .desc,
            // 6bc1bee22e409f96e93d7e117393172a: last byte 0x2a.
            "Incorrect number of padding bytes (42) found on decrypted data"
        );
        // Without padding removal the NIST plaintext's last byte (0x51)
        // is more than 16: QEMU's check refuses it.
        assert_eq!(
            decrypt(&key, Some(&iv), false, &cipher).unwrap_err().desc,
            "Incorrect number of padding bytes (81) found on decrypted data"
        );
        assert_eq!(
            decrypt(&key[..16], Some(&iv), false, &cipher)
                .unwrap_err()
                .desc,
            "Key should be 32 bytes in length"
        );
        assert_eq!(
            decrypt(&key, None, false, &cipher).unwrap_err().desc,
            "IV is required to decrypt secret"
        );
        assert_eq!(
            decrypt(&key, Some("AAAA"), false, &cipher)
                .unwrap_err()
                .desc,
            "IV should be 16 bytes in length not 3"
        );
        assert_eq!(
            decrypt(&key, Some(&iv), false, &cipher[..20])
                .unwrap_err()
                .desc,
            "Length 20 must be a multiple of block size 16"
        );
    }
}
