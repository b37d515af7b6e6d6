//! QMP for vmm: the QAPI types, command trait, events and introspection data
//! generated from the schema at build time (`qapi`), the decoding rules
//! they follow (`visit`), and the protocol server (`json`, `server`).
//!
//! The generated types are the shared vocabulary of the other crates; the
//! protocol server uses none of them beyond errors and dispatch.

pub mod error;
pub mod json;
pub mod server;
pub mod visit;

/// Everything generated from the QAPI schema.
#[allow(clippy::all, non_camel_case_types, non_snake_case, unused_variables)]
pub mod qapi {
    use crate::error::Error;
    use crate::visit::{decode_args, decode_no_args, InputVisitor, QType, ToQObject, Visit};
    use serde_json::{Map, Value};

    include!(concat!(env!("OUT_DIR"), "/qapi_generated.rs"));

    /// The `query-qmp-schema` answer, as compact JSON.
    pub const SCHEMA_INFO_JSON: &str =
        include_str!(concat!(env!("OUT_DIR"), "/qapi_schema_info.json"));
}

pub use error::{strerror, Error};
