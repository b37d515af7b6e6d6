//! Generates the QAPI types, command trait, events and introspection data
//! from `qapi-schema/` at build time.

use std::path::Path;

fn main() {
    let schema_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../qapi-schema");
    println!("cargo:rerun-if-changed={}", schema_dir.display());
    let top = schema_dir.join("qapi-schema.json");
    let schema =
        qapi_schema::Schema::load(&top).unwrap_or_else(|e| panic!("reading the QAPI schema: {e}"));
    let generated = qapi_codegen::generate(&schema)
        .unwrap_or_else(|e| panic!("generating from the QAPI schema: {e}"));
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let out = Path::new(&out);
    std::fs::write(out.join("qapi_generated.rs"), generated.rust).expect("writing generated code");
    std::fs::write(
        out.join("qapi_schema_info.json"),
        generated.schema_info_json,
    )
    .expect("writing schema info");
}
