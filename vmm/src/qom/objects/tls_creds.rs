//! `tls-creds-x509` and `tls-creds-anon`: TLS credentials loaded from a
//! directory when the object is completed (or `loaded` is set), for NBD,
//! VNC and migration to use later. The files and their checks are the
//! `tlscreds` crate's; here are QEMU 2.11's properties (crypto/tlscreds.c,
//! tlscredsx509.c, tlscredsanon.c) and the `passwordid` secret.

use crate::qom::objects::secret;
use crate::qom::props::{Access, ObjectState, PropInfo, PropInput};
use crate::qom::tree::Tree;
use crate::qom::types;
use qmp::Error;
use serde_json::Value;
use std::any::Any;
use std::sync::Arc;
use tlscreds::{AnonMaterial, Endpoint, Material, TlsCredentials, X509Material, X509Settings};

/// The properties every kind of TLS credentials has (QEMU's abstract
/// `tls-creds`).
struct Common {
    dir: Option<String>,
    endpoint: Endpoint,
    verify_peer: bool,
    priority: Option<String>,
}

impl Common {
    fn new() -> Common {
        Common {
            dir: None,
            endpoint: Endpoint::Client,
            verify_peer: true,
            priority: None,
        }
    }

    fn properties() -> Vec<PropInfo> {
        vec![
            PropInfo::new("verify-peer", "bool", Access::ReadWrite),
            PropInfo::new("dir", "string", Access::ReadWrite),
            PropInfo::new("endpoint", "QCryptoTLSCredsEndpoint", Access::ReadWrite),
            PropInfo::new("priority", "string", Access::ReadWrite),
        ]
    }

    /// QEMU reads an unset string property as "".
    fn get(&self, name: &str) -> Value {
        let opt = |s: &Option<String>| Value::from(s.clone().unwrap_or_default());
        match name {
            "verify-peer" => Value::from(self.verify_peer),
            "dir" => opt(&self.dir),
            "endpoint" => Value::from(self.endpoint.as_str()),
            _ => opt(&self.priority),
        }
    }

    /// As in QEMU, any of these may change at any time; `dir` and
    /// `endpoint` take effect at the next load.
    fn set(&mut self, input: &PropInput) -> Result<(), Error> {
        match input.name {
            "verify-peer" => self.verify_peer = input.bool()?,
            "dir" => self.dir = Some(input.str()?),
            "endpoint" => {
                let names: Vec<&str> = Endpoint::ALL.iter().map(|e| e.as_str()).collect();
                self.endpoint = Endpoint::ALL[input.choice(&names)?];
            }
            _ => self.priority = Some(input.str()?),
        }
        Ok(())
    }

    fn credentials(&self, material: Material) -> TlsCredentials {
        TlsCredentials {
            endpoint: self.endpoint,
            verify_peer: self.verify_peer,
            priority: self.priority.clone(),
            material,
        }
    }
}

pub struct TlsCredsX509 {
    common: Common,
    sanity_check: bool,
    passwordid: Option<String>,
    loaded: Option<Arc<X509Material>>,
}

impl TlsCredsX509 {
    pub fn new() -> TlsCredsX509 {
        TlsCredsX509 {
            common: Common::new(),
            sanity_check: true,
            passwordid: None,
            loaded: None,
        }
    }

    /// The loaded credentials with the current settings; None until
    /// loaded.
    pub fn credentials(&self) -> Option<TlsCredentials> {
        let material = Material::X509(self.loaded.clone()?);
        Some(self.common.credentials(material))
    }

    /// Loads anew; a failure leaves what was loaded before.
    fn load(&mut self, tree: &Tree) -> Result<(), Error> {
        let settings = X509Settings {
            dir: self.common.dir.as_deref(),
            endpoint: self.common.endpoint,
            sanity_check: self.sanity_check,
        };
        let passwordid = self.passwordid.clone();
        let mut password = || match &passwordid {
            Some(id) => password(tree, id).map(Some),
            None => Ok(None),
        };
        let material = tlscreds::load_x509(&settings, &mut password)?;
        self.loaded = Some(Arc::new(material));
        Ok(())
    }
}

/// The `passwordid` secret's bytes, which QEMU requires to be UTF-8.
fn password(tree: &Tree, id: &str) -> tlscreds::Result<Vec<u8>> {
    let bytes = secret::lookup(tree, id).map_err(|e| tlscreds::TlsCredsError::Password(e.desc))?;
    if std::str::from_utf8(&bytes).is_err() {
        return Err(tlscreds::TlsCredsError::Password(format!(
            "Data from secret {id} is not valid UTF-8"
        )));
    }
    Ok(bytes)
}

impl ObjectState for TlsCredsX509 {
    fn properties(&self) -> Vec<PropInfo> {
        let mut props = vec![
            PropInfo::new("loaded", "bool", Access::ReadWrite),
            PropInfo::new("sanity-check", "bool", Access::ReadWrite),
            PropInfo::new("passwordid", "string", Access::ReadWrite),
        ];
        props.extend(Common::properties());
        props
    }

    fn get(&self, name: &str) -> Result<Value, Error> {
        Ok(match name {
            "loaded" => Value::from(self.loaded.is_some()),
            "sanity-check" => Value::from(self.sanity_check),
            "passwordid" => Value::from(self.passwordid.clone().unwrap_or_default()),
            other => self.common.get(other),
        })
    }

    fn set(&mut self, input: &PropInput, tree: &Tree) -> Result<(), Error> {
        match input.name {
            "loaded" => {
                if input.bool()? {
                    return self.load(tree);
                }
                self.loaded = None;
            }
            "sanity-check" => self.sanity_check = input.bool()?,
            "passwordid" => self.passwordid = Some(input.str()?),
            _ => self.common.set(input)?,
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

pub struct TlsCredsAnon {
    common: Common,
    loaded: Option<Arc<AnonMaterial>>,
}

impl TlsCredsAnon {
    pub fn new() -> TlsCredsAnon {
        TlsCredsAnon {
            common: Common::new(),
            loaded: None,
        }
    }

    /// The loaded credentials with the current settings; None until
    /// loaded.
    pub fn credentials(&self) -> Option<TlsCredentials> {
        let material = Material::Anon(self.loaded.clone()?);
        Some(self.common.credentials(material))
    }

    fn load(&mut self) -> Result<(), Error> {
        let material = tlscreds::load_anon(self.common.dir.as_deref(), self.common.endpoint)?;
        self.loaded = Some(Arc::new(material));
        Ok(())
    }
}

impl ObjectState for TlsCredsAnon {
    fn properties(&self) -> Vec<PropInfo> {
        let mut props = vec![PropInfo::new("loaded", "bool", Access::ReadWrite)];
        props.extend(Common::properties());
        props
    }

    fn get(&self, name: &str) -> Result<Value, Error> {
        Ok(match name {
            "loaded" => Value::from(self.loaded.is_some()),
            other => self.common.get(other),
        })
    }

    fn set(&mut self, input: &PropInput, _tree: &Tree) -> Result<(), Error> {
        match input.name {
            "loaded" => {
                if input.bool()? {
                    return self.load();
                }
                self.loaded = None;
            }
            _ => self.common.set(input)?,
        }
        Ok(())
    }

    fn complete(&mut self, _id: &str, _tree: &Tree) -> Result<(), Error> {
        self.load()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The credentials `/objects/ID` holds, for a TLS user (NBD, VNC,
/// migration) to start sessions with; it checks the endpoint itself, as
/// each QEMU user words that check its own way.
// No TLS user has landed yet; the unit tests use it meanwhile.
#[cfg_attr(not(test), allow(dead_code))]
pub fn lookup(tree: &Tree, id: &str) -> Result<TlsCredentials, Error> {
    let objects = tree
        .resolve("/objects")
        .map_err(|_| Error::generic(format!("No TLS credentials with id '{id}'")))?;
    let Some(obj) = tree.child(objects, id) else {
        return Err(Error::generic(format!("No TLS credentials with id '{id}'")));
    };
    if !types::is_a(tree.type_name(obj), "tls-creds") {
        return Err(Error::generic(format!(
            "Object with id '{id}' is not TLS credentials"
        )));
    }
    let state = tree.state(obj).as_any();
    let creds = if let Some(x509) = state.downcast_ref::<TlsCredsX509>() {
        x509.credentials()
    } else {
        state
            .downcast_ref::<TlsCredsAnon>()
            .and_then(TlsCredsAnon::credentials)
    };
    creds.ok_or_else(|| Error::generic(format!("TLS credentials '{id}' are not loaded")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qom::objects;
    use serde_json::{json, Map};

    fn props(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn lookup_finds_loaded_credentials() {
        let mut tree = Tree::new();
        // An anonymous client reads no files.
        objects::add(
            &mut tree,
            "tls-creds-anon",
            "anon",
            &props(json!({"verify-peer": false, "priority": "NORMAL"})),
            false,
            &crate::qom::props::Env::default(),
        )
        .expect("anon client");
        objects::add(
            &mut tree,
            "secret",
            "pw",
            &props(json!({"data": "x"})),
            false,
            &crate::qom::props::Env::default(),
        )
        .expect("secret");
        let creds = lookup(&tree, "anon").expect("creds");
        assert_eq!(creds.endpoint, Endpoint::Client);
        assert!(!creds.verify_peer);
        assert_eq!(creds.priority.as_deref(), Some("NORMAL"));
        assert!(matches!(creds.material, Material::Anon(ref m) if m.dh_params.is_none()));
        assert_eq!(
            lookup(&tree, "nope").unwrap_err().desc,
            "No TLS credentials with id 'nope'"
        );
        assert_eq!(
            lookup(&tree, "pw").unwrap_err().desc,
            "Object with id 'pw' is not TLS credentials"
        );
    }
}
