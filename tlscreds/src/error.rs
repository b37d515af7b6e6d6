//! Why credentials do not load, worded as QEMU 2.11 words it (with the
//! GnuTLS texts it appends), and the class a QMP answer gives them.

use std::fmt;

/// Why a file's contents were refused: GnuTLS's gnutls_strerror texts
/// for the failures vmm can tell apart, and vmm's own words where vmm
/// lacks something GnuTLS has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No `-----BEGIN` line of the wanted kind.
    Base64Header,
    /// A PEM body that is not base64, or a block that does not end.
    Base64,
    /// DER that does not parse as what it should be.
    Der,
    /// A certificate list without any certificate.
    NoCertificate,
    /// A file that cannot be read.
    FileRead,
    /// A private key whose public half is not the certificate's.
    KeyMismatch,
    /// An encrypted key without a password, or with the wrong one.
    DecryptionFailed,
    /// Zero DH prime or generator.
    IllegalParameter,
    /// Something GnuTLS reads that vmm does not (a key format, an
    /// encryption scheme): the text says what.
    Unsupported(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Base64Header => "Base64 unexpected header error.",
            Reason::Base64 => "Base64 decoding error.",
            Reason::Der => "ASN1 parser: Error in DER parsing.",
            Reason::NoCertificate => "No certificate was found.",
            Reason::FileRead => "Error while reading file.",
            Reason::KeyMismatch => "The certificate and the given key do not match.",
            Reason::DecryptionFailed => "Decryption has failed.",
            Reason::IllegalParameter => "An illegal parameter has been received.",
            Reason::Unsupported(what) => what,
        })
    }
}

/// Which certificate a check is about, for the texts that name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Ca,
    Server,
    Client,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Ca => "CA",
            Role::Server => "server",
            Role::Client => "client",
        }
    }
}

/// Why a chain check failed: the reason texts QEMU picks from GnuTLS's
/// verification status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainReason {
    Invalid,
    NotTrusted,
    UnknownIssuer,
    InsecureAlgorithm,
    /// A signature algorithm vmm cannot check (GnuTLS may).
    UnsupportedAlgorithm(String),
}

impl fmt::Display for ChainReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainReason::Invalid => f.write_str("Invalid certificate"),
            ChainReason::NotTrusted => f.write_str("The certificate is not trusted"),
            ChainReason::UnknownIssuer => f.write_str("The certificate hasn't got a known issuer"),
            ChainReason::InsecureAlgorithm => {
                f.write_str("The certificate uses an insecure algorithm")
            }
            ChainReason::UnsupportedAlgorithm(oid) => write!(
                f,
                "The certificate is signed with algorithm {oid}, which vmm cannot verify"
            ),
        }
    }
}

/// An error loading TLS credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsCredsError {
    MissingDir,
    /// A credentials file that cannot be stat'ed (`cause`: strerror).
    Access {
        path: String,
        cause: String,
    },
    /// A certificate file that cannot be read during the sanity check
    /// (QEMU calls every such file a CA cert list).
    ReadCertFile {
        path: String,
        cause: String,
    },
    ImportCert {
        path: String,
        server: bool,
        reason: Reason,
    },
    ImportCaList {
        path: String,
    },
    Expired {
        path: String,
        role: Role,
    },
    NotYetActive {
        path: String,
        role: Role,
    },
    ConstraintsShowCa {
        path: String,
        server: bool,
    },
    ConstraintsNotCa {
        path: String,
    },
    MissingConstraintsForCa {
        path: String,
    },
    QueryConstraints {
        path: String,
        reason: Reason,
    },
    QueryKeyUsage {
        path: String,
        reason: Reason,
    },
    NoCertSign {
        path: String,
    },
    NoDigitalSignature {
        path: String,
    },
    NoKeyEncipherment {
        path: String,
    },
    QueryKeyPurpose {
        path: String,
        reason: Reason,
    },
    NotForServer {
        path: String,
    },
    NotForClient {
        path: String,
    },
    Chain {
        cert: String,
        ca: String,
        reason: ChainReason,
    },
    LoadCa {
        path: String,
        reason: Reason,
    },
    /// The `passwordid` secret could not be read (its own text).
    Password(String),
    LoadKey {
        cert: String,
        key: String,
        reason: Reason,
    },
    LoadCrl {
        path: String,
        reason: Reason,
    },
    /// dh-params.pem cannot be read (GLib's text).
    ReadDhParams(String),
    LoadDhParams {
        path: String,
        reason: Reason,
    },
}

impl fmt::Display for TlsCredsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TlsCredsError::*;
        let end = |server: bool| if server { "server" } else { "client" };
        match self {
            MissingDir => f.write_str("Missing 'dir' property value"),
            Access { path, cause } => write!(f, "Unable to access credentials {path}: {cause}"),
            ReadCertFile { path, cause } => write!(f, "Cannot load CA cert list {path}: {cause}"),
            ImportCert {
                path,
                server,
                reason,
            } => write!(
                f,
                "Unable to import {} certificate {path}: {reason}",
                end(*server)
            ),
            ImportCaList { path } => write!(f, "Unable to import CA certificate list {path}"),
            Expired { path, role } => {
                write!(f, "The {} certificate {path} has expired", role.name())
            }
            NotYetActive { path, role } => {
                write!(
                    f,
                    "The {} certificate {path} is not yet active",
                    role.name()
                )
            }
            ConstraintsShowCa { path, server } => write!(
                f,
                "The certificate {path} basic constraints show a CA, but we need one for a {}",
                end(*server)
            ),
            ConstraintsNotCa { path } => {
                write!(
                    f,
                    "The certificate {path} basic constraints do not show a CA"
                )
            }
            MissingConstraintsForCa { path } => write!(
                f,
                "The certificate {path} is missing basic constraints for a CA"
            ),
            QueryConstraints { path, reason } => write!(
                f,
                "Unable to query certificate {path} basic constraints: {reason}"
            ),
            QueryKeyUsage { path, reason } => {
                write!(f, "Unable to query certificate {path} key usage: {reason}")
            }
            NoCertSign { path } => write!(
                f,
                "Certificate {path} usage does not permit certificate signing"
            ),
            NoDigitalSignature { path } => write!(
                f,
                "Certificate {path} usage does not permit digital signature"
            ),
            NoKeyEncipherment { path } => write!(
                f,
                "Certificate {path} usage does not permit key encipherment"
            ),
            QueryKeyPurpose { path, reason } => {
                write!(
                    f,
                    "Unable to query certificate {path} key purpose: {reason}"
                )
            }
            NotForServer { path } => write!(
                f,
                "Certificate {path} purpose does not allow use with a TLS server"
            ),
            NotForClient { path } => write!(
                f,
                "Certificate {path} purpose does not allow use with a TLS client"
            ),
            Chain { cert, ca, reason } => write!(
                f,
                "Our own certificate {cert} failed validation against {ca}: {reason}"
            ),
            LoadCa { path, reason } => write!(f, "Cannot load CA certificate '{path}': {reason}"),
            Password(text) => f.write_str(text),
            LoadKey { cert, key, reason } => write!(
                f,
                "Cannot load certificate '{cert}' & key '{key}': {reason}"
            ),
            LoadCrl { path, reason } => write!(f, "Cannot load CRL '{path}': {reason}"),
            ReadDhParams(text) => f.write_str(text),
            LoadDhParams { path, reason } => {
                write!(f, "Unable to load DH parameters from {path}: {reason}")
            }
        }
    }
}

impl std::error::Error for TlsCredsError {}

/// Every one of these is a GenericError in QEMU.
impl From<TlsCredsError> for qmp::Error {
    fn from(e: TlsCredsError) -> qmp::Error {
        qmp::Error::generic(e.to_string())
    }
}

/// QEMU's strerror text of an OS error.
pub(crate) use qmp::strerror;

/// GLib's g_file_get_contents texts for a file that cannot be opened or
/// read, which QEMU passes on.
pub(crate) fn glib_read_error(path: &str, e: &std::io::Error, opened: bool) -> String {
    if opened {
        format!("Failed to read from file “{path}”: {}", strerror(e))
    } else {
        format!("Failed to open file “{path}”: {}", strerror(e))
    }
}
