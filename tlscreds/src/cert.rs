//! One X.509 certificate and the questions QEMU's sanity check asks of
//! it, answered as GnuTLS's accessors answer them.

use crate::error::Reason;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::Certificate;

pub const OID_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
pub const OID_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
pub const OID_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
pub const OID_SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
pub const OID_AUTHORITY_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");
pub const OID_KP_SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
pub const OID_KP_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
pub const OID_KP_ANY: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37.0");

/// The extensions GnuTLS understands; a critical one outside this list
/// makes verification fail.
const KNOWN_EXTENSIONS: &[&str] = &[
    "2.5.29.14",
    "2.5.29.15",
    "2.5.29.17",
    "2.5.29.18",
    "2.5.29.19",
    "2.5.29.30",
    "2.5.29.31",
    "2.5.29.32",
    "2.5.29.35",
    "2.5.29.37",
    "2.5.29.54",
    "1.3.6.1.5.5.7.1.1",
    "1.3.6.1.5.5.7.1.14",
    "1.3.6.1.5.5.7.1.24",
];

/// Key usage bits QEMU looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub digital_signature: bool,
    pub key_encipherment: bool,
    pub key_cert_sign: bool,
    pub critical: bool,
}

/// A parsed certificate with its DER.
#[derive(Clone, Debug)]
pub struct Cert {
    pub der: Vec<u8>,
    pub cert: Certificate,
}

impl Cert {
    pub fn parse(der: Vec<u8>) -> Result<Cert, Reason> {
        let cert = Certificate::from_der(&der).map_err(|_| Reason::Der)?;
        Ok(Cert { der, cert })
    }

    /// Seconds since the epoch.
    pub fn not_before(&self) -> u64 {
        let v = &self.cert.tbs_certificate.validity;
        v.not_before.to_unix_duration().as_secs()
    }

    pub fn not_after(&self) -> u64 {
        let v = &self.cert.tbs_certificate.validity;
        v.not_after.to_unix_duration().as_secs()
    }

    fn extensions(&self) -> &[Extension] {
        self.cert
            .tbs_certificate
            .extensions
            .as_deref()
            .unwrap_or_default()
    }

    fn extension(&self, oid: ObjectIdentifier) -> Option<&Extension> {
        self.extensions().iter().find(|e| e.extn_id == oid)
    }

    /// Basic constraints' CA flag; None without the extension.
    pub fn is_ca(&self) -> Result<Option<bool>, Reason> {
        let Some(ext) = self.extension(OID_BASIC_CONSTRAINTS) else {
            return Ok(None);
        };
        let bc = BasicConstraints::from_der(ext.extn_value.as_bytes()).map_err(|_| Reason::Der)?;
        Ok(Some(bc.ca))
    }

    /// Key usage; None without the extension.
    pub fn key_usage(&self) -> Result<Option<Usage>, Reason> {
        let Some(ext) = self.extension(OID_KEY_USAGE) else {
            return Ok(None);
        };
        let ku = KeyUsage::from_der(ext.extn_value.as_bytes()).map_err(|_| Reason::Der)?;
        Ok(Some(Usage {
            digital_signature: ku.digital_signature(),
            key_encipherment: ku.key_encipherment(),
            key_cert_sign: ku.key_cert_sign(),
            critical: ext.critical,
        }))
    }

    /// Extended key usage purposes and whether the extension is
    /// critical; None without the extension.
    pub fn key_purposes(&self) -> Result<Option<(Vec<ObjectIdentifier>, bool)>, Reason> {
        let Some(ext) = self.extension(OID_EXT_KEY_USAGE) else {
            return Ok(None);
        };
        let eku = ExtendedKeyUsage::from_der(ext.extn_value.as_bytes()).map_err(|_| Reason::Der)?;
        Ok(Some((eku.0, ext.critical)))
    }

    pub fn subject_key_id(&self) -> Option<Vec<u8>> {
        let ext = self.extension(OID_SUBJECT_KEY_ID)?;
        let ski = SubjectKeyIdentifier::from_der(ext.extn_value.as_bytes()).ok()?;
        Some(ski.0.as_bytes().to_vec())
    }

    pub fn authority_key_id(&self) -> Option<Vec<u8>> {
        let ext = self.extension(OID_AUTHORITY_KEY_ID)?;
        let aki = AuthorityKeyIdentifier::from_der(ext.extn_value.as_bytes()).ok()?;
        aki.key_identifier.map(|id| id.as_bytes().to_vec())
    }

    /// The DER of the subject and issuer names (GnuTLS compares them
    /// byte for byte).
    pub fn subject_der(&self) -> Vec<u8> {
        self.cert
            .tbs_certificate
            .subject
            .to_der()
            .unwrap_or_default()
    }

    pub fn issuer_der(&self) -> Vec<u8> {
        self.cert
            .tbs_certificate
            .issuer
            .to_der()
            .unwrap_or_default()
    }

    /// The signed part, as it was signed.
    pub fn tbs_der(&self) -> Option<Vec<u8>> {
        self.cert.tbs_certificate.to_der().ok()
    }

    pub fn is_v1(&self) -> bool {
        self.cert.tbs_certificate.version == x509_cert::Version::V1
    }

    /// Whether a critical extension is one GnuTLS does not know.
    pub fn has_unknown_critical_extension(&self) -> bool {
        self.extensions()
            .iter()
            .any(|e| e.critical && !KNOWN_EXTENSIONS.contains(&e.extn_id.to_string().as_str()))
    }
}
