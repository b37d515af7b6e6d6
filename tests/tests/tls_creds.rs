//! `tls-creds-x509` and `tls-creds-anon` through the vmm binary: the
//! files each endpoint needs, loaded when the object is created, and
//! QEMU 2.11's sanity checks with their texts. The certificates are made
//! here with the `openssl` command; without it the tests say they were
//! skipped.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use vmm_tests::{generic, start_fails, QmpClient, TempDir, VmmProcess};

fn start(extra: &[&str]) -> (VmmProcess, QmpClient) {
    VmmProcess::start_paused(extra)
}

fn have_openssl(test: &str) -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("{test} skipped: openssl is not installed (scripts/setup.sh installs it)");
    }
    ok
}

/// Keys and certificates made with openssl in one directory; each
/// credentials directory of a test copies the files it wants from here.
struct Pki {
    dir: TempDir,
}

/// Extensions of a certificate, in openssl's config syntax.
const CA_EXT: &str = "basicConstraints=critical,CA:TRUE\n\
                      keyUsage=critical,keyCertSign,cRLSign\n\
                      subjectKeyIdentifier=hash\n";
const SERVER_EXT: &str = "basicConstraints=critical,CA:FALSE\n\
                          keyUsage=critical,digitalSignature,keyEncipherment\n\
                          extendedKeyUsage=critical,serverAuth\n\
                          subjectAltName=DNS:localhost\n";
const CLIENT_EXT: &str = "basicConstraints=critical,CA:FALSE\n\
                          keyUsage=critical,digitalSignature,keyEncipherment\n\
                          extendedKeyUsage=critical,clientAuth\n";

static SERIAL: AtomicUsize = AtomicUsize::new(1);

impl Pki {
    fn new() -> Pki {
        Pki {
            dir: TempDir::new("pki"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A P-256 key in PKCS#8.
    fn ec_key(&self, name: &str) {
        self.openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            name,
        ]);
    }

    fn rsa_key(&self, name: &str) {
        self.openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            name,
        ]);
    }

    /// Certificate `out` for `key` with subject CN=`cn` and extensions
    /// `ext`, signed by `issuer` (certificate, key) or by itself.
    fn cert(
        &self,
        out: &str,
        key: &str,
        cn: &str,
        ext: &str,
        issuer: Option<(&str, &str)>,
        days: i32,
    ) {
        let csr = format!("{out}.csr");
        let ext_file = format!("{out}.ext");
        std::fs::write(self.path(&ext_file), format!("[v3]\n{ext}")).expect("write ext");
        self.openssl(&[
            "req",
            "-new",
            "-key",
            key,
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            &csr,
        ]);
        let serial = SERIAL.fetch_add(1, Ordering::SeqCst).to_string();
        let days = days.to_string();
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-days",
            &days,
            "-set_serial",
            &serial,
            "-extfile",
            &ext_file,
            "-extensions",
            "v3",
            "-out",
            out,
        ];
        match issuer {
            Some((ca_cert, ca_key)) => args.extend(["-CA", ca_cert, "-CAkey", ca_key]),
            None => args.extend(["-signkey", key]),
        }
        self.openssl(&args);
    }

    /// A certificate valid only from 2099 on (`openssl ca` sets the dates).
    fn future_cert(&self, out: &str, key: &str, ext: &str, ca: (&str, &str)) {
        let csr = format!("{out}.csr");
        std::fs::write(self.path("future.ext"), format!("[v3]\n{ext}")).expect("write ext");
        std::fs::write(self.path("index.txt"), "").expect("index");
        std::fs::write(self.path("serial"), "1000\n").expect("serial");
        let config = format!(
            "[ca]\ndefault_ca = test\n[test]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\n\
             serial = {d}/serial\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n",
            d = self.dir.path().display()
        );
        std::fs::write(self.path("ca.cnf"), config).expect("ca config");
        self.openssl(&[
            "req",
            "-new",
            "-key",
            key,
            "-subj",
            "/CN=future",
            "-out",
            &csr,
        ]);
        self.openssl(&[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-cert",
            ca.0,
            "-keyfile",
            ca.1,
            "-in",
            &csr,
            "-out",
            out,
            "-notext",
            "-startdate",
            "20991231000000Z",
            "-enddate",
            "21001231000000Z",
            "-extfile",
            "future.ext",
            "-extensions",
            "v3",
        ]);
    }

    /// A credentials directory holding `files`: (name there, name here).
    fn creds(&self, tag: &str, files: &[(&str, &str)]) -> TempDir {
        let dir = TempDir::new(tag);
        for (to, from) in files {
            std::fs::copy(self.path(from), dir.path().join(to)).expect("copy credential");
        }
        dir
    }
}

/// The usual PKI: an RSA CA, EC server and client certificates, another
/// (EC) CA and a server certificate it signed.
fn standard_pki() -> Pki {
    let pki = Pki::new();
    pki.rsa_key("ca-key.pem");
    pki.cert("ca-cert.pem", "ca-key.pem", "vmm test CA", CA_EXT, None, 30);
    let ca = Some(("ca-cert.pem", "ca-key.pem"));
    pki.ec_key("server-key.pem");
    pki.cert(
        "server-cert.pem",
        "server-key.pem",
        "localhost",
        SERVER_EXT,
        ca,
        30,
    );
    pki.ec_key("client-key.pem");
    pki.cert(
        "client-cert.pem",
        "client-key.pem",
        "client",
        CLIENT_EXT,
        ca,
        30,
    );
    pki.ec_key("other-ca-key.pem");
    pki.cert(
        "other-ca-cert.pem",
        "other-ca-key.pem",
        "other CA",
        CA_EXT,
        None,
        30,
    );
    pki.cert(
        "foreign-cert.pem",
        "server-key.pem",
        "localhost",
        SERVER_EXT,
        Some(("other-ca-cert.pem", "other-ca-key.pem")),
        30,
    );
    pki
}

fn server_files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("ca-cert.pem", "ca-cert.pem"),
        ("server-cert.pem", "server-cert.pem"),
        ("server-key.pem", "server-key.pem"),
    ]
}

fn get(qmp: &mut QmpClient, id: &str, property: &str) -> Value {
    qmp.qom_get(&format!("/objects/{id}"), property)
}

fn add_x509(qmp: &mut QmpClient, id: &str, props: Value) -> Value {
    qmp.execute(
        "object-add",
        json!({"qom-type": "tls-creds-x509", "id": id, "props": props}),
    )
}

/// object-add of a server's x509 credentials from `dir` that must fail;
/// its error, and nothing left behind.
fn server_error(qmp: &mut QmpClient, dir: &Path, extra: Value) -> (String, String) {
    let mut p = json!({"dir": dir.to_str(), "endpoint": "server"});
    if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
        p.extend(extra.clone());
    }
    let r = add_x509(qmp, "bad", p);
    let e = vmm_tests::error_of(&r).unwrap_or_else(|| panic!("object-add did not fail: {r}"));
    assert!(!qmp.qom_props("/objects").contains_key("bad"));
    e
}

#[test]
fn x509_loads_what_each_endpoint_needs() {
    if !have_openssl("x509_loads_what_each_endpoint_needs") {
        return;
    }
    let pki = standard_pki();
    let server = pki.creds("tls-server", &server_files());
    let server_arg = format!(
        "tls-creds-x509,id=tls0,dir={},endpoint=server",
        server.path().display()
    );
    let (_vmm, mut qmp) = start(&["-object", &server_arg]);
    assert_eq!(get(&mut qmp, "tls0", "loaded"), json!(true));
    assert_eq!(get(&mut qmp, "tls0", "endpoint"), json!("server"));
    assert_eq!(get(&mut qmp, "tls0", "verify-peer"), json!(true));
    assert_eq!(get(&mut qmp, "tls0", "sanity-check"), json!(true));
    assert_eq!(get(&mut qmp, "tls0", "priority"), json!(""));
    assert_eq!(get(&mut qmp, "tls0", "passwordid"), json!(""));
    assert_eq!(get(&mut qmp, "tls0", "dir"), json!(server.path().to_str()));
    let expected: BTreeMap<String, String> = [
        ("type", "string"),
        ("loaded", "bool"),
        ("sanity-check", "bool"),
        ("passwordid", "string"),
        ("verify-peer", "bool"),
        ("dir", "string"),
        ("endpoint", "QCryptoTLSCredsEndpoint"),
        ("priority", "string"),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), t.to_string()))
    .collect();
    assert_eq!(qmp.qom_props("/objects/tls0"), expected);

    // A client needs only the CA; its own certificate and key are
    // optional, and loaded when both are there.
    let client_ca = pki.creds("tls-client-ca", &[("ca-cert.pem", "ca-cert.pem")]);
    let r = add_x509(&mut qmp, "c0", json!({"dir": client_ca.path().to_str()}));
    assert_eq!(r["return"], json!({}), "{r}");
    assert_eq!(get(&mut qmp, "c0", "endpoint"), json!("client"));
    assert_eq!(get(&mut qmp, "c0", "loaded"), json!(true));
    let client = pki.creds(
        "tls-client",
        &[
            ("ca-cert.pem", "ca-cert.pem"),
            ("client-cert.pem", "client-cert.pem"),
            ("client-key.pem", "client-key.pem"),
        ],
    );
    let r = add_x509(
        &mut qmp,
        "c1",
        json!({"dir": client.path().to_str(), "endpoint": "client",
               "verify-peer": false, "priority": "NORMAL"}),
    );
    assert_eq!(r["return"], json!({}), "{r}");
    assert_eq!(get(&mut qmp, "c1", "verify-peer"), json!(false));
    assert_eq!(get(&mut qmp, "c1", "priority"), json!("NORMAL"));

    // An ECDSA-signed chain (the other CA's), and a server whose
    // optional CRL and DH parameters are there.
    let foreign = pki.creds(
        "tls-ec",
        &[
            ("ca-cert.pem", "other-ca-cert.pem"),
            ("server-cert.pem", "foreign-cert.pem"),
            ("server-key.pem", "server-key.pem"),
        ],
    );
    let r = add_x509(
        &mut qmp,
        "ec",
        json!({"dir": foreign.path().to_str(), "endpoint": "server"}),
    );
    assert_eq!(r["return"], json!({}), "{r}");
    pki.openssl(&[
        "genpkey",
        "-genparam",
        "-algorithm",
        "DH",
        "-pkeyopt",
        "dh_param:ffdhe2048",
        "-out",
        "dh-params.pem",
    ]);
    let full = pki.creds(
        "tls-full",
        &[
            ("ca-cert.pem", "ca-cert.pem"),
            ("server-cert.pem", "server-cert.pem"),
            ("server-key.pem", "server-key.pem"),
            ("dh-params.pem", "dh-params.pem"),
        ],
    );
    make_crl(&pki, &full.path().join("ca-crl.pem"));
    let r = add_x509(
        &mut qmp,
        "full",
        json!({"dir": full.path().to_str(), "endpoint": "server"}),
    );
    assert_eq!(r["return"], json!({}), "{r}");

    // `loaded` can be dropped and set again; a load that fails leaves
    // the object unloaded.
    let set = |qmp: &mut QmpClient, property: &str, value: Value| {
        qmp.execute(
            "qom-set",
            json!({"path": "/objects/c0", "property": property, "value": value}),
        )
    };
    assert_eq!(set(&mut qmp, "loaded", json!(false))["return"], json!({}));
    assert_eq!(get(&mut qmp, "c0", "loaded"), json!(false));
    assert_eq!(set(&mut qmp, "loaded", json!(true))["return"], json!({}));
    assert_eq!(get(&mut qmp, "c0", "loaded"), json!(true));
    assert_eq!(set(&mut qmp, "loaded", json!(false))["return"], json!({}));
    assert_eq!(
        set(&mut qmp, "dir", json!("/nonexistent"))["return"],
        json!({})
    );
    assert_eq!(
        vmm_tests::error_of(&set(&mut qmp, "loaded", json!(true))),
        Some(generic(
            "Unable to access credentials /nonexistent/ca-cert.pem: No such file or directory"
        ))
    );
    assert_eq!(get(&mut qmp, "c0", "loaded"), json!(false));
    assert_eq!(
        vmm_tests::error_of(&set(&mut qmp, "endpoint", json!("bogus"))),
        Some(generic("Invalid parameter 'bogus'"))
    );
    for id in ["tls0", "c0", "c1", "ec", "full"] {
        qmp.ok("object-del", json!({ "id": id }));
    }
}

/// An empty CRL signed by the test CA.
fn make_crl(pki: &Pki, out: &Path) {
    std::fs::write(pki.path("index.txt"), "").expect("index");
    std::fs::write(pki.path("crlnumber"), "01\n").expect("crlnumber");
    let config = format!(
        "[ca]\ndefault_ca = test\n[test]\ndatabase = {d}/index.txt\ncrlnumber = {d}/crlnumber\n\
         default_md = sha256\ndefault_crl_days = 30\n",
        d = pki.dir.path().display()
    );
    std::fs::write(pki.path("crl.cnf"), config).expect("crl config");
    pki.openssl(&[
        "ca",
        "-batch",
        "-gencrl",
        "-config",
        "crl.cnf",
        "-cert",
        "ca-cert.pem",
        "-keyfile",
        "ca-key.pem",
        "-out",
        "ca-crl.pem",
    ]);
    std::fs::copy(pki.path("ca-crl.pem"), out).expect("copy crl");
}

#[test]
fn x509_missing_files_and_bad_pem() {
    if !have_openssl("x509_missing_files_and_bad_pem") {
        return;
    }
    let pki = standard_pki();
    let (_vmm, mut qmp) = start(&[]);

    let r = add_x509(&mut qmp, "bad", json!({"endpoint": "server"}));
    assert_eq!(
        vmm_tests::error_of(&r),
        Some(generic("Missing 'dir' property value"))
    );
    let empty = pki.creds("tls-empty", &[]);
    let d = empty.path().display().to_string();
    assert_eq!(
        server_error(&mut qmp, empty.path(), json!({})),
        generic(&format!(
            "Unable to access credentials {d}/ca-cert.pem: No such file or directory"
        ))
    );
    let no_key = pki.creds(
        "tls-nokey",
        &[
            ("ca-cert.pem", "ca-cert.pem"),
            ("server-cert.pem", "server-cert.pem"),
        ],
    );
    let d = no_key.path().display().to_string();
    assert_eq!(
        server_error(&mut qmp, no_key.path(), json!({})),
        generic(&format!(
            "Unable to access credentials {d}/server-key.pem: No such file or directory"
        ))
    );
    // An optional file is only skipped when it does not exist.
    let r = add_x509(&mut qmp, "bad", json!({"dir": "/etc/hostname"}));
    assert_eq!(
        vmm_tests::error_of(&r),
        Some(generic(
            "Unable to access credentials /etc/hostname/ca-cert.pem: Not a directory"
        ))
    );

    // Files that are not PEM certificates.
    let junk = pki.creds("tls-junk", &server_files());
    let d = junk.path().display().to_string();
    // Each text is the certificate file's contents and what loading it says.
    for (contents, why) in [
        ("not a certificate\n", "Base64 unexpected header error."),
        (
            "-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n",
            "Base64 decoding error.",
        ),
        (
            "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n",
            "ASN1 parser: Error in DER parsing.",
        ),
    ] {
        std::fs::write(junk.path().join("server-cert.pem"), contents).expect("write");
        assert_eq!(
            server_error(&mut qmp, junk.path(), json!({})),
            generic(&format!(
                "Unable to import server certificate {d}/server-cert.pem: {why}"
            )),
            "{contents:?}"
        );
    }
    std::fs::copy(
        pki.path("server-cert.pem"),
        junk.path().join("server-cert.pem"),
    )
    .expect("copy");
    std::fs::write(junk.path().join("ca-cert.pem"), "no CA here\n").expect("write");
    assert_eq!(
        server_error(&mut qmp, junk.path(), json!({})),
        generic(&format!(
            "Unable to import CA certificate list {d}/ca-cert.pem"
        ))
    );
    // Without the sanity check, GnuTLS's loading of the trust file
    // reports it.
    assert_eq!(
        server_error(&mut qmp, junk.path(), json!({"sanity-check": false})),
        generic(&format!(
            "Cannot load CA certificate '{d}/ca-cert.pem': No certificate was found."
        ))
    );
    std::fs::copy(pki.path("ca-cert.pem"), junk.path().join("ca-cert.pem")).expect("copy");
    std::fs::write(junk.path().join("ca-crl.pem"), "no CRL here\n").expect("write");
    assert_eq!(
        server_error(&mut qmp, junk.path(), json!({})),
        generic(&format!(
            "Cannot load CRL '{d}/ca-crl.pem': Base64 decoding error."
        ))
    );
    std::fs::remove_file(junk.path().join("ca-crl.pem")).expect("rm");
    std::fs::write(junk.path().join("dh-params.pem"), "no DH here\n").expect("write");
    assert_eq!(
        server_error(&mut qmp, junk.path(), json!({})),
        generic(&format!(
            "Unable to load DH parameters from {d}/dh-params.pem: Base64 unexpected header error."
        ))
    );
    std::fs::remove_file(junk.path().join("dh-params.pem")).expect("rm");

    // A key that is not the certificate's.
    std::fs::copy(
        pki.path("client-key.pem"),
        junk.path().join("server-key.pem"),
    )
    .expect("copy");
    assert_eq!(
        server_error(&mut qmp, junk.path(), json!({})),
        generic(&format!(
            "Cannot load certificate '{d}/server-cert.pem' & key '{d}/server-key.pem': \
             The certificate and the given key do not match."
        ))
    );
    std::fs::write(junk.path().join("server-key.pem"), "no key here\n").expect("write");
    assert_eq!(
        server_error(&mut qmp, junk.path(), json!({})),
        generic(&format!(
            "Cannot load certificate '{d}/server-cert.pem' & key '{d}/server-key.pem': \
             Base64 unexpected header error."
        ))
    );
}

#[test]
fn x509_sanity_checks() {
    if !have_openssl("x509_sanity_checks") {
        return;
    }
    let pki = standard_pki();
    let ca = Some(("ca-cert.pem", "ca-key.pem"));
    pki.cert(
        "expired-cert.pem",
        "server-key.pem",
        "localhost",
        SERVER_EXT,
        ca,
        -1,
    );
    pki.future_cert(
        "future-cert.pem",
        "server-key.pem",
        SERVER_EXT,
        ("ca-cert.pem", "ca-key.pem"),
    );
    pki.cert(
        "client-only-cert.pem",
        "server-key.pem",
        "localhost",
        CLIENT_EXT,
        ca,
        30,
    );
    // The same, but with a purpose that does not claim to be critical:
    // QEMU lets it pass.
    pki.cert(
        "client-soft-cert.pem",
        "server-key.pem",
        "localhost",
        "extendedKeyUsage=clientAuth\n",
        ca,
        30,
    );
    pki.cert(
        "leaf-ca-cert.pem",
        "server-key.pem",
        "localhost",
        CA_EXT,
        ca,
        30,
    );
    pki.cert(
        "no-encipher-cert.pem",
        "server-key.pem",
        "localhost",
        "keyUsage=critical,digitalSignature\n",
        ca,
        30,
    );
    pki.cert(
        "not-ca-cert.pem",
        "ca-key.pem",
        "vmm test CA",
        "basicConstraints=critical,CA:FALSE\n",
        None,
        30,
    );
    pki.cert(
        "no-bc-ca-cert.pem",
        "ca-key.pem",
        "vmm test CA",
        "keyUsage=critical,keyCertSign\n",
        None,
        30,
    );
    pki.cert(
        "no-sign-ca-cert.pem",
        "ca-key.pem",
        "vmm test CA",
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature\n",
        None,
        30,
    );
    pki.cert(
        "expired-ca-cert.pem",
        "ca-key.pem",
        "vmm test CA",
        CA_EXT,
        None,
        -1,
    );
    // A CA with the real one's name but another key, and a certificate
    // it signed that names no key identifier: found by name, its
    // signature does not verify.
    pki.cert(
        "impostor-ca-cert.pem",
        "other-ca-key.pem",
        "vmm test CA",
        CA_EXT,
        None,
        30,
    );
    pki.cert(
        "impostor-cert.pem",
        "server-key.pem",
        "localhost",
        "authorityKeyIdentifier=none\nsubjectKeyIdentifier=none\n",
        Some(("impostor-ca-cert.pem", "other-ca-key.pem")),
        30,
    );
    let (_vmm, mut qmp) = start(&[]);

    // Each case: the server directory with one file replaced.
    let case = |qmp: &mut QmpClient, file: &str, from: &str, extra: Value| {
        let mut files = server_files();
        for f in files.iter_mut() {
            if f.0 == file {
                f.1 = from;
            }
        }
        let dir = pki.creds("tls-case", &files);
        let d = dir.path().display().to_string();
        let e = server_error(qmp, dir.path(), extra);
        (e.0, e.1.replace(&d, "D"))
    };
    let none = json!({});
    assert_eq!(
        case(
            &mut qmp,
            "server-cert.pem",
            "expired-cert.pem",
            none.clone()
        ),
        generic("The server certificate D/server-cert.pem has expired")
    );
    assert_eq!(
        case(&mut qmp, "server-cert.pem", "future-cert.pem", none.clone()),
        generic("The server certificate D/server-cert.pem is not yet active")
    );
    assert_eq!(
        case(
            &mut qmp,
            "server-cert.pem",
            "foreign-cert.pem",
            none.clone()
        ),
        generic(
            "Our own certificate D/server-cert.pem failed validation against D/ca-cert.pem: \
             The certificate hasn't got a known issuer"
        )
    );
    assert_eq!(
        case(
            &mut qmp,
            "server-cert.pem",
            "impostor-cert.pem",
            none.clone()
        ),
        generic(
            "Our own certificate D/server-cert.pem failed validation against D/ca-cert.pem: \
             The certificate is not trusted"
        )
    );
    assert_eq!(
        case(
            &mut qmp,
            "server-cert.pem",
            "client-only-cert.pem",
            none.clone()
        ),
        generic("Certificate D/server-cert.pem purpose does not allow use with a TLS server")
    );
    assert_eq!(
        case(
            &mut qmp,
            "server-cert.pem",
            "leaf-ca-cert.pem",
            none.clone()
        ),
        generic(
            "The certificate D/server-cert.pem basic constraints show a CA, \
             but we need one for a server"
        )
    );
    assert_eq!(
        case(
            &mut qmp,
            "server-cert.pem",
            "no-encipher-cert.pem",
            none.clone()
        ),
        generic("Certificate D/server-cert.pem usage does not permit key encipherment")
    );
    assert_eq!(
        case(&mut qmp, "ca-cert.pem", "not-ca-cert.pem", none.clone()),
        generic("The certificate D/ca-cert.pem basic constraints do not show a CA")
    );
    assert_eq!(
        case(&mut qmp, "ca-cert.pem", "no-bc-ca-cert.pem", none.clone()),
        generic("The certificate D/ca-cert.pem is missing basic constraints for a CA")
    );
    assert_eq!(
        case(&mut qmp, "ca-cert.pem", "no-sign-ca-cert.pem", none.clone()),
        generic("Certificate D/ca-cert.pem usage does not permit certificate signing")
    );
    assert_eq!(
        case(&mut qmp, "ca-cert.pem", "expired-ca-cert.pem", none.clone()),
        generic("The CA certificate D/ca-cert.pem has expired")
    );

    // A client certificate used by a client is checked as a client's.
    let dir = pki.creds(
        "tls-client-bad",
        &[
            ("ca-cert.pem", "ca-cert.pem"),
            ("client-cert.pem", "server-cert.pem"),
            ("client-key.pem", "server-key.pem"),
        ],
    );
    let r = add_x509(&mut qmp, "bad", json!({"dir": dir.path().to_str()}));
    assert_eq!(
        vmm_tests::error_of(&r),
        Some(generic(&format!(
            "Certificate {}/client-cert.pem purpose does not allow use with a TLS client",
            dir.path().display()
        )))
    );

    // Loads: a non-critical purpose, and with sanity-check off, the
    // certificates the checks refuse.
    let ok = |qmp: &mut QmpClient, from: &str, extra: Value| {
        let mut files = server_files();
        files[1].1 = from;
        let dir = pki.creds("tls-ok", &files);
        let mut p = json!({"dir": dir.path().to_str(), "endpoint": "server"});
        if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
            p.extend(extra.clone());
        }
        let r = add_x509(qmp, "ok", p);
        assert_eq!(r["return"], json!({}), "{from}: {r}");
        assert_eq!(get(qmp, "ok", "loaded"), json!(true));
        qmp.ok("object-del", json!({"id": "ok"}));
    };
    ok(&mut qmp, "client-soft-cert.pem", json!({}));
    let off = json!({"sanity-check": false});
    for cert in [
        "expired-cert.pem",
        "foreign-cert.pem",
        "client-only-cert.pem",
    ] {
        ok(&mut qmp, cert, off.clone());
    }
}

#[test]
fn x509_key_formats_and_passwords() {
    if !have_openssl("x509_key_formats_and_passwords") {
        return;
    }
    let pki = standard_pki();
    let ca = Some(("ca-cert.pem", "ca-key.pem"));
    // An RSA server key in PKCS#1, the EC key in SEC1, and the EC key
    // encrypted in PKCS#8 (PBES2, AES-256-CBC).
    pki.rsa_key("rsa-key.pem");
    pki.cert(
        "rsa-cert.pem",
        "rsa-key.pem",
        "localhost",
        SERVER_EXT,
        ca,
        30,
    );
    pki.openssl(&[
        "rsa",
        "-in",
        "rsa-key.pem",
        "-traditional",
        "-out",
        "rsa-pkcs1-key.pem",
    ]);
    pki.openssl(&["ec", "-in", "server-key.pem", "-out", "sec1-key.pem"]);
    pki.openssl(&[
        "pkcs8",
        "-topk8",
        "-in",
        "server-key.pem",
        "-out",
        "enc-key.pem",
        "-passout",
        "pass:hunter2",
        "-v2",
        "aes-256-cbc",
    ]);
    pki.openssl(&[
        "ec",
        "-in",
        "server-key.pem",
        "-out",
        "legacy-key.pem",
        "-aes256",
        "-passout",
        "pass:hunter2",
    ]);
    let dir_with = |cert: &'static str, key: &'static str| {
        pki.creds(
            "tls-keys",
            &[
                ("ca-cert.pem", "ca-cert.pem"),
                ("server-cert.pem", cert),
                ("server-key.pem", key),
            ],
        )
    };
    let (_vmm, mut qmp) = start(&["-object", "secret,id=pw,data=hunter2"]);
    let load = |qmp: &mut QmpClient, dir: &TempDir, extra: Value| {
        let mut p = json!({"dir": dir.path().to_str(), "endpoint": "server"});
        if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
            p.extend(extra.clone());
        }
        let r = add_x509(qmp, "k", p);
        if r.get("return").is_some() {
            assert_eq!(get(qmp, "k", "loaded"), json!(true));
            qmp.ok("object-del", json!({"id": "k"}));
        }
        vmm_tests::error_of(&r)
            .map(|(_, desc)| desc.replace(&dir.path().display().to_string(), "D"))
    };
    assert_eq!(
        load(
            &mut qmp,
            &dir_with("rsa-cert.pem", "rsa-pkcs1-key.pem"),
            json!({})
        ),
        None
    );
    assert_eq!(
        load(
            &mut qmp,
            &dir_with("rsa-cert.pem", "rsa-key.pem"),
            json!({})
        ),
        None
    );
    assert_eq!(
        load(
            &mut qmp,
            &dir_with("server-cert.pem", "sec1-key.pem"),
            json!({})
        ),
        None
    );
    let enc = dir_with("server-cert.pem", "enc-key.pem");
    assert_eq!(load(&mut qmp, &enc, json!({"passwordid": "pw"})), None);
    // The password may itself arrive encrypted, as management layers
    // pass it: AES-256-CBC under a master-key secret (keyid) with an iv.
    // Decrypted, it unlocks the key.
    let sealed = Command::new("openssl")
        .args([
            "enc",
            "-aes-256-cbc",
            "-a",
            "-K",
            &"11".repeat(32),
            "-iv",
            "30313233343536373839616263646566",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(stdin) = child.stdin.as_mut() {
                stdin.write_all(b"hunter2")?;
            }
            child.wait_with_output()
        })
        .expect("openssl enc");
    let sealed = String::from_utf8_lossy(&sealed.stdout).trim().to_string();
    qmp.ok(
        "object-add",
        json!({"qom-type": "secret", "id": "master",
               "props": {"data": "ERERERERERERERERERERERERERERERERERERERERERE=", "format": "base64"}}),
    );
    qmp.ok(
        "object-add",
        json!({"qom-type": "secret", "id": "sealed",
               "props": {"data": sealed, "format": "base64", "keyid": "master",
                         "iv": "MDEyMzQ1Njc4OWFiY2RlZg=="}}),
    );
    assert_eq!(load(&mut qmp, &enc, json!({"passwordid": "sealed"})), None);
    let cannot = "Cannot load certificate 'D/server-cert.pem' & key 'D/server-key.pem'";
    assert_eq!(
        load(&mut qmp, &enc, json!({})),
        Some(format!("{cannot}: Decryption has failed."))
    );
    assert_eq!(
        load(&mut qmp, &enc, json!({"passwordid": "nope"})),
        Some("No secret with id 'nope'".to_string())
    );
    // The wrong password.
    qmp.ok(
        "object-add",
        json!({"qom-type": "secret", "id": "wrong", "props": {"data": "hunter3"}}),
    );
    assert_eq!(
        load(&mut qmp, &enc, json!({"passwordid": "wrong"})),
        Some(format!("{cannot}: Decryption has failed."))
    );
    // A password must be UTF-8 (this one is 0xff, base64).
    qmp.ok(
        "object-add",
        json!({"qom-type": "secret", "id": "bin", "props": {"data": "/w==", "format": "base64"}}),
    );
    assert_eq!(
        load(&mut qmp, &enc, json!({"passwordid": "bin"})),
        Some("Data from secret bin is not valid UTF-8".to_string())
    );
    // OpenSSL's legacy PEM encryption is one vmm does not read, and says so.
    let legacy = load(
        &mut qmp,
        &dir_with("server-cert.pem", "legacy-key.pem"),
        json!({"passwordid": "pw"}),
    )
    .expect("legacy key refused");
    assert!(
        legacy.starts_with(&format!(
            "{cannot}: vmm does not read keys in OpenSSL's legacy"
        )),
        "{legacy}"
    );
    // An RSA key for an EC certificate.
    assert_eq!(
        load(
            &mut qmp,
            &dir_with("server-cert.pem", "rsa-key.pem"),
            json!({})
        ),
        Some(format!(
            "{cannot}: The certificate and the given key do not match."
        ))
    );
}

#[test]
fn anon_credentials() {
    let (_vmm, mut qmp) = start(&["-object", "tls-creds-anon,id=a0,endpoint=server"]);
    // Without a directory a server needs nothing (QEMU generates DH
    // parameters), nor does a client.
    assert_eq!(
        qmp.ok(
            "qom-get",
            json!({"path": "/objects/a0", "property": "loaded"})
        ),
        json!(true)
    );
    let expected: BTreeMap<String, String> = [
        ("type", "string"),
        ("loaded", "bool"),
        ("verify-peer", "bool"),
        ("dir", "string"),
        ("endpoint", "QCryptoTLSCredsEndpoint"),
        ("priority", "string"),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), t.to_string()))
    .collect();
    assert_eq!(qmp.qom_props("/objects/a0"), expected);
    qmp.ok(
        "object-add",
        json!({"qom-type": "tls-creds-anon", "id": "a1", "props": {"dir": "/nonexistent"}}),
    );
    assert_eq!(
        qmp.ok(
            "qom-get",
            json!({"path": "/objects/a1", "property": "endpoint"})
        ),
        json!("client")
    );
    let add = |qmp: &mut QmpClient, props: Value| {
        qmp.err(
            "object-add",
            json!({"qom-type": "tls-creds-anon", "id": "bad", "props": props}),
        )
    };
    // A server's DH parameters are optional, but must load when there.
    let dir = TempDir::new("tls-anon");
    let d = dir.path().display().to_string();
    let server = json!({"dir": dir.path().to_str(), "endpoint": "server"});
    qmp.ok(
        "object-add",
        json!({"qom-type": "tls-creds-anon", "id": "a2", "props": server}),
    );
    std::fs::write(dir.path().join("dh-params.pem"), "junk").expect("write");
    assert_eq!(
        add(&mut qmp, server.clone()),
        generic(&format!(
            "Unable to load DH parameters from {d}/dh-params.pem: Base64 unexpected header error."
        ))
    );
    // SEQUENCE { INTEGER 0, INTEGER 2 }: GnuTLS refuses a zero prime.
    std::fs::write(
        dir.path().join("dh-params.pem"),
        "-----BEGIN DH PARAMETERS-----\nMAYCAQACAQI=\n-----END DH PARAMETERS-----\n",
    )
    .expect("write");
    assert_eq!(
        add(&mut qmp, server.clone()),
        generic(&format!(
            "Unable to load DH parameters from {d}/dh-params.pem: An illegal parameter has been received."
        ))
    );
    assert_eq!(
        add(
            &mut qmp,
            json!({"dir": "/etc/hostname", "endpoint": "server"})
        ),
        generic("Unable to access credentials /etc/hostname/dh-params.pem: Not a directory")
    );
    if have_openssl("anon_credentials with DH parameters") {
        let out = Command::new("openssl")
            .args([
                "genpkey",
                "-genparam",
                "-algorithm",
                "DH",
                "-pkeyopt",
                "dh_param:ffdhe2048",
                "-out",
            ])
            .arg(dir.path().join("dh-params.pem"))
            .output()
            .expect("openssl");
        assert!(out.status.success());
        qmp.ok(
            "object-add",
            json!({"qom-type": "tls-creds-anon", "id": "a3", "props": server}),
        );
    }
    // The abstract base cannot be created; the two kinds are
    // user-creatable.
    assert_eq!(
        qmp.err("object-add", json!({"qom-type": "tls-creds", "id": "t"})),
        generic("object type 'tls-creds' isn't supported by object-add")
    );
    let creatable = qmp.ok(
        "qom-list-types",
        json!({"implements": "user-creatable", "abstract": true}),
    );
    let names: Vec<&str> = creatable
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"tls-creds-x509"), "{names:?}");
    assert!(names.contains(&"tls-creds-anon"), "{names:?}");
    assert!(!names.contains(&"tls-creds"), "{names:?}");
}

#[test]
fn bad_credentials_on_the_command_line_fail_start() {
    start_fails(
        &[
            "-nodefaults",
            "-object",
            "tls-creds-x509,id=t0,dir=/nonexistent,endpoint=server",
        ],
        "Unable to access credentials /nonexistent/ca-cert.pem: No such file or directory",
    );
}
