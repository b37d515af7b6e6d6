//! The data `query-qmp-schema` returns, in QEMU's SchemaInfo form.
//!
//! As QEMU does: commands and events first, sorted by name, then every type
//! they reach, in the order first reached; type names are masked as
//! numbers in that order, built-in names and `[ELEMENT]` array names stay
//! readable, and every integer type is reported as `int`.

use crate::model::{Builtin, Model, TypeDef, TypeRef, EMPTY_OBJECT};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

#[derive(Clone, PartialEq, Eq, Hash)]
enum Used {
    Builtin(Builtin),
    Named(String),
    Array(Box<Used>),
}

struct Introspector<'a> {
    model: &'a Model,
    unmask: bool,
    names: HashMap<String, String>,
    used: Vec<Used>,
}

impl Introspector<'_> {
    fn name(&mut self, name: &str) -> String {
        if self.unmask {
            return name.to_string();
        }
        let next = self.names.len().to_string();
        self.names.entry(name.to_string()).or_insert(next).clone()
    }

    fn is_int(&self, t: &TypeRef) -> bool {
        matches!(t, TypeRef::Builtin(b) if b.json_type() == "int")
    }

    fn use_type(&mut self, t: &TypeRef) -> String {
        let t = if self.is_int(t) {
            TypeRef::Builtin(Builtin::Int)
        } else if matches!(t, TypeRef::Array(e) if self.is_int(e)) {
            TypeRef::Array(Box::new(TypeRef::Builtin(Builtin::Int)))
        } else {
            t.clone()
        };
        let used = to_used(&t);
        if !self.used.contains(&used) {
            self.used.push(used);
        }
        match &t {
            TypeRef::Builtin(b) => b.name().to_string(),
            TypeRef::Array(e) => format!("[{}]", self.use_type(e)),
            TypeRef::Named(n) => self.name(n),
        }
    }

    fn use_named(&mut self, name: &str) -> String {
        self.use_type(&TypeRef::Named(name.to_string()))
    }

    fn gen_type(&mut self, used: &Used) -> Value {
        match used {
            Used::Builtin(b) => {
                json!({"name": b.name(), "meta-type": "builtin", "json-type": b.json_type()})
            }
            Used::Array(e) => {
                let elem = self.use_type(&from_used(e));
                json!({"name": format!("[{elem}]"), "meta-type": "array", "element-type": elem})
            }
            Used::Named(n) => {
                let model = self.model;
                let masked = self.name(n);
                match model.get(n) {
                    TypeDef::Enum { values } => {
                        json!({"name": masked, "meta-type": "enum", "values": values})
                    }
                    TypeDef::Alternate { cases } => {
                        let members: Vec<Value> = cases
                            .iter()
                            .map(|c| json!({"type": self.use_type(&c.ty)}))
                            .collect();
                        json!({"name": masked, "meta-type": "alternate", "members": members})
                    }
                    TypeDef::Object { variants, .. } => {
                        let mut members = Vec::new();
                        for m in model.all_members(n) {
                            let mut o = Map::new();
                            o.insert("name".into(), Value::String(m.name.clone()));
                            o.insert("type".into(), Value::String(self.use_type(&m.ty)));
                            if m.optional {
                                o.insert("default".into(), Value::Null);
                            }
                            members.push(Value::Object(o));
                        }
                        let mut obj = Map::new();
                        obj.insert("name".into(), Value::String(masked));
                        obj.insert("meta-type".into(), "object".into());
                        obj.insert("members".into(), Value::Array(members));
                        if let Some(v) = variants {
                            obj.insert("tag".into(), Value::String(v.tag.clone()));
                            let cases: Vec<Value> = v
                                .cases
                                .iter()
                                .map(|c| {
                                    let t = if v.simple {
                                        TypeRef::Named(wrapper_of(&c.ty))
                                    } else {
                                        c.ty.clone()
                                    };
                                    json!({"case": c.case, "type": self.use_type(&t)})
                                })
                                .collect();
                            obj.insert("variants".into(), Value::Array(cases));
                        }
                        Value::Object(obj)
                    }
                }
            }
        }
    }
}

fn wrapper_of(ty: &TypeRef) -> String {
    fn flat(ty: &TypeRef) -> String {
        match ty {
            TypeRef::Builtin(b) => b.name().to_string(),
            TypeRef::Named(n) => n.clone(),
            TypeRef::Array(e) => format!("{}List", flat(e)),
        }
    }
    format!("q_obj_{}-wrapper", flat(ty))
}

fn to_used(t: &TypeRef) -> Used {
    match t {
        TypeRef::Builtin(b) => Used::Builtin(*b),
        TypeRef::Named(n) => Used::Named(n.clone()),
        TypeRef::Array(e) => Used::Array(Box::new(to_used(e))),
    }
}

fn from_used(u: &Used) -> TypeRef {
    match u {
        Used::Builtin(b) => TypeRef::Builtin(*b),
        Used::Named(n) => TypeRef::Named(n.clone()),
        Used::Array(e) => TypeRef::Array(Box::new(from_used(e))),
    }
}

/// Builds the SchemaInfo list. `unmask` keeps real type names (for
/// debugging and tests), as QEMU's `--unmask-non-abi-names`.
pub fn schema_info(model: &Model, unmask: bool) -> Vec<Value> {
    let mut intro = Introspector {
        model,
        unmask,
        names: HashMap::new(),
        used: Vec::new(),
    };
    enum Entity<'a> {
        Command(&'a crate::model::Command),
        Event(&'a crate::model::Event),
    }
    let mut entities: Vec<(&str, Entity)> = model
        .commands
        .iter()
        .map(|c| (c.name.as_str(), Entity::Command(c)))
        .chain(
            model
                .events
                .iter()
                .map(|e| (e.name.as_str(), Entity::Event(e))),
        )
        .collect();
    entities.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::new();
    for (name, entity) in entities {
        match entity {
            Entity::Command(c) => {
                let arg = intro.use_named(c.arg_type.as_deref().unwrap_or(EMPTY_OBJECT));
                let ret = match &c.ret_type {
                    Some(r) => intro.use_type(r),
                    None => intro.use_named(EMPTY_OBJECT),
                };
                out.push(
                    json!({"name": name, "meta-type": "command", "arg-type": arg, "ret-type": ret}),
                );
            }
            Entity::Event(e) => {
                let arg = intro.use_named(e.arg_type.as_deref().unwrap_or(EMPTY_OBJECT));
                out.push(json!({"name": name, "meta-type": "event", "arg-type": arg}));
            }
        }
    }
    // The work list grows while it is walked.
    let mut i = 0;
    while i < intro.used.len() {
        let used = intro.used[i].clone();
        out.push(intro.gen_type(&used));
        i += 1;
    }
    out
}
