//! Private keys: PKCS#1 (RSA), SEC1 (EC) and PKCS#8, plain or encrypted
//! with a password (PKCS#8 PBES2), checked against the certificate's
//! public key as GnuTLS checks a key pair.

use crate::error::Reason;
use crate::pem;
use crate::verify::{OID_CURVE_P256, OID_CURVE_P384};
use pkcs8::{EncryptedPrivateKeyInfo, PrivateKeyInfo};
use sec1::{EcParameters, EcPrivateKey};
use x509_cert::der::asn1::{ObjectIdentifier, OctetStringRef};
use x509_cert::der::Decode;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use zeroize::Zeroizing;

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_RSA_PSS: &str = "1.2.840.113549.1.1.10";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_ED25519: &str = "1.3.101.112";

/// How the key's DER is framed, as a TLS library takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// RSAPrivateKey (`RSA PRIVATE KEY`).
    Pkcs1,
    /// ECPrivateKey (`EC PRIVATE KEY`).
    Sec1,
    /// PrivateKeyInfo (`PRIVATE KEY`, or an encrypted one once
    /// decrypted).
    Pkcs8,
}

/// A decrypted private key; its bytes are wiped when dropped.
#[derive(Clone)]
pub struct PrivateKey {
    pub format: KeyFormat,
    pub der: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({:?}, {} bytes)", self.format, self.der.len())
    }
}

/// The first private key in a PEM file, decrypted with `password` when
/// it is encrypted.
pub fn load(data: &[u8], password: Option<&[u8]>) -> Result<PrivateKey, Reason> {
    let Some((label, body)) = pem::first_with_suffix(data, "PRIVATE KEY") else {
        return Err(Reason::Base64Header);
    };
    if body.windows(10).any(|w| w == b"Proc-Type:") {
        return Err(Reason::Unsupported(
            "vmm does not read keys in OpenSSL's legacy encrypted PEM format; \
             convert the key with 'openssl pkcs8 -topk8'"
                .to_string(),
        ));
    }
    let der = Zeroizing::new(pem::decode(body)?);
    let (format, der) = match label {
        "RSA PRIVATE KEY" => (KeyFormat::Pkcs1, der),
        "EC PRIVATE KEY" => (KeyFormat::Sec1, der),
        "PRIVATE KEY" => (KeyFormat::Pkcs8, der),
        "ENCRYPTED PRIVATE KEY" => (KeyFormat::Pkcs8, decrypt(&der, password)?),
        other => {
            return Err(Reason::Unsupported(format!(
                "vmm does not read '{other}' keys"
            )))
        }
    };
    let key = PrivateKey { format, der };
    // Parse it once here so that a broken key fails at load.
    public_key(&key)?;
    Ok(key)
}

fn decrypt(der: &[u8], password: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, Reason> {
    let info = EncryptedPrivateKeyInfo::from_der(der).map_err(|_| Reason::Der)?;
    let Some(password) = password else {
        return Err(Reason::DecryptionFailed);
    };
    let plain = info
        .encryption_algorithm
        .decrypt(password, info.encrypted_data)
        .map_err(|e| match e {
            pkcs5::Error::UnsupportedAlgorithm { oid } => Reason::Unsupported(format!(
                "vmm cannot decrypt private keys encrypted with algorithm {oid}"
            )),
            pkcs5::Error::NoPbes1CryptSupport => Reason::Unsupported(
                "vmm cannot decrypt private keys encrypted with PKCS#5 v1.5 (PBES1)".to_string(),
            ),
            _ => Reason::DecryptionFailed,
        })?;
    let plain = Zeroizing::new(plain);
    // A wrong password can still leave valid padding; what it leaves is
    // no PrivateKeyInfo.
    PrivateKeyInfo::from_der(&plain).map_err(|_| Reason::DecryptionFailed)?;
    Ok(plain)
}

/// A public key as it sits in a certificate.
#[derive(Debug, PartialEq, Eq)]
enum PublicKey {
    Rsa { modulus: Vec<u8>, exponent: Vec<u8> },
    Ec { curve: String, point: Vec<u8> },
    Ed25519(Vec<u8>),
}

fn strip_zeros(b: &[u8]) -> Vec<u8> {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b[first..].to_vec()
}

fn rsa_public(pkcs1_der: &[u8]) -> Result<PublicKey, Reason> {
    let key = pkcs1::RsaPrivateKey::from_der(pkcs1_der).map_err(|_| Reason::Der)?;
    Ok(PublicKey::Rsa {
        modulus: strip_zeros(key.modulus.as_bytes()),
        exponent: strip_zeros(key.public_exponent.as_bytes()),
    })
}

fn curve_name(oid: ObjectIdentifier) -> Result<String, Reason> {
    let name = oid.to_string();
    match name.as_str() {
        OID_CURVE_P256 | OID_CURVE_P384 => Ok(name),
        _ => Err(Reason::Unsupported(format!(
            "vmm does not support keys on elliptic curve {name}"
        ))),
    }
}

fn ec_public(sec1_der: &[u8], curve: Option<ObjectIdentifier>) -> Result<PublicKey, Reason> {
    let key = EcPrivateKey::from_der(sec1_der).map_err(|_| Reason::Der)?;
    let curve = match (curve, key.parameters) {
        (Some(oid), _) | (None, Some(EcParameters::NamedCurve(oid))) => oid,
        (None, None) => return Err(Reason::Der),
    };
    let Some(point) = key.public_key else {
        return Err(Reason::Unsupported(
            "vmm needs the public key inside an EC private key".to_string(),
        ));
    };
    Ok(PublicKey::Ec {
        curve: curve_name(curve)?,
        point: point.to_vec(),
    })
}

/// The public half of a private key.
fn public_key(key: &PrivateKey) -> Result<PublicKey, Reason> {
    match key.format {
        KeyFormat::Pkcs1 => rsa_public(&key.der),
        KeyFormat::Sec1 => ec_public(&key.der, None),
        KeyFormat::Pkcs8 => {
            let info = PrivateKeyInfo::from_der(&key.der).map_err(|_| Reason::Der)?;
            let algorithm = info.algorithm.oid.to_string();
            match algorithm.as_str() {
                OID_RSA | OID_RSA_PSS => rsa_public(info.private_key),
                OID_EC => {
                    let curve = info.algorithm.parameters_oid().map_err(|_| Reason::Der)?;
                    ec_public(info.private_key, Some(curve))
                }
                OID_ED25519 => {
                    let seed =
                        OctetStringRef::from_der(info.private_key).map_err(|_| Reason::Der)?;
                    let pair =
                        ring::signature::Ed25519KeyPair::from_seed_unchecked(seed.as_bytes())
                            .map_err(|_| Reason::Der)?;
                    use ring::signature::KeyPair;
                    Ok(PublicKey::Ed25519(pair.public_key().as_ref().to_vec()))
                }
                other => Err(Reason::Unsupported(format!(
                    "vmm does not support private keys of algorithm {other}"
                ))),
            }
        }
    }
}

fn certificate_key(spki: &SubjectPublicKeyInfoOwned) -> Option<PublicKey> {
    let bits = spki.subject_public_key.raw_bytes();
    match spki.algorithm.oid.to_string().as_str() {
        OID_RSA | OID_RSA_PSS => {
            let key = pkcs1::RsaPublicKey::from_der(bits).ok()?;
            Some(PublicKey::Rsa {
                modulus: strip_zeros(key.modulus.as_bytes()),
                exponent: strip_zeros(key.public_exponent.as_bytes()),
            })
        }
        OID_EC => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()?
                .decode_as::<ObjectIdentifier>()
                .ok()?;
            Some(PublicKey::Ec {
                curve: curve.to_string(),
                point: bits.to_vec(),
            })
        }
        OID_ED25519 => Some(PublicKey::Ed25519(bits.to_vec())),
        _ => None,
    }
}

/// Whether `key` is the private half of the certificate's key.
pub fn matches(key: &PrivateKey, spki: &SubjectPublicKeyInfoOwned) -> Result<(), Reason> {
    let ours = public_key(key)?;
    match certificate_key(spki) {
        Some(theirs) if theirs == ours => Ok(()),
        _ => Err(Reason::KeyMismatch),
    }
}
