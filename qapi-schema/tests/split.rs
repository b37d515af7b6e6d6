//! The per-module schema files of this crate are an exact split of the
//! single-file spec `qapi-schema-2.11.50.json`.

use qapi_schema::{schema_path, Kind, Schema};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::Path;

const SPEC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/spec/qapi-schema-2.11.50.json"
);

/// The module files, in the order QEMU's top-level schema includes them
/// (`block-core` comes in through `block`).
const MODULES: [&str; 16] = [
    "common",
    "sockets",
    "run-state",
    "crypto",
    "block-core",
    "block",
    "char",
    "net",
    "rocker",
    "tpm",
    "ui",
    "migration",
    "transaction",
    "trace",
    "introspect",
    "misc",
];

fn spec() -> Schema {
    let text = std::fs::read_to_string(SPEC).unwrap();
    Schema::from_text(&text, Path::new(SPEC), "spec").unwrap()
}

fn split() -> Schema {
    Schema::load(&schema_path()).unwrap()
}

fn dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn split_has_the_spec_counts() {
    let s = split();
    assert_eq!(s.count(Kind::Command), 155);
    assert_eq!(s.count(Kind::Event), 37);
    assert_eq!(s.count(Kind::Struct), 200);
    assert_eq!(s.count(Kind::Enum), 79);
    assert_eq!(s.count(Kind::Union), 22);
    assert_eq!(s.count(Kind::Alternate), 4);
    assert_eq!(s.definitions.len(), 497);
    assert_eq!(s.pragma, spec().pragma);
    assert!(s.pragma.contains_key("returns-whitelist"));
    assert!(s.pragma.contains_key("name-case-whitelist"));
}

#[test]
fn split_defines_exactly_the_spec() {
    let (s, spec) = (split(), spec());
    let keys = |s: &Schema| {
        s.definitions
            .iter()
            .map(|d| (d.kind, d.name.clone()))
            .collect::<HashSet<_>>()
    };
    assert_eq!(keys(&s), keys(&spec));
    for d in &spec.definitions {
        let mine = s.get(d.kind, &d.name).unwrap();
        assert_eq!(mine.expr, d.expr, "expr of {:?} {}", d.kind, d.name);
        assert_eq!(mine.doc, d.doc, "doc of {:?} {}", d.kind, d.name);
    }
    // The spec is the includes expanded in place, so the split read in
    // include order defines everything in the spec's first-occurrence order.
    let order = |s: &Schema| {
        s.definitions
            .iter()
            .map(|d| (d.kind, d.name.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(order(&s), order(&spec));
}

/// Expands every `{ "include": ... }` line in place, again each time a file
/// is included, as the spec file was made.
fn expand(path: &Path, out: &mut String) {
    let text = std::fs::read_to_string(path).unwrap();
    for line in text.split_inclusive('\n') {
        let include = line
            .trim()
            .starts_with('{')
            .then(|| serde_json::from_str::<Value>(line).ok())
            .flatten()
            .and_then(|v| {
                v.get("include")
                    .and_then(|f| f.as_str())
                    .map(str::to_string)
            });
        match include {
            Some(file) => expand(&path.parent().unwrap().join(file), out),
            None => out.push_str(line),
        }
    }
}

#[test]
fn expanding_the_includes_gives_back_the_spec_byte_for_byte() {
    let mut expanded = String::new();
    expand(&schema_path(), &mut expanded);
    let spec = std::fs::read_to_string(SPEC).unwrap();
    if expanded != spec {
        let at = expanded
            .bytes()
            .zip(spec.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        let line = spec[..at.min(spec.len())].matches('\n').count() + 1;
        panic!(
            "expansion differs from the spec at line {line} (lengths {} and {})",
            expanded.len(),
            spec.len()
        );
    }
}

#[test]
fn every_module_file_exists_and_defines_something() {
    let s = split();
    let mut per_module: HashMap<&str, usize> = HashMap::new();
    for d in &s.definitions {
        *per_module.entry(d.module.as_str()).or_default() += 1;
    }
    for m in MODULES {
        assert!(
            dir().join(format!("{m}.json")).is_file(),
            "{m}.json missing"
        );
        assert!(
            per_module.get(m).copied().unwrap_or(0) > 0,
            "{m}.json defines nothing"
        );
    }
    // No definition lives anywhere else, and no stray schema file lies beside them.
    let known: HashSet<&str> = MODULES.into_iter().collect();
    assert!(
        per_module.keys().all(|m| known.contains(m)),
        "{per_module:?}"
    );
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("json") {
            let stem = path.file_stem().unwrap().to_str().unwrap();
            assert!(
                stem == "qapi-schema" || known.contains(stem),
                "unexpected {}",
                path.display()
            );
        }
    }
    // Definitions come module by module, in include order.
    let mut order: Vec<&str> = Vec::new();
    for d in &s.definitions {
        if order.last() != Some(&d.module.as_str()) {
            order.push(&d.module);
        }
    }
    assert_eq!(order, MODULES);
}

#[test]
fn definitions_live_in_qemus_modules() {
    let s = split();
    let checks = [
        (Kind::Enum, "QapiErrorClass", "common"),
        (Kind::Alternate, "StrOrNull", "common"),
        (Kind::Union, "SocketAddress", "sockets"),
        (Kind::Union, "SocketAddressLegacy", "sockets"),
        (Kind::Enum, "RunState", "run-state"),
        (Kind::Event, "GUEST_PANICKED", "run-state"),
        (Kind::Enum, "QCryptoBlockFormat", "crypto"),
        (Kind::Union, "BlockdevOptions", "block-core"),
        (Kind::Command, "query-block", "block-core"),
        (Kind::Command, "x-blockdev-change", "block-core"),
        (Kind::Enum, "BiosAtaTranslation", "block"),
        (Kind::Command, "eject", "block"),
        (Kind::Event, "QUORUM_REPORT_BAD", "block"),
        (Kind::Union, "ChardevBackend", "char"),
        (Kind::Struct, "NetdevTapOptions", "net"),
        (Kind::Struct, "RockerSwitch", "rocker"),
        (Kind::Enum, "TpmModel", "tpm"),
        (Kind::Struct, "VncInfo", "ui"),
        (Kind::Enum, "MigrationStatus", "migration"),
        (Kind::Command, "transaction", "transaction"),
        (Kind::Struct, "TraceEventInfo", "trace"),
        (Kind::Union, "SchemaInfo", "introspect"),
        (Kind::Command, "query-version", "misc"),
        (Kind::Command, "qmp_capabilities", "misc"),
        (Kind::Command, "watchdog-set-action", "misc"),
    ];
    for (kind, name, module) in checks {
        let d = s
            .get(kind, name)
            .unwrap_or_else(|| panic!("{kind:?} {name} missing"));
        assert_eq!(d.module, module, "{kind:?} {name}");
    }
}

#[test]
fn doc_blocks_belong_to_their_definitions() {
    // A doc block documents the definition right after it, so it names it.
    // The spec has a few broken blocks (a lone `##`, a block whose opening
    // `##` is missing); those definitions have no doc.
    let s = split();
    let mut undocumented = Vec::new();
    for d in &s.definitions {
        match &d.doc {
            Some(doc) => assert!(
                doc.starts_with(&format!("@{}:", d.name)),
                "doc of {}: {doc:?}",
                d.name
            ),
            None => undocumented.push(d.name.as_str()),
        }
    }
    assert_eq!(
        undocumented,
        [
            "SocketAddressLegacy",
            "block_set_io_throttle",
            "eject",
            "migrate-continue",
            "quit"
        ]
    );
    let doc = s
        .get(Kind::Union, "BlockdevOptions")
        .unwrap()
        .doc
        .as_deref()
        .unwrap();
    assert!(doc.contains("@driver:"), "{doc}");
}
