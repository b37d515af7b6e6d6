//! The object model (QOM): the type registry, the composition tree with
//! typed properties, the user-creatable objects, and the QMP commands'
//! view of them with QEMU 2.11's answers and errors.

pub mod devices;
pub mod machine;
pub mod objects;
pub mod props;
pub mod tree;
pub mod types;

use ::devices::chardev::Registry;
use props::{Env, PropInput};
use qmp::qapi::{IOThreadInfo, Memdev, ObjectPropertyInfo, ObjectTypeInfo};
use qmp::Error;
use serde_json::{Map, Value};
use tree::{ResolveError, Tree};

pub struct Qom {
    pub tree: Tree,
    /// The machine's PCI bus, which devices join (None without a
    /// machine).
    pci: Option<machine::PciBus>,
    /// How many devices without an id were created: QEMU names each
    /// `device[N]` from one counter that never goes back.
    anon_count: usize,
}

impl Qom {
    /// The root, the machine object and the containers; the machine's
    /// devices come with [`Qom::populate_machine`].
    pub fn new(machine: &machine::MachineDescription) -> Qom {
        Qom {
            tree: machine::build_root(machine),
            pci: None,
            anon_count: 0,
        }
    }

    /// The machine's buses and board devices join the tree, once the
    /// machine exists (`pci`: the functions on its PCI bus; `cpu_nodes`:
    /// each CPU's NUMA node, empty without `-numa`).
    pub fn populate_machine(
        &mut self,
        config: &crate::cmdline::Config,
        has_machine: bool,
        pci: Vec<machine::PciFunction>,
        cpu_nodes: &[u16],
    ) {
        let mut d = machine::MachineDescription::from_config(config, has_machine, pci);
        if let Some(cpus) = &mut d.cpus {
            cpus.nodes = cpu_nodes.to_vec();
        }
        self.pci = machine::populate(&mut self.tree, &d);
    }

    /// Where a new device goes: `/machine/peripheral/ID`, or for one
    /// without an id the next `/machine/peripheral-anon/device[N]`
    /// (taken even if the device then fails, as in QEMU).
    pub fn new_device_path(&mut self, id: Option<&str>) -> String {
        match id {
            Some(id) => format!("/machine/peripheral/{id}"),
            None => {
                self.anon_count += 1;
                format!("/machine/peripheral-anon/device[{}]", self.anon_count - 1)
            }
        }
    }

    /// Whether a device with id `id` exists.
    pub fn has_device_id(&self, id: &str) -> bool {
        self.tree
            .resolve(&format!("/machine/peripheral/{id}"))
            .is_ok()
    }

    /// The type of the object at `path`, if one is there.
    pub fn type_at(&self, path: &str) -> Option<String> {
        let obj = self.tree.resolve(path).ok()?;
        Some(self.tree.type_name(obj).to_string())
    }

    /// A created device joins the tree.
    pub fn add_peripheral(&mut self, p: &machine::Peripheral) {
        machine::add_peripheral(&mut self.tree, self.pci.as_mut(), p);
    }

    /// The tree for this command line, with its `-object`s created
    /// (before the machine, whose RAM may be made of memory backends,
    /// and after the chardevs, which an rng-egd uses); an error names
    /// the `-object` it comes from.
    pub fn from_config(
        config: &crate::cmdline::Config,
        has_machine: bool,
        chardevs: &Registry,
    ) -> Result<Qom, String> {
        let mut qom = Qom::new(&machine::MachineDescription::from_config(
            config,
            has_machine,
            Vec::new(),
        ));
        for o in &config.objects {
            let qom_type = o.get("qom-type").unwrap_or_default();
            let id = o.id.as_deref().unwrap_or_default();
            let items: Vec<(String, String)> = o
                .items
                .iter()
                .filter(|(k, _)| k != "qom-type")
                .cloned()
                .collect();
            qom.object_add_cmdline(qom_type, id, &items, chardevs)
                .map_err(|e| format!("{}: {}", o.location, e.desc))?;
        }
        Ok(qom)
    }

    /// The memory backend at `path` (an id under /objects, or a QOM
    /// path), as `-numa node,memdev=` names one.
    pub fn memory_backend(&self, path: &str) -> Option<&objects::memory_backend::MemoryBackend> {
        let obj = self.tree.resolve(path).ok().or_else(|| {
            (!path.contains('/'))
                .then(|| self.tree.resolve(&format!("/objects/{path}")).ok())
                .flatten()
        })?;
        self.tree
            .state(obj)
            .as_any()
            .downcast_ref::<objects::memory_backend::MemoryBackend>()
    }

    fn resolve(&self, path: &str) -> Result<tree::ObjectId, Error> {
        self.tree
            .resolve(path)
            .map_err(|_| Error::device_not_found(format!("Device '{path}' not found")))
    }

    pub fn list(&self, path: &str) -> Result<Vec<ObjectPropertyInfo>, Error> {
        let obj = self.tree.resolve(path).map_err(|e| match e {
            ResolveError::Ambiguous => Error::generic(format!("Path '{path}' is ambiguous")),
            ResolveError::NotFound => Error::device_not_found(format!("Device '{path}' not found")),
        })?;
        Ok(self
            .tree
            .list(obj)
            .into_iter()
            .map(|(name, r#type)| ObjectPropertyInfo { name, r#type })
            .collect())
    }

    pub fn get(&self, path: &str, property: &str) -> Result<Value, Error> {
        let obj = self.resolve(path)?;
        self.tree.get(obj, property)
    }

    pub fn set(
        &mut self,
        path: &str,
        property: &str,
        value: &Value,
        chardevs: &Registry,
    ) -> Result<(), Error> {
        let obj = self.resolve(path)?;
        self.tree.set(
            obj,
            &PropInput::json(property, value),
            &Env::with_chardevs(chardevs),
        )
    }

    pub fn list_types(implements: Option<&str>, include_abstract: bool) -> Vec<ObjectTypeInfo> {
        types::list(implements, include_abstract)
            .into_iter()
            .map(|t| ObjectTypeInfo {
                name: t.name.to_string(),
                // QEMU sends `abstract` only when it is true.
                r#abstract: t.is_abstract.then_some(true),
                parent: t.parent.map(str::to_string),
            })
            .collect()
    }

    /// object-add: `props` must be an object, as QEMU checks.
    pub fn object_add(
        &mut self,
        qom_type: &str,
        id: &str,
        props: Option<&Value>,
        chardevs: &Registry,
    ) -> Result<(), Error> {
        let empty = Map::new();
        let props = match props {
            None => &empty,
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Err(Error::generic(
                    "Invalid parameter type for 'props', expected: dict",
                ))
            }
        };
        let env = Env::with_chardevs(chardevs);
        objects::add(&mut self.tree, qom_type, id, props, false, &env).map(drop)
    }

    /// `-object TYPE,id=ID,prop=value,...`: values are strings.
    pub fn object_add_cmdline(
        &mut self,
        qom_type: &str,
        id: &str,
        items: &[(String, String)],
        chardevs: &Registry,
    ) -> Result<(), Error> {
        let mut props = Map::new();
        for (k, v) in items {
            props.insert(k.clone(), Value::from(v.clone()));
        }
        let env = Env::with_chardevs(chardevs);
        objects::add(&mut self.tree, qom_type, id, &props, true, &env).map(drop)
    }

    pub fn object_del(&mut self, id: &str) -> Result<(), Error> {
        objects::del(&mut self.tree, id)
    }

    pub fn iothreads(&mut self) -> Vec<IOThreadInfo> {
        objects::all_of::<objects::iothread::IoThread>(&mut self.tree)
            .into_iter()
            .map(|(id, t)| {
                let [max, grow, shrink] = t.poll_params();
                IOThreadInfo {
                    id,
                    thread_id: t.thread_id(),
                    poll_max_ns: max,
                    poll_grow: grow,
                    poll_shrink: shrink,
                }
            })
            .collect()
    }

    pub fn memdevs(&mut self) -> Vec<Memdev> {
        objects::all_of::<objects::memory_backend::MemoryBackend>(&mut self.tree)
            .into_iter()
            .map(|(id, m)| m.memdev(&id))
            .collect()
    }
}
