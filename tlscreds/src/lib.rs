//! TLS credentials as QEMU 2.11 loads them for `tls-creds-x509` and
//! `tls-creds-anon` (crypto/tlscreds*.c): the files a directory must
//! hold for a client or a server, parsed at load, the x509 sanity check
//! (validity, basic constraints, key usage, key purpose, the certificate
//! signed by the CA), and what loaded kept in a form a TLS server or
//! client (NBD, VNC, migration) takes: DER certificates, the decrypted
//! private key, CRLs and DH parameters. Errors carry QEMU's texts.

mod cert;
mod dh;
mod error;
mod key;
mod pem;
mod verify;

pub use dh::DhParams;
pub use error::{ChainReason, Reason, Role, TlsCredsError};
pub use key::{KeyFormat, PrivateKey};
pub use qmp::qapi::QCryptoTLSCredsEndpoint as Endpoint;

use cert::Cert;
use std::time::{SystemTime, UNIX_EPOCH};

pub type Result<T> = std::result::Result<T, TlsCredsError>;

const CA_CERT: &str = "ca-cert.pem";
const CA_CRL: &str = "ca-crl.pem";
const SERVER_CERT: &str = "server-cert.pem";
const SERVER_KEY: &str = "server-key.pem";
const CLIENT_CERT: &str = "client-cert.pem";
const CLIENT_KEY: &str = "client-key.pem";
const DH_PARAMS: &str = "dh-params.pem";

/// The PEM labels GnuTLS takes for a certificate.
const CERT_LABELS: &[&str] = &["CERTIFICATE", "X509 CERTIFICATE"];
/// GnuTLS's limit on the CA certificates the sanity check reads; later
/// ones are left unchecked.
const SANITY_MAX_CA_CERTS: usize = 16;

/// This endpoint's certificate chain (its own first) and private key.
#[derive(Clone, Debug)]
pub struct Identity {
    pub chain: Vec<Vec<u8>>,
    pub key: PrivateKey,
}

/// What loading `tls-creds-x509` keeps.
#[derive(Clone, Debug)]
pub struct X509Material {
    /// The certificates of ca-cert.pem (DER), to verify the peer.
    pub ca_certs: Vec<Vec<u8>>,
    /// From ca-crl.pem (DER), when there is one.
    pub crls: Vec<Vec<u8>>,
    /// A server always has one; a client only with both
    /// client-cert.pem and client-key.pem.
    pub identity: Option<Identity>,
    /// Servers only: from dh-params.pem. None: no such file, where QEMU
    /// generates 2048-bit parameters; a vmm server then uses the
    /// well-known ffdhe2048 group of RFC 7919 (or ECDHE, which needs
    /// none).
    pub dh_params: Option<DhParams>,
}

/// What loading `tls-creds-anon` keeps: servers may have DH parameters
/// (None as for x509).
#[derive(Clone, Debug)]
pub struct AnonMaterial {
    pub dh_params: Option<DhParams>,
}

/// Loaded credentials and the object's settings, as a TLS user reads
/// them when it starts a session.
#[derive(Clone, Debug)]
pub struct TlsCredentials {
    pub endpoint: Endpoint,
    pub verify_peer: bool,
    pub priority: Option<String>,
    pub material: Material,
}

#[derive(Clone, Debug)]
pub enum Material {
    X509(std::sync::Arc<X509Material>),
    Anon(std::sync::Arc<AnonMaterial>),
}

/// QEMU's qcrypto_tls_creds_get_path: DIR/FILE when it exists; a
/// missing optional file is None, a missing required one (or any other
/// stat failure) an error.
fn credential_path(dir: Option<&str>, file: &str, required: bool) -> Result<Option<String>> {
    let Some(dir) = dir else {
        return if required {
            Err(TlsCredsError::MissingDir)
        } else {
            Ok(None)
        };
    };
    let path = format!("{dir}/{file}");
    match std::fs::metadata(&path) {
        Ok(_) => Ok(Some(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(None),
        Err(e) => Err(TlsCredsError::Access {
            cause: error::strerror(&e),
            path,
        }),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads a whole file the way GLib's g_file_get_contents does, with its
/// error texts.
fn read_glib(path: &str) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).map_err(|e| error::glib_read_error(path, &e, false))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(|e| error::glib_read_error(path, &e, true))?;
    Ok(data)
}

/// QEMU hands GnuTLS the file as a C string: it ends at the first NUL.
fn c_string(mut data: Vec<u8>) -> Vec<u8> {
    if let Some(nul) = data.iter().position(|&b| b == 0) {
        data.truncate(nul);
    }
    data
}

fn readable(path: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(path) else {
        return false;
    };
    // SAFETY: access reads the NUL-terminated path and nothing else.
    unsafe { libc::access(c.as_ptr(), libc::R_OK) == 0 }
}

/// The x509 settings that decide what loads.
pub struct X509Settings<'a> {
    pub dir: Option<&'a str>,
    pub endpoint: Endpoint,
    pub sanity_check: bool,
}

/// Loads x509 credentials in QEMU 2.11's order: the paths, the sanity
/// check, the CA certificates, the key pair (`password` is asked for
/// only then, as QEMU looks the secret up only then), the CRL, the DH
/// parameters.
pub fn load_x509(
    settings: &X509Settings,
    password: &mut dyn FnMut() -> Result<Option<Vec<u8>>>,
) -> Result<X509Material> {
    let server = settings.endpoint == Endpoint::Server;
    let dir = settings.dir;
    let (ca, crl, cert, key, dh) = if server {
        let ca = credential_path(dir, CA_CERT, true)?;
        let crl = credential_path(dir, CA_CRL, false)?;
        let cert = credential_path(dir, SERVER_CERT, true)?;
        let key = credential_path(dir, SERVER_KEY, true)?;
        let dh = credential_path(dir, DH_PARAMS, false)?;
        (ca, crl, cert, key, dh)
    } else {
        let ca = credential_path(dir, CA_CERT, true)?;
        let cert = credential_path(dir, CLIENT_CERT, false)?;
        let key = credential_path(dir, CLIENT_KEY, false)?;
        (ca, None, cert, key, None)
    };
    // A required path is always there once credential_path succeeded.
    let ca = ca.ok_or(TlsCredsError::MissingDir)?;

    if settings.sanity_check {
        sanity_check(server, &ca, cert.as_deref())?;
    }

    let ca_certs = load_ca_certs(&ca)?;
    let identity = match (&cert, &key) {
        (Some(cert), Some(key)) => {
            let password = password()?.map(c_string);
            Some(load_identity(cert, key, password.as_deref())?)
        }
        _ => None,
    };
    let crls = match &crl {
        Some(path) => load_crls(path)?,
        None => Vec::new(),
    };
    let dh_params = if server {
        load_dh_params(dh.as_deref())?
    } else {
        None
    };
    Ok(X509Material {
        ca_certs,
        crls,
        identity,
        dh_params,
    })
}

/// Loads anonymous credentials: only a server reads anything, its
/// optional dh-params.pem.
pub fn load_anon(dir: Option<&str>, endpoint: Endpoint) -> Result<AnonMaterial> {
    let dh_params = if endpoint == Endpoint::Server {
        let path = credential_path(dir, DH_PARAMS, false)?;
        load_dh_params(path.as_deref())?
    } else {
        None
    };
    Ok(AnonMaterial { dh_params })
}

/// QEMU's qcrypto_tls_creds_x509_sanity_check: the endpoint's own
/// certificate and every CA certificate checked on their own, then the
/// first against the second. Files that cannot be read are skipped
/// here (loading them later fails).
fn sanity_check(server: bool, ca_path: &str, cert_path: Option<&str>) -> Result<()> {
    let role = if server { Role::Server } else { Role::Client };
    let cert = match cert_path {
        Some(path) if readable(path) => Some(load_cert(path, server)?),
        _ => None,
    };
    let cas = if readable(ca_path) {
        load_ca_list(ca_path)?
    } else {
        Vec::new()
    };
    let now = now();
    if let (Some(cert), Some(path)) = (&cert, cert_path) {
        check_cert(cert, path, role, now)?;
    }
    for ca in &cas {
        check_cert(ca, ca_path, Role::Ca, now)?;
    }
    if let (Some(cert), Some(path)) = (&cert, cert_path) {
        if !cas.is_empty() {
            verify::verify(cert, &cas, now).map_err(|reason| TlsCredsError::Chain {
                cert: path.to_string(),
                ca: ca_path.to_string(),
                reason,
            })?;
        }
    }
    Ok(())
}

fn load_cert(path: &str, server: bool) -> Result<Cert> {
    let data = read_glib(path).map_err(|cause| TlsCredsError::ReadCertFile {
        path: path.to_string(),
        cause,
    })?;
    let import = |reason| TlsCredsError::ImportCert {
        path: path.to_string(),
        server,
        reason,
    };
    let der = pem::first(&c_string(data), CERT_LABELS).map_err(import)?;
    Cert::parse(der).map_err(import)
}

fn load_ca_list(path: &str) -> Result<Vec<Cert>> {
    let data = read_glib(path).map_err(|cause| TlsCredsError::ReadCertFile {
        path: path.to_string(),
        cause,
    })?;
    let fail = || TlsCredsError::ImportCaList {
        path: path.to_string(),
    };
    let blocks = pem::all(&c_string(data), CERT_LABELS);
    if blocks.is_empty() {
        return Err(fail());
    }
    blocks
        .into_iter()
        .take(SANITY_MAX_CA_CERTS)
        .map(|block| block.and_then(Cert::parse).map_err(|_| fail()))
        .collect()
}

/// QEMU's qcrypto_tls_creds_check_cert: times, basic constraints, key
/// usage, and for the endpoint's own certificate its purpose.
fn check_cert(cert: &Cert, path: &str, role: Role, now: u64) -> Result<()> {
    let path = path.to_string();
    let is_ca = role == Role::Ca;
    let server = role == Role::Server;
    if cert.not_after() < now {
        return Err(TlsCredsError::Expired { path, role });
    }
    if cert.not_before() > now {
        return Err(TlsCredsError::NotYetActive { path, role });
    }

    match cert.is_ca() {
        Ok(Some(true)) if !is_ca => return Err(TlsCredsError::ConstraintsShowCa { path, server }),
        Ok(Some(false)) if is_ca => return Err(TlsCredsError::ConstraintsNotCa { path }),
        Ok(None) if is_ca => return Err(TlsCredsError::MissingConstraintsForCa { path }),
        Ok(_) => {}
        Err(reason) => return Err(TlsCredsError::QueryConstraints { path, reason }),
    }

    // Without the extension every use is allowed; only a critical one
    // can forbid.
    match cert.key_usage() {
        Ok(Some(usage)) if usage.critical => {
            if is_ca {
                if !usage.key_cert_sign {
                    return Err(TlsCredsError::NoCertSign { path });
                }
            } else if !usage.digital_signature {
                return Err(TlsCredsError::NoDigitalSignature { path });
            } else if !usage.key_encipherment {
                return Err(TlsCredsError::NoKeyEncipherment { path });
            }
        }
        Ok(_) => {}
        Err(reason) => return Err(TlsCredsError::QueryKeyUsage { path, reason }),
    }

    if is_ca {
        return Ok(());
    }
    let (purposes, critical) = match cert.key_purposes() {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(()),
        Err(reason) => return Err(TlsCredsError::QueryKeyPurpose { path, reason }),
    };
    // An empty list allows everything, as no extension does.
    let any = purposes.is_empty() || purposes.contains(&cert::OID_KP_ANY);
    let allow_server = any || purposes.contains(&cert::OID_KP_SERVER_AUTH);
    let allow_client = any || purposes.contains(&cert::OID_KP_CLIENT_AUTH);
    if critical && server && !allow_server {
        return Err(TlsCredsError::NotForServer { path });
    }
    if critical && !server && !allow_client {
        return Err(TlsCredsError::NotForClient { path });
    }
    Ok(())
}

/// ca-cert.pem as GnuTLS loads a trust file: every certificate in it.
fn load_ca_certs(path: &str) -> Result<Vec<Vec<u8>>> {
    let fail = |reason| TlsCredsError::LoadCa {
        path: path.to_string(),
        reason,
    };
    let data = std::fs::read(path).map_err(|_| fail(Reason::FileRead))?;
    let blocks = pem::all(&data, CERT_LABELS);
    if blocks.is_empty() {
        return Err(fail(Reason::NoCertificate));
    }
    blocks
        .into_iter()
        .map(|block| block.and_then(Cert::parse).map(|c| c.der).map_err(fail))
        .collect()
}

/// The key pair as GnuTLS loads it: the key first, then the
/// certificate chain, then whether they belong together.
fn load_identity(cert_path: &str, key_path: &str, password: Option<&[u8]>) -> Result<Identity> {
    let fail = |reason| TlsCredsError::LoadKey {
        cert: cert_path.to_string(),
        key: key_path.to_string(),
        reason,
    };
    let key_data =
        zeroize::Zeroizing::new(std::fs::read(key_path).map_err(|_| fail(Reason::FileRead))?);
    let key = key::load(&key_data, password).map_err(fail)?;
    let cert_data = std::fs::read(cert_path).map_err(|_| fail(Reason::FileRead))?;
    let blocks = pem::all(&cert_data, CERT_LABELS);
    if blocks.is_empty() {
        return Err(fail(Reason::Base64));
    }
    let chain: Vec<Cert> = blocks
        .into_iter()
        .map(|block| block.and_then(Cert::parse))
        .collect::<std::result::Result<_, _>>()
        .map_err(fail)?;
    let leaf = chain.first().ok_or_else(|| fail(Reason::Base64))?;
    key::matches(&key, &leaf.cert.tbs_certificate.subject_public_key_info).map_err(fail)?;
    Ok(Identity {
        chain: chain.into_iter().map(|c| c.der).collect(),
        key,
    })
}

fn load_crls(path: &str) -> Result<Vec<Vec<u8>>> {
    use x509_cert::der::Decode;
    let fail = |reason| TlsCredsError::LoadCrl {
        path: path.to_string(),
        reason,
    };
    let data = std::fs::read(path).map_err(|_| fail(Reason::FileRead))?;
    let blocks = pem::all(&data, &["X509 CRL"]);
    if blocks.is_empty() {
        return Err(fail(Reason::Base64));
    }
    blocks
        .into_iter()
        .map(|block| {
            let der = block?;
            x509_cert::crl::CertificateList::from_der(&der).map_err(|_| Reason::Der)?;
            Ok(der)
        })
        .collect::<std::result::Result<_, Reason>>()
        .map_err(fail)
}

/// dh-params.pem when there is one.
fn load_dh_params(path: Option<&str>) -> Result<Option<DhParams>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let data = read_glib(path).map_err(TlsCredsError::ReadDhParams)?;
    DhParams::from_pem(&data)
        .map(Some)
        .map_err(|reason| TlsCredsError::LoadDhParams {
            path: path.to_string(),
            reason,
        })
}
