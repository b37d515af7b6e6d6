//! User-creatable objects: `-object` and object-add build them under
//! `/objects/ID`, object-del removes them.

pub mod iothread;
pub mod memory_backend;
pub mod rng;
pub mod secret;
pub mod throttle_group;
pub mod tls_creds;

use super::props::{Env, ObjectState, PropInput};
use super::tree::{ObjectId, Tree};
use super::types;
use qmp::Error;
use serde_json::{Map, Value};

/// A fresh, unconfigured object of a user-creatable type, or None when
/// vmm cannot build that type yet.
fn instantiate(type_name: &str) -> Option<Box<dyn ObjectState>> {
    use memory_backend::{MemoryBackend, Source};
    Some(match type_name {
        "secret" => Box::new(secret::Secret::new()),
        "iothread" => Box::new(iothread::IoThread::new()),
        "throttle-group" => Box::new(throttle_group::ThrottleGroup::new()),
        "rng-random" => Box::new(rng::RngRandom::new()),
        "rng-egd" => Box::new(rng::RngEgd::new()),
        "tls-creds-x509" => Box::new(tls_creds::TlsCredsX509::new()),
        "tls-creds-anon" => Box::new(tls_creds::TlsCredsAnon::new()),
        "memory-backend-ram" => Box::new(MemoryBackend::new("memory-backend-ram", Source::Ram)),
        "memory-backend-file" => Box::new(MemoryBackend::new(
            "memory-backend-file",
            Source::File {
                mem_path: None,
                discard_data: false,
                align: 0,
            },
        )),
        _ => return None,
    })
}

/// object-add and `-object`: checks the type, sets every property in the
/// order given, places the object at /objects/ID and completes it; on any
/// error nothing remains. `keyval`: the values are command-line strings;
/// `env`: what the object may take from outside the tree.
pub fn add(
    tree: &mut Tree,
    type_name: &str,
    id: &str,
    props: &Map<String, Value>,
    keyval: bool,
    env: &Env,
) -> Result<ObjectId, Error> {
    let Some(t) = types::find(type_name) else {
        return Err(Error::generic(format!("invalid object type: {type_name}")));
    };
    if !types::is_a(t.name, types::TYPE_USER_CREATABLE) {
        return Err(Error::generic(format!(
            "object type '{type_name}' isn't supported by object-add"
        )));
    }
    if t.is_abstract {
        return Err(Error::generic(format!(
            "object type '{type_name}' is abstract"
        )));
    }
    let Some(mut state) = instantiate(type_name) else {
        return Err(Error::generic(format!(
            "object type '{type_name}' is not supported by vmm yet"
        )));
    };
    let known = state.properties();
    for (name, value) in props {
        let Some(info) = known.iter().find(|p| &p.name == name) else {
            return Err(Error::generic(format!("Property '.{name}' not found")));
        };
        if info.access == super::props::Access::ReadOnly {
            return Err(super::props::permission_denied());
        }
        state.set_in(
            &PropInput {
                name,
                value,
                keyval,
            },
            tree,
            env,
        )?;
    }
    let objects = tree.container("/objects");
    let obj = tree.add_child(objects, id, type_name, state)?;
    if let Err(e) = tree.with_state(obj, |state, tree| state.complete_in(id, tree, env)) {
        tree.remove(obj);
        return Err(e);
    }
    Ok(obj)
}

/// object-del.
pub fn del(tree: &mut Tree, id: &str) -> Result<(), Error> {
    let objects = tree.container("/objects");
    let Some(obj) = tree.child(objects, id) else {
        return Err(Error::generic(format!("object '{id}' not found")));
    };
    if !tree.state(obj).can_be_deleted() {
        return Err(Error::generic(format!(
            "object '{id}' is in use, can not be deleted"
        )));
    }
    tree.remove(obj);
    Ok(())
}

/// The objects under /objects whose state is a `T`, with their ids.
pub fn all_of<T: 'static>(tree: &mut Tree) -> Vec<(String, &T)> {
    let objects = tree.container("/objects");
    let tree = &*tree;
    tree.children(objects)
        .filter_map(|(id, obj)| {
            tree.state(obj)
                .as_any()
                .downcast_ref::<T>()
                .map(|s| (id.to_string(), s))
        })
        .collect()
}
