use qapi_schema::{Kind, Schema};
use std::path::Path;

#[test]
fn spec_file_parses() {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/qapi-schema-2.11.50.json");
    let text = std::fs::read_to_string(&p).unwrap();
    let s = Schema::from_text(&text, &p, "spec").unwrap();
    assert_eq!(s.count(Kind::Command), 155);
    let d = s.get(Kind::Struct, "String").unwrap();
    assert!(
        d.doc.as_deref().unwrap().contains("@String:"),
        "{:?}",
        d.doc
    );
}
