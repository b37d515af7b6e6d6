//! The QAPI schema that vmm implements (QEMU 2.11.50), kept as one file per
//! module under this crate's directory, and a reader for QAPI schema files.
//!
//! A schema file is a sequence of JSON objects; lines whose first non-blank
//! character is `#` are comments, and a comment block that starts with `##`
//! documents the expression after it. `{"include": "FILE"}` pulls in another
//! file relative to the including one; each file is read once, as QEMU's
//! generator does.

use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Path of the top-level schema file of this crate.
pub fn schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("qapi-schema.json")
}

/// The kinds of definition a schema holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Command,
    Event,
    Struct,
    Enum,
    Union,
    Alternate,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Command,
        Kind::Event,
        Kind::Struct,
        Kind::Enum,
        Kind::Union,
        Kind::Alternate,
    ];

    /// The key that names a definition of this kind in the schema.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Command => "command",
            Kind::Event => "event",
            Kind::Struct => "struct",
            Kind::Enum => "enum",
            Kind::Union => "union",
            Kind::Alternate => "alternate",
        }
    }
}

/// One definition of the schema.
#[derive(Clone, Debug, PartialEq)]
pub struct Definition {
    pub kind: Kind,
    pub name: String,
    /// The whole expression as written, `{"struct": NAME, "data": ...}`.
    pub expr: Map<String, Value>,
    /// The `##` doc comment block before it, comment markers removed.
    pub doc: Option<String>,
    /// File stem of the module that defines it (`block-core`, `misc`, ...).
    pub module: String,
}

/// Everything read from a schema file and its includes, in definition order.
#[derive(Clone, Debug, Default)]
pub struct Schema {
    pub definitions: Vec<Definition>,
    /// `{"pragma": ...}` objects, merged.
    pub pragma: Map<String, Value>,
}

#[derive(Debug)]
pub enum SchemaError {
    Io(PathBuf, std::io::Error),
    Json(PathBuf, usize, String),
    Invalid(PathBuf, String),
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaError::Io(p, e) => write!(f, "{}: {}", p.display(), e),
            SchemaError::Json(p, line, e) => write!(f, "{}:{}: {}", p.display(), line, e),
            SchemaError::Invalid(p, e) => write!(f, "{}: {}", p.display(), e),
        }
    }
}

impl std::error::Error for SchemaError {}

/// One expression of a file as read, before includes are resolved.
#[derive(Clone, Debug)]
pub struct RawExpr {
    pub expr: Map<String, Value>,
    pub doc: Option<String>,
    /// 1-based line where the expression starts.
    pub line: usize,
}

/// Reads the expressions of one schema text, keeping each doc block.
pub fn parse_text(text: &str, path: &Path) -> Result<Vec<RawExpr>, SchemaError> {
    // Blank out comment lines so that byte offsets and line numbers still
    // point into the original text.
    let mut json = String::with_capacity(text.len());
    let mut docs: Vec<(usize, String)> = Vec::new(); // (end line, block text)
    let mut block: Option<String> = None;
    for (idx, line) in text.split('\n').enumerate() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix('#') {
            if rest.starts_with('#') && rest.trim() == "#" {
                match block.take() {
                    Some(b) => docs.push((idx + 1, b)),
                    None => block = Some(String::new()),
                }
            } else if let Some(b) = block.as_mut() {
                b.push_str(rest.strip_prefix(' ').unwrap_or(rest));
                b.push('\n');
            }
            json.push_str(&" ".repeat(line.len()));
        } else {
            // A `##` block that code interrupts was never closed: it is not a
            // doc block, and its `##` must not pair up with the next one.
            if !trimmed.is_empty() {
                block = None;
            }
            json.push_str(line);
        }
        json.push('\n');
    }
    let line_of = |offset: usize| json[..offset].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(&json).into_iter::<Value>();
    let mut last_end_line = 0;
    loop {
        let start = stream.byte_offset();
        let next = stream.next();
        let Some(next) = next else { break };
        let value =
            next.map_err(|e| SchemaError::Json(path.to_path_buf(), e.line(), e.to_string()))?;
        let skipped = json[start..].len() - json[start..].trim_start().len();
        let line = line_of(start + skipped);
        let Value::Object(expr) = value else {
            return Err(SchemaError::Invalid(
                path.to_path_buf(),
                format!("line {line}: expression is not an object"),
            ));
        };
        // The doc block that belongs to this expression ends after the
        // previous expression and before this one.
        let doc = docs
            .iter()
            .rev()
            .find(|(end, _)| *end < line && *end > last_end_line)
            .map(|(_, b)| b.clone());
        last_end_line = line_of(stream.byte_offset());
        out.push(RawExpr { expr, doc, line });
    }
    Ok(out)
}

impl Schema {
    /// Reads `path` and every file it includes.
    pub fn load(path: &Path) -> Result<Schema, SchemaError> {
        let mut schema = Schema::default();
        let mut seen_files = HashSet::new();
        let mut seen_defs = HashSet::new();
        schema.read_file(path, &mut seen_files, &mut seen_defs)?;
        Ok(schema)
    }

    /// Reads one text holding everything (such as the single-file spec),
    /// keeping the first of each definition that appears more than once.
    pub fn from_text(text: &str, path: &Path, module: &str) -> Result<Schema, SchemaError> {
        let mut schema = Schema::default();
        let mut seen_defs = HashSet::new();
        for raw in parse_text(text, path)? {
            schema.add(raw, path, module, &mut seen_defs)?;
        }
        Ok(schema)
    }

    fn read_file(
        &mut self,
        path: &Path,
        seen_files: &mut HashSet<PathBuf>,
        seen_defs: &mut HashSet<(Kind, String)>,
    ) -> Result<(), SchemaError> {
        let canonical = path
            .canonicalize()
            .map_err(|e| SchemaError::Io(path.to_path_buf(), e))?;
        if !seen_files.insert(canonical) {
            return Ok(());
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| SchemaError::Io(path.to_path_buf(), e))?;
        let module = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        for raw in parse_text(&text, path)? {
            if let Some(include) = raw.expr.get("include") {
                let Some(file) = include.as_str() else {
                    return Err(SchemaError::Invalid(
                        path.to_path_buf(),
                        "include is not a string".into(),
                    ));
                };
                let dir = path.parent().unwrap_or(Path::new("."));
                self.read_file(&dir.join(file), seen_files, seen_defs)?;
                continue;
            }
            self.add(raw, path, &module, seen_defs)?;
        }
        Ok(())
    }

    fn add(
        &mut self,
        raw: RawExpr,
        path: &Path,
        module: &str,
        seen_defs: &mut HashSet<(Kind, String)>,
    ) -> Result<(), SchemaError> {
        if let Some(Value::Object(p)) = raw.expr.get("pragma") {
            for (k, v) in p {
                self.pragma.insert(k.clone(), v.clone());
            }
            return Ok(());
        }
        let kind = Kind::ALL
            .into_iter()
            .find(|k| raw.expr.contains_key(k.key()))
            .ok_or_else(|| {
                SchemaError::Invalid(
                    path.to_path_buf(),
                    format!("line {}: unknown expression", raw.line),
                )
            })?;
        let name = raw.expr[kind.key()]
            .as_str()
            .ok_or_else(|| {
                SchemaError::Invalid(
                    path.to_path_buf(),
                    format!("line {}: name is not a string", raw.line),
                )
            })?
            .to_string();
        if !seen_defs.insert((kind, name.clone())) {
            return Ok(());
        }
        self.definitions.push(Definition {
            kind,
            name,
            expr: raw.expr,
            doc: raw.doc,
            module: module.to_string(),
        });
        Ok(())
    }

    /// Number of definitions of one kind.
    pub fn count(&self, kind: Kind) -> usize {
        self.definitions.iter().filter(|d| d.kind == kind).count()
    }

    pub fn get(&self, kind: Kind, name: &str) -> Option<&Definition> {
        self.definitions
            .iter()
            .find(|d| d.kind == kind && d.name == name)
    }
}
