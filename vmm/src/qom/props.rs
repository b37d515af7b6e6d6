//! Properties: what an object exposes besides its children and links,
//! how a value arrives (typed JSON from QMP, strings from `-object`), and
//! a plain property store for objects whose values are simple data.

use super::tree::Tree;
use qmp::visit::InputVisitor;
use qmp::Error;
use serde_json::{Map, Value};
use std::any::Any;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
    WriteOnly,
}

/// One property as qom-list and device-list-properties describe it.
#[derive(Clone, Debug)]
pub struct PropInfo {
    pub name: String,
    /// QOM's type string: `bool`, `uint32`, `int`, `str`, `string`, an
    /// enum's QAPI name, ...
    pub type_name: String,
    pub description: Option<&'static str>,
    pub access: Access,
}

impl PropInfo {
    pub fn new(name: &str, type_name: &str, access: Access) -> PropInfo {
        PropInfo {
            name: name.to_string(),
            type_name: type_name.to_string(),
            description: None,
            access,
        }
    }

    pub fn described(mut self, description: &'static str) -> PropInfo {
        self.description = Some(description);
        self
    }
}

/// A value on its way into a property setter.
pub struct PropInput<'a> {
    pub name: &'a str,
    pub value: &'a Value,
    /// Command-line strings, converted by type as QEMU's option
    /// visitors do.
    pub keyval: bool,
}

impl<'a> PropInput<'a> {
    pub fn json(name: &'a str, value: &'a Value) -> PropInput<'a> {
        PropInput {
            name,
            value,
            keyval: false,
        }
    }

    /// Runs a visitor over the value, so that type errors use QEMU's
    /// texts and name the property.
    fn visit<T>(
        &self,
        f: impl FnOnce(&mut InputVisitor<'_>, Option<&str>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut map = Map::new();
        map.insert(self.name.to_string(), self.value.clone());
        let root = Value::Object(map);
        let mut v = if self.keyval {
            InputVisitor::new_keyval(&root)
        } else {
            InputVisitor::new(&root)
        };
        v.visit_struct(None, |v| f(v, Some(self.name)))
    }

    pub fn bool(&self) -> Result<bool, Error> {
        self.visit(|v, n| v.type_bool(n))
    }

    pub fn int(&self) -> Result<i64, Error> {
        self.visit(|v, n| v.type_int64(n))
    }

    pub fn uint(&self) -> Result<u64, Error> {
        self.visit(|v, n| v.type_uint64(n))
    }

    pub fn size(&self) -> Result<u64, Error> {
        self.visit(|v, n| v.type_size(n))
    }

    pub fn str(&self) -> Result<String, Error> {
        self.visit(|v, n| v.type_str(n))
    }

    /// One of `names`, answered as its index.
    pub fn choice(&self, names: &[&str]) -> Result<usize, Error> {
        self.visit(|v, n| v.type_enum(n, |s| names.iter().position(|x| *x == s)))
    }

    /// A list of small integers (`host-nodes`): a JSON array, or on the
    /// command line `N` or a range `N-M`.
    pub fn u16_list(&self) -> Result<Vec<u16>, Error> {
        let bad = || {
            Error::generic(format!(
                "Parameter '{}' expects an uint16 value or range",
                self.name
            ))
        };
        if self.keyval {
            let s = self.str()?;
            let (lo, hi) = s.split_once('-').unwrap_or((&s, &s));
            let lo: u16 = lo.parse().map_err(|_| bad())?;
            let hi: u16 = hi.parse().map_err(|_| bad())?;
            if hi < lo {
                return Err(bad());
            }
            return Ok((lo..=hi).collect());
        }
        self.visit(|v, n| {
            let Value::Array(items) = v.type_any(n)? else {
                return Err(Error::generic(format!(
                    "Invalid parameter type for '{}', expected: array",
                    self.name
                )));
            };
            items
                .iter()
                .map(|i| {
                    i.as_u64()
                        .and_then(|u| u16::try_from(u).ok())
                        .ok_or_else(|| {
                            Error::generic(format!("Parameter '{}' expects uint16", self.name))
                        })
                })
                .collect()
        })
    }
}

/// QEMU's text for getting a write-only or setting a read-only property.
pub fn permission_denied() -> Error {
    Error::generic("Insufficient permission to perform this operation")
}

/// What an object may take from outside the tree while it is set up:
/// the chardevs (an rng-egd becomes a chardev's frontend). None where
/// the caller has no chardevs to offer.
#[derive(Clone, Copy, Default)]
pub struct Env<'a> {
    pub chardevs: Option<&'a devices::chardev::Registry>,
}

impl<'a> Env<'a> {
    pub fn with_chardevs(chardevs: &'a devices::chardev::Registry) -> Env<'a> {
        Env {
            chardevs: Some(chardevs),
        }
    }
}

/// The behaviour of an object in the tree: its own properties (children
/// and links are the tree's), and for user-creatable objects the steps
/// of object-add and object-del.
pub trait ObjectState: Send {
    fn properties(&self) -> Vec<PropInfo>;
    /// Only called for a listed, readable property.
    fn get(&self, name: &str) -> Result<Value, Error>;
    /// Only called for a listed, writable property. `tree` is the rest
    /// of the tree, for setters that read other objects (a secret
    /// decrypted with another secret's key); this object is not in it
    /// as itself while its setter runs.
    fn set(&mut self, input: &PropInput, tree: &Tree) -> Result<(), Error>;
    /// object-add's last step, after every property is set (`id` is
    /// the object's name under /objects; `tree` as for `set`).
    fn complete(&mut self, _id: &str, _tree: &Tree) -> Result<(), Error> {
        Ok(())
    }
    /// `set` for objects that take something outside the tree (`env`);
    /// the others keep this default. Every caller goes through it.
    fn set_in(&mut self, input: &PropInput, tree: &Tree, _env: &Env) -> Result<(), Error> {
        self.set(input, tree)
    }
    /// `complete` with what lies outside the tree, as `set_in`.
    fn complete_in(&mut self, id: &str, tree: &Tree, _env: &Env) -> Result<(), Error> {
        self.complete(id, tree)
    }
    /// object-del refuses an object something still uses.
    fn can_be_deleted(&self) -> bool {
        true
    }
    fn as_any(&self) -> &dyn Any;
}

/// An object without properties of its own (containers).
pub struct NoProperties;

impl ObjectState for NoProperties {
    fn properties(&self) -> Vec<PropInfo> {
        Vec::new()
    }
    fn get(&self, _name: &str) -> Result<Value, Error> {
        Err(permission_denied())
    }
    fn set(&mut self, _input: &PropInput, _tree: &Tree) -> Result<(), Error> {
        Err(permission_denied())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Properties that are plain values: a realized device's qdev
/// properties (fixed once realized, as in QEMU) or a machine's settings.
pub struct PropertyStore {
    entries: Vec<(PropInfo, Value)>,
    /// Set for a realized device: writes are refused with QEMU's text
    /// naming the device.
    realized_device: Option<RealizedDevice>,
}

pub struct RealizedDevice {
    pub id: Option<String>,
    pub type_name: String,
}

impl PropertyStore {
    pub fn new() -> PropertyStore {
        PropertyStore {
            entries: Vec::new(),
            realized_device: None,
        }
    }

    pub fn for_device(id: Option<String>, type_name: &str) -> PropertyStore {
        PropertyStore {
            entries: Vec::new(),
            realized_device: Some(RealizedDevice {
                id,
                type_name: type_name.to_string(),
            }),
        }
    }

    pub fn with(mut self, info: PropInfo, value: Value) -> PropertyStore {
        self.entries.push((info, value));
        self
    }
}

impl Default for PropertyStore {
    fn default() -> Self {
        PropertyStore::new()
    }
}

impl ObjectState for PropertyStore {
    fn properties(&self) -> Vec<PropInfo> {
        self.entries.iter().map(|(i, _)| i.clone()).collect()
    }

    fn get(&self, name: &str) -> Result<Value, Error> {
        self.entries
            .iter()
            .find(|(i, _)| i.name == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(permission_denied)
    }

    fn set(&mut self, input: &PropInput, _tree: &Tree) -> Result<(), Error> {
        if let Some(d) = &self.realized_device {
            // Re-asserting the device's state is harmless; changing any
            // property of a realized device is not.
            if matches!(input.name, "realized" | "hotplugged") {
                let current = self.get(input.name)?;
                if current == input.bool()? {
                    return Ok(());
                }
            }
            return Err(Error::generic(match &d.id {
                Some(id) => format!(
                    "Attempt to set property '{}' on device '{id}' (type '{}') after it was realized",
                    input.name, d.type_name
                ),
                None => format!(
                    "Attempt to set property '{}' on anonymous device (type '{}') after it was realized",
                    input.name, d.type_name
                ),
            }));
        }
        let Some((info, slot)) = self.entries.iter_mut().find(|(i, _)| i.name == input.name) else {
            return Err(permission_denied());
        };
        *slot = match info.type_name.as_str() {
            "bool" => Value::from(input.bool()?),
            "str" | "string" => Value::from(input.str()?),
            "int" | "int32" | "int64" => Value::from(input.int()?),
            "uint8" | "uint16" | "uint32" | "uint64" | "size" => Value::from(input.uint()?),
            other => {
                return Err(Error::generic(format!(
                    "Property '.{}' of type '{other}' cannot be set",
                    input.name
                )))
            }
        };
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
