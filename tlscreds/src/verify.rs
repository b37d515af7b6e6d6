//! A certificate checked against the CA list, as GnuTLS's
//! gnutls_x509_crt_list_verify checks a one-certificate chain with no
//! flags: an issuer found by name (and key id), that issuer a CA allowed
//! to sign certificates, the signature, critical extensions, the signing
//! algorithm and the times. The outcome is the reason QEMU reports.

use crate::cert::Cert;
use crate::error::ChainReason;
use pkcs1::RsaPssParams;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};

const OID_RSA_MD2: &str = "1.2.840.113549.1.1.2";
const OID_RSA_MD5: &str = "1.2.840.113549.1.1.4";
const OID_RSA_SHA1: &str = "1.2.840.113549.1.1.5";
const OID_RSA_PSS: &str = "1.2.840.113549.1.1.10";
const OID_RSA_SHA256: &str = "1.2.840.113549.1.1.11";
const OID_RSA_SHA384: &str = "1.2.840.113549.1.1.12";
const OID_RSA_SHA512: &str = "1.2.840.113549.1.1.13";
const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
const OID_ECDSA_PREFIX: &str = "1.2.840.10045.4.";
const OID_ED25519: &str = "1.3.101.112";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_SHA256: &str = "2.16.840.1.101.3.4.2.1";
const OID_SHA384: &str = "2.16.840.1.101.3.4.2.2";
const OID_SHA512: &str = "2.16.840.1.101.3.4.2.3";
pub const OID_CURVE_P256: &str = "1.2.840.10045.3.1.7";
pub const OID_CURVE_P384: &str = "1.3.132.0.34";

/// GnuTLS's verification status bits that decide QEMU's reason.
#[derive(Default)]
struct Status {
    invalid: bool,
    signer_not_found: bool,
    insecure_algorithm: bool,
    /// vmm's own: a signature it has no algorithm for.
    unsupported: Option<String>,
}

enum SignatureError {
    Bad,
    Unsupported(String),
}

/// Checks `cert` against `cas`; Err is the reason QEMU names.
pub fn verify(cert: &Cert, cas: &[Cert], now: u64) -> Result<(), ChainReason> {
    // A certificate that is itself trusted needs no issuer.
    if cas.iter().any(|ca| ca.der == cert.der) {
        return Ok(());
    }
    let mut status = Status::default();
    match find_issuer(cert, cas, now) {
        None => {
            status.invalid = true;
            status.signer_not_found = true;
        }
        Some(issuer) => {
            if !issuer.is_v1() && !may_sign(cert, issuer) {
                status.invalid = true;
            }
            match verify_signature(cert, issuer) {
                Ok(()) => {}
                Err(SignatureError::Bad) => status.invalid = true,
                Err(SignatureError::Unsupported(oid)) => {
                    status.invalid = true;
                    status.unsupported = Some(oid);
                }
            }
            if issuer.has_unknown_critical_extension() {
                status.invalid = true;
            }
            if !valid_at(issuer, now) {
                status.invalid = true;
            }
        }
    }
    if cert.has_unknown_critical_extension() || !valid_at(cert, now) {
        status.invalid = true;
    }
    let algorithm = cert.cert.signature_algorithm.oid.to_string();
    if matches!(algorithm.as_str(), OID_RSA_MD2 | OID_RSA_MD5) && !is_issuer(cert, cert) {
        status.invalid = true;
        status.insecure_algorithm = true;
    }
    // QEMU lets the later checks override the earlier ones.
    if status.insecure_algorithm {
        Err(ChainReason::InsecureAlgorithm)
    } else if status.signer_not_found {
        Err(ChainReason::UnknownIssuer)
    } else if let Some(oid) = status.unsupported {
        Err(ChainReason::UnsupportedAlgorithm(oid))
    } else if status.invalid {
        Err(ChainReason::NotTrusted)
    } else {
        Ok(())
    }
}

fn valid_at(cert: &Cert, now: u64) -> bool {
    cert.not_before() <= now && now <= cert.not_after()
}

/// GnuTLS's issuer test: the issuer name is the candidate's subject, and
/// the key identifiers agree where both are there.
fn is_issuer(cert: &Cert, candidate: &Cert) -> bool {
    if cert.issuer_der() != candidate.subject_der() {
        return false;
    }
    match (cert.authority_key_id(), candidate.subject_key_id()) {
        (Some(aki), Some(ski)) => aki == ski,
        _ => true,
    }
}

/// The issuer among `cas`; of several, the last one valid now.
fn find_issuer<'a>(cert: &Cert, cas: &'a [Cert], now: u64) -> Option<&'a Cert> {
    let mut found = None;
    for ca in cas.iter().filter(|ca| is_issuer(cert, ca)) {
        if found.is_none() || valid_at(ca, now) {
            found = Some(ca);
        }
    }
    found
}

/// Whether `issuer` may sign certificates: it is the certificate itself,
/// or a CA by its basic constraints (a self-signed one without them is
/// accepted, as GnuTLS accepts old roots), and its key usage, when
/// given, allows certificate signing.
fn may_sign(cert: &Cert, issuer: &Cert) -> bool {
    if cert.tbs_der() == issuer.tbs_der() && cert.cert.signature == issuer.cert.signature {
        return true;
    }
    let is_ca = match issuer.is_ca() {
        Ok(Some(ca)) => ca,
        Ok(None) => is_issuer(issuer, issuer),
        Err(_) => false,
    };
    let usage_allows = match issuer.key_usage() {
        Ok(Some(usage)) => usage.key_cert_sign,
        Ok(None) => true,
        Err(_) => false,
    };
    is_ca && usage_allows
}

fn verify_signature(cert: &Cert, issuer: &Cert) -> Result<(), SignatureError> {
    let algorithm = &cert.cert.signature_algorithm;
    let oid = algorithm.oid.to_string();
    let spki = &issuer.cert.tbs_certificate.subject_public_key_info;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
        .map(|o| o.to_string())
        .unwrap_or_default();
    let unsupported = || SignatureError::Unsupported(oid.clone());
    // An ECDSA signature from a key of another kind is simply wrong;
    // only a curve vmm lacks is unsupported.
    let ec_key = spki.algorithm.oid.to_string() == OID_EC_PUBLIC_KEY;
    if oid.starts_with(OID_ECDSA_PREFIX) && !ec_key {
        return Err(SignatureError::Bad);
    }
    let verifier: &dyn VerificationAlgorithm = match oid.as_str() {
        OID_RSA_SHA1 => &signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
        OID_RSA_SHA256 => &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
        OID_RSA_SHA384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        OID_RSA_SHA512 => &signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
        OID_RSA_PSS => {
            let params = algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.to_der().ok())
                .ok_or(SignatureError::Bad)?;
            let params = RsaPssParams::from_der(&params).map_err(|_| SignatureError::Bad)?;
            match params.hash.oid.to_string().as_str() {
                OID_SHA256 => &signature::RSA_PSS_2048_8192_SHA256,
                OID_SHA384 => &signature::RSA_PSS_2048_8192_SHA384,
                OID_SHA512 => &signature::RSA_PSS_2048_8192_SHA512,
                _ => return Err(unsupported()),
            }
        }
        OID_ECDSA_SHA256 => match curve.as_str() {
            OID_CURVE_P256 => &signature::ECDSA_P256_SHA256_ASN1,
            OID_CURVE_P384 => &signature::ECDSA_P384_SHA256_ASN1,
            _ => return Err(unsupported()),
        },
        OID_ECDSA_SHA384 => match curve.as_str() {
            OID_CURVE_P256 => &signature::ECDSA_P256_SHA384_ASN1,
            OID_CURVE_P384 => &signature::ECDSA_P384_SHA384_ASN1,
            _ => return Err(unsupported()),
        },
        OID_ED25519 => &signature::ED25519,
        _ => return Err(unsupported()),
    };
    let tbs = cert.tbs_der().ok_or(SignatureError::Bad)?;
    UnparsedPublicKey::new(verifier, spki.subject_public_key.raw_bytes())
        .verify(&tbs, cert.cert.signature.raw_bytes())
        .map_err(|_| SignatureError::Bad)
}
