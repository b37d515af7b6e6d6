//! The schema resolved into types, as QEMU's QAPI generator sees it:
//! implicit argument, base, wrapper and enum types made explicit, every
//! type reference checked.

use qapi_schema::{Kind, Schema};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};

/// Built-in QAPI types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Builtin {
    Str,
    Int,
    Int8,
    Int16,
    Int32,
    Int64,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Size,
    Number,
    Bool,
    Any,
    Null,
}

impl Builtin {
    pub fn from_name(name: &str) -> Option<Builtin> {
        Some(match name {
            "str" => Builtin::Str,
            "int" => Builtin::Int,
            "int8" => Builtin::Int8,
            "int16" => Builtin::Int16,
            "int32" => Builtin::Int32,
            "int64" => Builtin::Int64,
            "uint8" => Builtin::Uint8,
            "uint16" => Builtin::Uint16,
            "uint32" => Builtin::Uint32,
            "uint64" => Builtin::Uint64,
            "size" => Builtin::Size,
            "number" => Builtin::Number,
            "bool" => Builtin::Bool,
            "any" => Builtin::Any,
            "null" => Builtin::Null,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Str => "str",
            Builtin::Int => "int",
            Builtin::Int8 => "int8",
            Builtin::Int16 => "int16",
            Builtin::Int32 => "int32",
            Builtin::Int64 => "int64",
            Builtin::Uint8 => "uint8",
            Builtin::Uint16 => "uint16",
            Builtin::Uint32 => "uint32",
            Builtin::Uint64 => "uint64",
            Builtin::Size => "size",
            Builtin::Number => "number",
            Builtin::Bool => "bool",
            Builtin::Any => "any",
            Builtin::Null => "null",
        }
    }

    /// The JSON type introspection reports (`json-type`).
    pub fn json_type(self) -> &'static str {
        match self {
            Builtin::Str => "string",
            Builtin::Number => "number",
            Builtin::Bool => "boolean",
            Builtin::Any => "value",
            Builtin::Null => "null",
            _ => "int",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TypeRef {
    Builtin(Builtin),
    Named(String),
    Array(Box<TypeRef>),
}

#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub optional: bool,
    pub ty: TypeRef,
}

#[derive(Clone, Debug)]
pub struct Variant {
    pub case: String,
    pub ty: TypeRef,
}

#[derive(Clone, Debug)]
pub struct Variants {
    /// The member that selects the variant.
    pub tag: String,
    /// Simple unions: each variant's type is the wrapped type itself; its
    /// wire form is `{"type": CASE, "data": VALUE}`.
    pub simple: bool,
    pub cases: Vec<Variant>,
}

#[derive(Clone, Debug)]
pub enum TypeDef {
    Enum {
        values: Vec<String>,
    },
    Object {
        base: Option<String>,
        members: Vec<Member>,
        variants: Option<Variants>,
        /// Made by the generator (argument, base, wrapper or empty types).
        implicit: bool,
    },
    Alternate {
        cases: Vec<Variant>,
    },
}

#[derive(Clone, Debug)]
pub struct Command {
    pub name: String,
    pub arg_type: Option<String>,
    pub ret_type: Option<TypeRef>,
    pub boxed: bool,
    pub gen: bool,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub name: String,
    pub arg_type: Option<String>,
}

/// The whole resolved schema. Types are kept in definition order.
#[derive(Debug, Default)]
pub struct Model {
    pub types: Vec<(String, TypeDef)>,
    pub index: HashMap<String, usize>,
    pub commands: Vec<Command>,
    pub events: Vec<Event>,
}

pub const EMPTY_OBJECT: &str = "q_empty";

fn parse_type(v: &Value) -> Result<TypeRef, String> {
    match v {
        Value::String(s) => Ok(match Builtin::from_name(s) {
            Some(b) => TypeRef::Builtin(b),
            None => TypeRef::Named(s.clone()),
        }),
        Value::Array(a) if a.len() == 1 => Ok(TypeRef::Array(Box::new(parse_type(&a[0])?))),
        other => Err(format!("bad type reference {other}")),
    }
}

fn parse_members(data: &Map<String, Value>) -> Result<Vec<Member>, String> {
    data.iter()
        .map(|(k, v)| {
            let (name, optional) = match k.strip_prefix('*') {
                Some(n) => (n.to_string(), true),
                None => (k.clone(), false),
            };
            Ok(Member {
                name,
                optional,
                ty: parse_type(v)?,
            })
        })
        .collect()
}

/// Name of the implicit wrapper object of a simple union variant.
fn wrapper_name(ty: &TypeRef) -> String {
    fn flat(ty: &TypeRef) -> String {
        match ty {
            TypeRef::Builtin(b) => b.name().to_string(),
            TypeRef::Named(n) => n.clone(),
            TypeRef::Array(e) => format!("{}List", flat(e)),
        }
    }
    format!("q_obj_{}-wrapper", flat(ty))
}

impl Model {
    pub fn from_schema(schema: &Schema) -> Result<Model, String> {
        let mut m = Model::default();
        m.add(
            EMPTY_OBJECT,
            TypeDef::Object {
                base: None,
                members: vec![],
                variants: None,
                implicit: true,
            },
        )?;
        for def in &schema.definitions {
            let e = &def.expr;
            let name = def.name.as_str();
            let ctx = |msg: String| format!("{} {}: {}", def.kind.key(), name, msg);
            match def.kind {
                Kind::Enum => {
                    let values = e
                        .get("data")
                        .and_then(Value::as_array)
                        .ok_or_else(|| ctx("enum data is not an array".into()))?
                        .iter()
                        .map(|v| {
                            v.as_str()
                                .map(str::to_string)
                                .ok_or_else(|| ctx("enum value".into()))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    m.add(name, TypeDef::Enum { values })?;
                }
                Kind::Struct => {
                    let data = match e.get("data") {
                        Some(Value::Object(d)) => d.clone(),
                        None => Map::new(),
                        _ => return Err(ctx("struct data".into())),
                    };
                    let base = e.get("base").and_then(Value::as_str).map(str::to_string);
                    m.add(
                        name,
                        TypeDef::Object {
                            base,
                            members: parse_members(&data).map_err(ctx)?,
                            variants: None,
                            implicit: false,
                        },
                    )?;
                }
                Kind::Alternate => {
                    let data = e
                        .get("data")
                        .and_then(Value::as_object)
                        .ok_or_else(|| ctx("alternate data".into()))?;
                    let cases = data
                        .iter()
                        .map(|(k, v)| {
                            Ok(Variant {
                                case: k.clone(),
                                ty: parse_type(v)?,
                            })
                        })
                        .collect::<Result<Vec<_>, String>>()
                        .map_err(ctx)?;
                    m.add(name, TypeDef::Alternate { cases })?;
                }
                Kind::Union => {
                    let data = e
                        .get("data")
                        .and_then(Value::as_object)
                        .ok_or_else(|| ctx("union data".into()))?;
                    let cases: Vec<Variant> = data
                        .iter()
                        .map(|(k, v)| {
                            Ok(Variant {
                                case: k.clone(),
                                ty: parse_type(v)?,
                            })
                        })
                        .collect::<Result<Vec<_>, String>>()
                        .map_err(ctx)?;
                    match e.get("discriminator").and_then(Value::as_str) {
                        None => {
                            // Simple union: implicit enum NAMEKind and a wrapper per case.
                            let kind = format!("{name}Kind");
                            m.add(
                                &kind,
                                TypeDef::Enum {
                                    values: cases.iter().map(|c| c.case.clone()).collect(),
                                },
                            )?;
                            for c in &cases {
                                let w = wrapper_name(&c.ty);
                                if !m.index.contains_key(&w) {
                                    m.add(
                                        &w,
                                        TypeDef::Object {
                                            base: None,
                                            members: vec![Member {
                                                name: "data".into(),
                                                optional: false,
                                                ty: c.ty.clone(),
                                            }],
                                            variants: None,
                                            implicit: true,
                                        },
                                    )?;
                                }
                            }
                            m.add(
                                name,
                                TypeDef::Object {
                                    base: None,
                                    members: vec![Member {
                                        name: "type".into(),
                                        optional: false,
                                        ty: TypeRef::Named(kind),
                                    }],
                                    variants: Some(Variants {
                                        tag: "type".into(),
                                        simple: true,
                                        cases,
                                    }),
                                    implicit: false,
                                },
                            )?;
                        }
                        Some(tag) => {
                            let base = match e.get("base") {
                                Some(Value::String(b)) => b.clone(),
                                Some(Value::Object(d)) => {
                                    let bname = format!("q_obj_{name}-base");
                                    m.add(
                                        &bname,
                                        TypeDef::Object {
                                            base: None,
                                            members: parse_members(d).map_err(ctx)?,
                                            variants: None,
                                            implicit: true,
                                        },
                                    )?;
                                    bname
                                }
                                _ => return Err(ctx("flat union without base".into())),
                            };
                            m.add(
                                name,
                                TypeDef::Object {
                                    base: Some(base),
                                    members: vec![],
                                    variants: Some(Variants {
                                        tag: tag.to_string(),
                                        simple: false,
                                        cases,
                                    }),
                                    implicit: false,
                                },
                            )?;
                        }
                    }
                }
                Kind::Command | Kind::Event => {
                    let arg_type = match e.get("data") {
                        None => None,
                        Some(Value::String(t)) => Some(t.clone()),
                        Some(Value::Object(d)) if d.is_empty() => None,
                        Some(Value::Object(d)) => {
                            let aname = format!("q_obj_{name}-arg");
                            m.add(
                                &aname,
                                TypeDef::Object {
                                    base: None,
                                    members: parse_members(d).map_err(ctx)?,
                                    variants: None,
                                    implicit: true,
                                },
                            )?;
                            Some(aname)
                        }
                        _ => return Err(ctx("bad data".into())),
                    };
                    if def.kind == Kind::Event {
                        m.events.push(Event {
                            name: name.to_string(),
                            arg_type,
                        });
                    } else {
                        let ret_type = e.get("returns").map(parse_type).transpose().map_err(ctx)?;
                        m.commands.push(Command {
                            name: name.to_string(),
                            arg_type,
                            ret_type,
                            boxed: e.get("boxed").and_then(Value::as_bool).unwrap_or(false),
                            gen: e.get("gen").and_then(Value::as_bool).unwrap_or(true),
                        });
                    }
                }
            }
        }
        m.check()?;
        Ok(m)
    }

    fn add(&mut self, name: &str, def: TypeDef) -> Result<(), String> {
        if self.index.contains_key(name) {
            return Err(format!("type {name} defined twice"));
        }
        self.index.insert(name.to_string(), self.types.len());
        self.types.push((name.to_string(), def));
        Ok(())
    }

    pub fn get(&self, name: &str) -> &TypeDef {
        &self.types[self.index[name]].1
    }

    /// Every reference resolves, and variant/tag rules hold.
    fn check(&self) -> Result<(), String> {
        let resolve = |t: &TypeRef, ctx: &str| -> Result<(), String> {
            let mut t = t;
            while let TypeRef::Array(e) = t {
                t = e;
            }
            match t {
                TypeRef::Named(n) if !self.index.contains_key(n) => {
                    Err(format!("{ctx}: unknown type {n}"))
                }
                _ => Ok(()),
            }
        };
        for (name, def) in &self.types {
            match def {
                TypeDef::Enum { .. } => {}
                TypeDef::Alternate { cases } => {
                    for c in cases {
                        resolve(&c.ty, name)?;
                    }
                }
                TypeDef::Object {
                    base,
                    members,
                    variants,
                    ..
                } => {
                    if let Some(b) = base {
                        match self.index.get(b).map(|i| &self.types[*i].1) {
                            Some(TypeDef::Object { variants: None, .. }) => {}
                            _ => return Err(format!("{name}: base {b} is not a plain object")),
                        }
                    }
                    for mem in members {
                        resolve(&mem.ty, name)?;
                    }
                    if let Some(v) = variants {
                        for c in &v.cases {
                            resolve(&c.ty, name)?;
                        }
                        let all = self.all_members(name);
                        let tag = all
                            .iter()
                            .find(|m| m.name == v.tag)
                            .ok_or_else(|| format!("{name}: no tag member {}", v.tag))?;
                        if let TypeRef::Named(e) = &tag.ty {
                            if let TypeDef::Enum { values } = self.get(e) {
                                for c in &v.cases {
                                    if !values.contains(&c.case) {
                                        return Err(format!("{name}: case {} not in {e}", c.case));
                                    }
                                }
                                continue;
                            }
                        }
                        return Err(format!("{name}: tag is not an enum"));
                    }
                }
            }
        }
        for c in &self.commands {
            if let Some(a) = &c.arg_type {
                resolve(&TypeRef::Named(a.clone()), &c.name)?;
            }
            if let Some(r) = &c.ret_type {
                resolve(r, &c.name)?;
            }
        }
        for e in &self.events {
            if let Some(a) = &e.arg_type {
                resolve(&TypeRef::Named(a.clone()), &e.name)?;
            }
        }
        Ok(())
    }

    /// Members of an object type with its base's members first.
    pub fn all_members(&self, name: &str) -> Vec<Member> {
        match self.get(name) {
            TypeDef::Object { base, members, .. } => {
                let mut all = base
                    .as_ref()
                    .map(|b| self.all_members(b))
                    .unwrap_or_default();
                all.extend(members.iter().cloned());
                all
            }
            _ => vec![],
        }
    }

    /// Names of the enum values of a flat union's tag.
    pub fn tag_values(&self, name: &str) -> Vec<String> {
        if let TypeDef::Object {
            variants: Some(v), ..
        } = self.get(name)
        {
            for m in self.all_members(name) {
                if m.name == v.tag {
                    if let TypeRef::Named(e) = &m.ty {
                        if let TypeDef::Enum { values } = self.get(e) {
                            return values.clone();
                        }
                    }
                }
            }
        }
        vec![]
    }

    /// For each object/alternate type, the named types it holds by value
    /// (not through an array), used to find where a `Box` breaks a cycle.
    pub fn by_value_edges(&self) -> BTreeMap<String, Vec<String>> {
        let mut edges = BTreeMap::new();
        for (name, def) in &self.types {
            let mut out = Vec::new();
            match def {
                TypeDef::Object { .. } => {
                    for m in self.all_members(name) {
                        if let TypeRef::Named(n) = &m.ty {
                            out.push(n.clone());
                        }
                    }
                    if let TypeDef::Object {
                        variants: Some(v), ..
                    } = def
                    {
                        for c in &v.cases {
                            if let TypeRef::Named(n) = &c.ty {
                                out.push(n.clone());
                            }
                        }
                    }
                }
                TypeDef::Alternate { cases } => {
                    for c in cases {
                        if let TypeRef::Named(n) = &c.ty {
                            out.push(n.clone());
                        }
                    }
                }
                TypeDef::Enum { .. } => {}
            }
            edges.insert(name.clone(), out);
        }
        edges
    }

    /// Whether `to` can reach `from` through by-value edges: then a field
    /// of type `to` inside `from` must be boxed.
    pub fn reaches(
        &self,
        edges: &BTreeMap<String, Vec<String>>,
        start: &str,
        target: &str,
    ) -> bool {
        let mut stack = vec![start.to_string()];
        let mut seen = std::collections::HashSet::new();
        while let Some(n) = stack.pop() {
            if n == target {
                return true;
            }
            if !seen.insert(n.clone()) {
                continue;
            }
            if let Some(next) = edges.get(&n) {
                stack.extend(next.iter().cloned());
            }
        }
        false
    }
}
