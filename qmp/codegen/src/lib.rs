//! Generates Rust from a QAPI schema, as QEMU's `scripts/qapi*.py` generate C:
//! types with their decoders and encoders, a trait with one method per
//! command plus its dispatcher, the event enum, and the introspection data
//! that `query-qmp-schema` returns.

pub mod introspect;
pub mod model;
pub mod names;
pub mod rust;

use qapi_schema::Schema;
use std::collections::HashMap;

pub struct Generated {
    /// Rust source, meant to be `include!`d in a module that has the
    /// runtime's `Visit`, `ToQObject`, `InputVisitor`, `Error`, `QType`,
    /// `decode_args`, `decode_no_args`, `Map` and `Value` in scope.
    pub rust: String,
    /// The `query-qmp-schema` answer as compact JSON.
    pub schema_info_json: String,
}

pub fn generate(schema: &Schema) -> Result<Generated, String> {
    let model = model::Model::from_schema(schema)?;
    let docs: HashMap<String, String> = schema
        .definitions
        .iter()
        .filter_map(|d| d.doc.clone().map(|doc| (d.name.clone(), doc)))
        .collect();
    let rust = rust::Emitter::new(&model, &docs)?.emit();
    let info = introspect::schema_info(&model, false);
    let schema_info_json = serde_json::to_string(&info).map_err(|e| e.to_string())?;
    Ok(Generated {
        rust,
        schema_info_json,
    })
}
