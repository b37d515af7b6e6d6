//! The composition tree: objects reachable from `/` through `child<T>`
//! properties, `link<T>` properties between them, path resolution as
//! QEMU does it (absolute and partial paths), and property access.

use super::props::{permission_denied, Access, Env, ObjectState, PropInfo, PropInput};
use super::types;
use qmp::Error;
use serde_json::Value;

pub type ObjectId = usize;

struct Link {
    name: String,
    target_type: String,
    target: Option<ObjectId>,
}

struct Node {
    type_name: String,
    parent: Option<ObjectId>,
    /// `child<T>` properties, in the order they were added.
    children: Vec<(String, ObjectId)>,
    links: Vec<Link>,
    state: Box<dyn ObjectState>,
}

/// Why a path did not resolve.
#[derive(Debug, PartialEq, Eq)]
pub enum ResolveError {
    NotFound,
    /// A partial path that matches more than one object.
    Ambiguous,
}

pub struct Tree {
    nodes: Vec<Option<Node>>,
}

pub const ROOT: ObjectId = 0;

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

impl Tree {
    pub fn new() -> Tree {
        Tree {
            nodes: vec![Some(Node {
                type_name: types::TYPE_CONTAINER.to_string(),
                parent: None,
                children: Vec::new(),
                links: Vec::new(),
                state: Box::new(super::props::NoProperties),
            })],
        }
    }

    fn node(&self, id: ObjectId) -> &Node {
        // Ids come only from this tree and are dropped with their nodes.
        self.nodes[id].as_ref().expect("live object id")
    }

    fn node_mut(&mut self, id: ObjectId) -> &mut Node {
        self.nodes[id].as_mut().expect("live object id")
    }

    pub fn type_name(&self, id: ObjectId) -> &str {
        &self.node(id).type_name
    }

    pub fn state(&self, id: ObjectId) -> &dyn ObjectState {
        self.node(id).state.as_ref()
    }

    pub fn child(&self, parent: ObjectId, name: &str) -> Option<ObjectId> {
        self.node(parent)
            .children
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
    }

    pub fn children(&self, parent: ObjectId) -> impl Iterator<Item = (&str, ObjectId)> {
        self.node(parent)
            .children
            .iter()
            .map(|(n, id)| (n.as_str(), *id))
    }

    fn has_property(&self, id: ObjectId, name: &str) -> bool {
        let n = self.node(id);
        name == "type"
            || n.children.iter().any(|(c, _)| c == name)
            || n.links.iter().any(|l| l.name == name)
            || n.state.properties().iter().any(|p| p.name == name)
    }

    /// Adds `state` as child `name` of `parent`. A name ending in `[*]`
    /// takes the first free index, as QEMU numbers `device[N]`.
    pub fn add_child(
        &mut self,
        parent: ObjectId,
        name: &str,
        type_name: &str,
        state: Box<dyn ObjectState>,
    ) -> Result<ObjectId, Error> {
        let name = match name.strip_suffix("[*]") {
            Some(stem) => (0..)
                .map(|i| format!("{stem}[{i}]"))
                .find(|n| !self.has_property(parent, n))
                .unwrap_or_default(),
            None => name.to_string(),
        };
        if self.has_property(parent, &name) {
            return Err(Error::generic(format!(
                "attempt to add duplicate property '{name}' to object (type '{}')",
                self.type_name(parent)
            )));
        }
        let id = self.nodes.len();
        self.nodes.push(Some(Node {
            type_name: type_name.to_string(),
            parent: Some(parent),
            children: Vec::new(),
            links: Vec::new(),
            state,
        }));
        self.node_mut(parent).children.push((name, id));
        Ok(id)
    }

    /// The container at `path` below the root, made (with any missing
    /// containers on the way) if absent.
    pub fn container(&mut self, path: &str) -> ObjectId {
        let mut at = ROOT;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            at = match self.child(at, part) {
                Some(id) => id,
                None => self
                    .add_child(
                        at,
                        part,
                        types::TYPE_CONTAINER,
                        Box::new(super::props::NoProperties),
                    )
                    .unwrap_or(ROOT),
            };
        }
        at
    }

    /// Adds a `link<target_type>` property (unset when `target` is None).
    pub fn add_link(
        &mut self,
        owner: ObjectId,
        name: &str,
        target_type: &str,
        target: Option<ObjectId>,
    ) {
        self.node_mut(owner).links.push(Link {
            name: name.to_string(),
            target_type: target_type.to_string(),
            target,
        });
    }

    /// Points `owner`'s link `name` at `target` (nothing when it has no
    /// such link).
    pub fn set_link(&mut self, owner: ObjectId, name: &str, target: Option<ObjectId>) {
        if let Some(l) = self
            .node_mut(owner)
            .links
            .iter_mut()
            .find(|l| l.name == name)
        {
            l.target = target;
        }
    }

    /// Removes `id` and everything below it; links to them become unset.
    pub fn remove(&mut self, id: ObjectId) {
        if let Some(parent) = self.node(id).parent {
            self.node_mut(parent).children.retain(|(_, c)| *c != id);
        }
        let mut doomed = vec![id];
        let mut i = 0;
        while i < doomed.len() {
            let more: Vec<ObjectId> = self.node(doomed[i]).children.iter().map(|c| c.1).collect();
            doomed.extend(more);
            i += 1;
        }
        for d in &doomed {
            self.nodes[*d] = None;
        }
        for n in self.nodes.iter_mut().flatten() {
            for l in &mut n.links {
                if l.target.is_some_and(|t| doomed.contains(&t)) {
                    l.target = None;
                }
            }
        }
    }

    pub fn canonical_path(&self, id: ObjectId) -> String {
        let mut parts = Vec::new();
        let mut at = id;
        while let Some(parent) = self.node(at).parent {
            if let Some((name, _)) = self.node(parent).children.iter().find(|(_, c)| *c == at) {
                parts.push(name.clone());
            }
            at = parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// One step along a path: a child, or a link's target.
    fn component(&self, at: ObjectId, part: &str) -> Option<ObjectId> {
        let n = self.node(at);
        n.children
            .iter()
            .find(|(c, _)| c == part)
            .map(|(_, id)| *id)
            .or_else(|| {
                n.links
                    .iter()
                    .find(|l| l.name == part)
                    .and_then(|l| l.target)
            })
    }

    fn resolve_from(&self, at: ObjectId, parts: &[&str]) -> Option<ObjectId> {
        parts.iter().try_fold(at, |at, part| {
            if part.is_empty() {
                Some(at)
            } else {
                self.component(at, part)
            }
        })
    }

    /// A partial path matches wherever in the tree it can start; it must
    /// match exactly once.
    fn resolve_partial(
        &self,
        at: ObjectId,
        parts: &[&str],
    ) -> Result<Option<ObjectId>, ResolveError> {
        let mut found = self.resolve_from(at, parts);
        for (_, child) in &self.node(at).children {
            if let Some(hit) = self.resolve_partial(*child, parts)? {
                if found.is_some() {
                    return Err(ResolveError::Ambiguous);
                }
                found = Some(hit);
            }
        }
        Ok(found)
    }

    pub fn resolve(&self, path: &str) -> Result<ObjectId, ResolveError> {
        if let Some(abs) = path.strip_prefix('/') {
            let parts: Vec<&str> = abs.split('/').collect();
            return self
                .resolve_from(ROOT, &parts)
                .ok_or(ResolveError::NotFound);
        }
        let parts: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        self.resolve_partial(ROOT, &parts)?
            .ok_or(ResolveError::NotFound)
    }

    /// Every property of `id` with its QOM type, as qom-list lists them.
    pub fn list(&self, id: ObjectId) -> Vec<(String, String)> {
        let n = self.node(id);
        let mut out = vec![("type".to_string(), "string".to_string())];
        for (name, child) in &n.children {
            out.push((name.clone(), format!("child<{}>", self.type_name(*child))));
        }
        for l in &n.links {
            out.push((l.name.clone(), format!("link<{}>", l.target_type)));
        }
        for p in n.state.properties() {
            out.push((p.name, p.type_name));
        }
        out
    }

    fn find_state_prop(&self, id: ObjectId, name: &str) -> Result<PropInfo, Error> {
        self.node(id)
            .state
            .properties()
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::generic(format!("Property '.{name}' not found")))
    }

    pub fn get(&self, id: ObjectId, name: &str) -> Result<Value, Error> {
        let n = self.node(id);
        if name == "type" {
            return Ok(Value::from(n.type_name.clone()));
        }
        if let Some((_, child)) = n.children.iter().find(|(c, _)| c == name) {
            return Ok(Value::from(self.canonical_path(*child)));
        }
        if let Some(l) = n.links.iter().find(|l| l.name == name) {
            return Ok(Value::from(
                l.target.map(|t| self.canonical_path(t)).unwrap_or_default(),
            ));
        }
        let info = self.find_state_prop(id, name)?;
        if info.access == Access::WriteOnly {
            return Err(permission_denied());
        }
        n.state.get(name)
    }

    /// Sets a property; `env` is what the object may take from outside
    /// the tree.
    pub fn set(&mut self, id: ObjectId, input: &PropInput, env: &Env) -> Result<(), Error> {
        let n = self.node(id);
        // `type`, children and links vmm builds are fixed: QEMU gives
        // them no setter either.
        if input.name == "type"
            || n.children.iter().any(|(c, _)| c == input.name)
            || n.links.iter().any(|l| l.name == input.name)
        {
            return Err(permission_denied());
        }
        let info = self.find_state_prop(id, input.name)?;
        if info.access == Access::ReadOnly {
            return Err(permission_denied());
        }
        self.with_state(id, |state, tree| state.set_in(input, tree, env))
    }

    /// Runs `f` on `id`'s state with the rest of the tree readable; `id`
    /// shows no properties of its own meanwhile.
    pub fn with_state<R>(
        &mut self,
        id: ObjectId,
        f: impl FnOnce(&mut dyn ObjectState, &Tree) -> R,
    ) -> R {
        let placeholder: Box<dyn ObjectState> = Box::new(super::props::NoProperties);
        let mut state = std::mem::replace(&mut self.node_mut(id).state, placeholder);
        let r = f(state.as_mut(), self);
        self.node_mut(id).state = state;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qom::props::NoProperties;

    fn sample() -> (Tree, ObjectId) {
        let mut t = Tree::new();
        let un = t.container("/machine/unattached");
        let d = t
            .add_child(un, "device[*]", "isa-serial", Box::new(NoProperties))
            .unwrap();
        t.add_child(un, "device[*]", "i8042", Box::new(NoProperties))
            .unwrap();
        (t, d)
    }

    #[test]
    fn paths_resolve_as_in_qemu() {
        let (t, d) = sample();
        assert_eq!(t.canonical_path(d), "/machine/unattached/device[0]");
        assert_eq!(t.resolve("/machine/unattached/device[0]"), Ok(d));
        assert_eq!(t.resolve("//machine//unattached/device[0]"), Ok(d));
        assert_eq!(t.resolve("/"), Ok(ROOT));
        assert_eq!(t.resolve("unattached/device[0]"), Ok(d));
        assert_eq!(t.resolve("device[0]"), Ok(d));
        assert_eq!(t.resolve("/nope"), Err(ResolveError::NotFound));
        assert_eq!(t.resolve(""), Err(ResolveError::Ambiguous));
    }

    #[test]
    fn duplicate_child_is_refused() {
        let (mut t, _) = sample();
        let un = t.resolve("/machine/unattached").unwrap();
        let e = t
            .add_child(un, "device[0]", "x", Box::new(NoProperties))
            .unwrap_err();
        assert_eq!(
            e.desc,
            "attempt to add duplicate property 'device[0]' to object (type 'container')"
        );
    }
}
