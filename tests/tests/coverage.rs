//! docs/qmp-coverage.md tells the truth: every command is called with
//! valid arguments (built from the schema vmm itself reports) and its
//! answer must match the status the table gives it.

use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use vmm_tests::{error_of, VmmProcess};

fn table(section: &str) -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/qmp-coverage.md");
    let text = std::fs::read_to_string(&path).expect("docs/qmp-coverage.md");
    let start = text
        .find(&format!("## {section}"))
        .unwrap_or_else(|| panic!("section {section}"));
    let body = &text[start..];
    let body = &body[..body[3..].find("\n## ").map(|i| i + 3).unwrap_or(body.len())];
    body.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_string(), cells.get(3)?.to_string()))
        })
        .collect()
}

/// A valid value for a schema type, as small as the type allows.
fn sample(t: &str, types: &HashMap<String, Value>, depth: usize) -> Value {
    if let Some(inner) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        let _ = inner;
        return json!([]);
    }
    let Some(info) = types.get(t) else {
        return json!("x");
    };
    match info["meta-type"].as_str().unwrap_or("") {
        "builtin" => match info["json-type"].as_str().unwrap_or("") {
            "string" => json!("x"),
            "int" => json!(0),
            "number" => json!(0.5),
            "boolean" => json!(false),
            "null" => Value::Null,
            _ => json!({}),
        },
        "enum" => info["values"][0].clone(),
        "array" => json!([]),
        "alternate" => {
            // A scalar branch keeps the sample small (a node name rather
            // than nested options).
            let members: Vec<&str> = info["members"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["type"].as_str())
                .collect();
            let scalar = members.iter().find(|t| {
                types.get(**t).is_some_and(|i| {
                    i["meta-type"] == "enum"
                        || i["json-type"] == "string"
                        || i["json-type"] == "int"
                })
            });
            sample(
                scalar.or(members.first()).copied().unwrap_or("str"),
                types,
                depth + 1,
            )
        }
        "object" => {
            let mut m = Map::new();
            if depth > 8 {
                return Value::Object(m);
            }
            let tag = info["tag"].as_str();
            for member in info["members"].as_array().into_iter().flatten() {
                if member.get("default").is_some() {
                    continue;
                }
                let name = member["name"].as_str().unwrap_or("").to_string();
                let v = sample(member["type"].as_str().unwrap_or(""), types, depth + 1);
                m.insert(name, v);
            }
            if let Some(tag) = tag {
                let case = m.get(tag).and_then(Value::as_str).map(str::to_string);
                if let Some(variant) = info["variants"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|v| Some(v["case"].as_str().unwrap_or("")) == case.as_deref())
                {
                    if let Value::Object(extra) =
                        sample(variant["type"].as_str().unwrap_or(""), types, depth + 1)
                    {
                        m.extend(extra);
                    }
                }
            }
            Value::Object(m)
        }
        _ => json!("x"),
    }
}

#[test]
fn every_command_answers_as_the_table_says() {
    let expected = table("Commands");
    assert_eq!(expected.len(), 155, "the table lists every command once");
    let vmm = VmmProcess::start(&["-S", "-no-shutdown"]);
    let mut c = vmm.qmp();
    let schema = c.ok("query-qmp-schema", json!({}));
    let entries = schema.as_array().expect("list");
    let types: HashMap<String, Value> = entries
        .iter()
        .map(|e| (e["name"].as_str().unwrap_or("").to_string(), e.clone()))
        .collect();
    let commands: Vec<&Value> = entries
        .iter()
        .filter(|e| e["meta-type"] == "command")
        .collect();
    assert_eq!(commands.len(), 155);
    let mut wrong = Vec::new();
    for cmd in commands {
        let name = cmd["name"].as_str().expect("name");
        if name == "quit" {
            continue; // ends the process; tested in runstate.rs
        }
        let args = sample(cmd["arg-type"].as_str().unwrap_or(""), &types, 0);
        let r = c.execute(name, args.clone());
        let actual = match error_of(&r) {
            Some((_, desc)) if desc == format!("Command '{name}' is not implemented yet") => {
                "not implemented yet"
            }
            Some((class, desc))
                if class == "CommandNotFound"
                    && desc == format!("The command {name} has not been found") =>
            {
                "unregistered"
            }
            _ => "implemented",
        };
        let listed = expected
            .get(name)
            .map(String::as_str)
            .unwrap_or("missing from the table");
        if actual != listed {
            wrong.push(format!(
                "{name}: table says {listed}, vmm answers {r} to {args}"
            ));
        }
    }
    assert!(expected.get("quit").is_some_and(|s| s == "implemented"));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_table_lists_every_event() {
    let events = table("Events");
    let names: Vec<&str> = qmp_event_names();
    assert_eq!(events.len(), 37);
    for n in names {
        let status = events.get(n).unwrap_or_else(|| panic!("{n} missing"));
        assert!(
            status == "emitted" || status == "not emitted yet",
            "{n}: {status}"
        );
    }
}

fn qmp_event_names() -> Vec<&'static str> {
    let vmm = VmmProcess::start(&["-S"]);
    let mut c = vmm.qmp();
    let v = c.ok("query-events", json!({}));
    let names: Vec<String> = v
        .as_array()
        .expect("list")
        .iter()
        .map(|e| e["name"].as_str().expect("name").to_string())
        .collect();
    names
        .into_iter()
        .map(|s| &*Box::leak(s.into_boxed_str()))
        .collect()
}
