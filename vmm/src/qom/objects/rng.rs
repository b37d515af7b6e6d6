//! The rng backends a virtio-rng device draws entropy from, as QEMU
//! 2.11's backends/rng*.c build them: `rng-random` (a host file) and
//! `rng-egd` (an EGD server behind a chardev). Both open when `opened`
//! becomes true, which completion does; once open, their source can no
//! longer change and `opened` cannot go back to false.

use crate::qom::props::{permission_denied, Access, Env, ObjectState, PropInfo, PropInput};
use crate::qom::tree::Tree;
use devices::rng::{EgdClient, RandomFile};
use qmp::Error;
use serde_json::Value;
use std::any::Any;

/// The rng-backend base's `opened` setter: true opens (once), false is
/// refused once open; setting the current value changes nothing.
fn set_opened(
    input: &PropInput,
    opened: bool,
    open: impl FnOnce() -> Result<(), Error>,
) -> Result<(), Error> {
    let want = input.bool()?;
    if want == opened {
        return Ok(());
    }
    if !want {
        return Err(permission_denied());
    }
    open()
}

/// `rng-random`: reads a host file of random bytes.
pub struct RngRandom {
    /// QEMU 2.11's default.
    filename: String,
    /// Set once opened.
    file: Option<RandomFile>,
}

impl RngRandom {
    pub fn new() -> RngRandom {
        RngRandom {
            filename: "/dev/random".to_string(),
            file: None,
        }
    }
}

impl Default for RngRandom {
    fn default() -> Self {
        RngRandom::new()
    }
}

impl ObjectState for RngRandom {
    fn properties(&self) -> Vec<PropInfo> {
        vec![
            PropInfo::new("opened", "bool", Access::ReadWrite),
            PropInfo::new("filename", "string", Access::ReadWrite),
        ]
    }

    fn get(&self, name: &str) -> Result<Value, Error> {
        Ok(match name {
            "opened" => Value::from(self.file.is_some()),
            _ => Value::from(self.filename.clone()),
        })
    }

    fn set(&mut self, input: &PropInput, _tree: &Tree) -> Result<(), Error> {
        match input.name {
            "opened" => set_opened(input, self.file.is_some(), || {
                self.file = Some(RandomFile::open(&self.filename).map_err(Error::generic)?);
                Ok(())
            }),
            _ => {
                if self.file.is_some() {
                    return Err(permission_denied());
                }
                self.filename = input.str()?;
                Ok(())
            }
        }
    }

    fn complete(&mut self, _id: &str, tree: &Tree) -> Result<(), Error> {
        self.set(&PropInput::json("opened", &Value::Bool(true)), tree)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `rng-egd`: asks an EGD server for entropy through a chardev, whose
/// frontend it is while it exists.
#[derive(Default)]
pub struct RngEgd {
    /// The chardev's id, as set.
    chardev: Option<String>,
    /// Set once opened.
    client: Option<EgdClient>,
}

impl RngEgd {
    pub fn new() -> RngEgd {
        RngEgd::default()
    }

    fn open(&mut self, env: &Env) -> Result<(), Error> {
        let Some(id) = &self.chardev else {
            return Err(Error::generic(
                "Parameter 'chardev' expects a valid character device",
            ));
        };
        let Some(chardev) = env.chardevs.and_then(|r| r.find(id)) else {
            return Err(Error::device_not_found(format!("Device '{id}' not found")));
        };
        self.client = Some(EgdClient::attach(&chardev).map_err(Error::generic)?);
        Ok(())
    }
}

impl ObjectState for RngEgd {
    fn properties(&self) -> Vec<PropInfo> {
        vec![
            PropInfo::new("opened", "bool", Access::ReadWrite),
            PropInfo::new("chardev", "string", Access::ReadWrite),
        ]
    }

    /// `chardev` reads the label of the chardev in use: empty before
    /// the object is open, as QEMU's getter.
    fn get(&self, name: &str) -> Result<Value, Error> {
        Ok(match name {
            "opened" => Value::from(self.client.is_some()),
            _ => Value::from(
                self.client
                    .as_ref()
                    .map(EgdClient::chardev_label)
                    .unwrap_or_default(),
            ),
        })
    }

    /// Without chardevs to look in (no caller passes none), opening
    /// finds none.
    fn set(&mut self, input: &PropInput, tree: &Tree) -> Result<(), Error> {
        self.set_in(input, tree, &Env::default())
    }

    fn set_in(&mut self, input: &PropInput, _tree: &Tree, env: &Env) -> Result<(), Error> {
        match input.name {
            "opened" => set_opened(input, self.client.is_some(), || self.open(env)),
            _ => {
                if self.client.is_some() {
                    return Err(permission_denied());
                }
                self.chardev = Some(input.str()?);
                Ok(())
            }
        }
    }

    fn complete(&mut self, id: &str, tree: &Tree) -> Result<(), Error> {
        self.complete_in(id, tree, &Env::default())
    }

    fn complete_in(&mut self, _id: &str, tree: &Tree, env: &Env) -> Result<(), Error> {
        self.set_in(&PropInput::json("opened", &Value::Bool(true)), tree, env)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qom::objects;
    use serde_json::{json, Map};

    fn props(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// The object owns its open file, and entropy comes from it.
    #[test]
    fn rng_random_reads_its_file() {
        let mut tree = Tree::new();
        let p = props(json!({"filename": "/dev/urandom"}));
        let obj = objects::add(&mut tree, "rng-random", "r", &p, false, &Env::default()).unwrap();
        let rng = tree
            .state(obj)
            .as_any()
            .downcast_ref::<RngRandom>()
            .unwrap();
        let mut buf = [0u8; 32];
        let file = rng.file.as_ref().expect("opened at completion");
        assert_eq!(file.read_entropy(&mut buf).unwrap(), 32);
        assert_eq!(tree.get(obj, "opened").unwrap(), json!(true));
        let e = tree
            .set(
                obj,
                &PropInput::json("filename", &json!("/x")),
                &Env::default(),
            )
            .unwrap_err();
        assert_eq!(e.desc, "Insufficient permission to perform this operation");
    }

    #[test]
    fn rng_egd_without_chardevs_finds_none() {
        let mut tree = Tree::new();
        let p = props(json!({"chardev": "c0"}));
        let e = objects::add(&mut tree, "rng-egd", "e", &p, false, &Env::default()).unwrap_err();
        assert_eq!(e.desc, "Device 'c0' not found");
        let e = objects::add(
            &mut tree,
            "rng-egd",
            "e",
            &Map::new(),
            false,
            &Env::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.desc,
            "Parameter 'chardev' expects a valid character device"
        );
    }
}
