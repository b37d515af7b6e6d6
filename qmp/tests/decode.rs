//! The generated decoders give QEMU 2.11's errors and the encoders give
//! QEMU's wire form.

use qmp::qapi::*;
use qmp::visit::{decode_args, from_keyval, from_value, ToQObject};
use serde_json::{json, Map, Value};

fn args(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

fn call(name: &str, a: Value) -> Result<Value, String> {
    struct Echo;
    // Only the argument decoding matters here: dispatch decodes before it
    // calls, so a decoding error never reaches the method.
    let mut out = None;
    let r = match name {
        "block-commit" => decode_args(&args(a), BlockCommitArgs::visit_members).map(|x| {
            out = Some(format!("{x:?}"));
        }),
        "blockdev-add" => decode_args(&args(a), BlockdevOptions::visit_members).map(|x| {
            out = Some(x.to_qobject().to_string());
        }),
        "set_link" => decode_args(&args(a), SetLinkArgs::visit_members).map(|_| ()),
        "query-status" => qmp::visit::decode_no_args(&args(a)),
        _ => panic!("{name}"),
    };
    let _ = Echo;
    r.map(|()| Value::String(out.unwrap_or_default()))
        .map_err(|e| e.desc)
}

#[test]
fn missing_member() {
    assert_eq!(
        call("block-commit", json!({})),
        Err("Parameter 'device' is missing".into())
    );
}

#[test]
fn wrong_types() {
    assert_eq!(
        call("block-commit", json!({"device": 1})),
        Err("Invalid parameter type for 'device', expected: string".into())
    );
    assert_eq!(
        call("block-commit", json!({"device": "d", "speed": "fast"})),
        Err("Invalid parameter type for 'speed', expected: integer".into())
    );
    assert_eq!(
        call("block-commit", json!({"device": "d", "speed": 1.5})),
        Err("Invalid parameter type for 'speed', expected: integer".into())
    );
    assert_eq!(
        call("set_link", json!({"name": "n", "up": "yes"})),
        Err("Invalid parameter type for 'up', expected: boolean".into())
    );
}

#[test]
fn unexpected_member() {
    assert_eq!(
        call("query-status", json!({"x": 1})),
        Err("Parameter 'x' is unexpected".into())
    );
    assert_eq!(
        call("block-commit", json!({"device": "d", "bogus": true})),
        Err("Parameter 'bogus' is unexpected".into())
    );
}

#[test]
fn bad_enum_value() {
    assert_eq!(
        call(
            "blockdev-add",
            json!({"driver": "null-co", "discard": "explode"})
        ),
        Err("Invalid parameter 'explode'".into())
    );
}

#[test]
fn nested_paths_and_flat_unions() {
    // Missing discriminator.
    assert_eq!(
        call("blockdev-add", json!({})),
        Err("Parameter 'driver' is missing".into())
    );
    // A member of the variant selected by `driver`.
    assert_eq!(
        call("blockdev-add", json!({"driver": "file"})),
        Err("Parameter 'filename' is missing".into())
    );
    // A nested object member names its path.
    assert_eq!(
        call(
            "blockdev-add",
            json!({"driver": "file", "filename": "f", "cache": {"direct": 1}})
        ),
        Err("Invalid parameter type for 'cache.direct', expected: boolean".into())
    );
    // An alternate that gets a type none of its branches takes.
    assert_eq!(
        call("blockdev-add", json!({"driver": "raw", "file": 5})),
        Err("Invalid parameter type for 'file', expected: BlockdevRef".into())
    );
    // Inside an alternate's object branch, paths continue.
    assert_eq!(
        call(
            "blockdev-add",
            json!({"driver": "raw", "file": {"driver": "file", "filename": 3}})
        ),
        Err("Invalid parameter type for 'file.filename', expected: string".into())
    );
    // Leftover members of the variant.
    assert_eq!(
        call(
            "blockdev-add",
            json!({"driver": "null-co", "filename": "x"})
        ),
        Err("Parameter 'filename' is unexpected".into())
    );
}

#[test]
fn list_elements_are_indexed() {
    let v = json!({"driver": "quorum", "vote-threshold": 1, "children": ["a", {"driver": 7}]});
    assert_eq!(
        call("blockdev-add", v),
        Err("Invalid parameter type for 'children[1].driver', expected: string".into())
    );
}

#[test]
fn sized_integers_are_range_checked() {
    let r: Result<InputEvent, _> =
        from_value(&json!({"type": "rel", "data": {"axis": "x", "value": 1}}));
    assert!(r.is_ok());
    let r: Result<VncClientInfo, _> =
        from_value(&json!({"host": "h", "service": "s", "family": "ipv4", "websocket": false}));
    assert!(r.is_ok());
    // uint16 port of a ... use a type with uint32: BlockIOThrottle has int only; use
    // NetdevTapOptions' 'queues' (uint32).
    let r: Result<NetdevTapOptions, _> = from_value(&json!({"queues": 5000000000u64}));
    assert_eq!(
        r.map_err(|e| e.desc),
        Err("Parameter 'queues' expects uint32".into())
    );
    // Negative values for uint64 wrap, as in QEMU.
    let r: Result<BlockdevOptionsNull, _> = from_value(&json!({"latency-ns": -1}));
    assert_eq!(r.map(|o| o.latency_ns), Ok(Some(u64::MAX)));
    let r: Result<BlockdevOptionsNull, _> = from_value(&json!({"latency-ns": "x"}));
    assert_eq!(
        r.map_err(|e| e.desc),
        Err("Parameter 'latency-ns' expects uint64".into())
    );
}

#[test]
fn encoders_follow_schema_order_and_skip_absent_members() {
    let info = StatusInfo {
        running: true,
        singlestep: false,
        status: RunState::Running,
    };
    assert_eq!(
        serde_json::to_string(&info.to_qobject()).unwrap(),
        r#"{"running":true,"singlestep":false,"status":"running"}"#
    );
    let name = NameInfo { name: None };
    assert_eq!(name.to_qobject(), json!({}));
}

#[test]
fn simple_unions_round_trip() {
    let v = json!({"type": "key", "data": {"down": true, "key": {"type": "qcode", "data": "a"}}});
    let e: InputEvent = from_value(&v).expect("decode");
    assert_eq!(e.to_qobject(), v);
    let bad =
        json!({"type": "key", "data": {"down": true, "key": {"type": "qcode", "data": "nokey"}}});
    let r: Result<InputEvent, _> = from_value(&bad);
    assert_eq!(
        r.map_err(|e| e.desc),
        Err("Invalid parameter 'nokey'".into())
    );
}

#[test]
fn flat_union_round_trips() {
    let v = json!({"driver": "file", "node-name": "n0", "filename": "/tmp/x", "aio": "native"});
    let o: BlockdevOptions = from_value(&v).expect("decode");
    assert_eq!(o.u.tag(), BlockdevDriver::File);
    // Base members first, then the variant's, in schema order.
    assert_eq!(
        serde_json::to_string(&o.to_qobject()).unwrap(),
        r#"{"driver":"file","node-name":"n0","filename":"/tmp/x","aio":"native"}"#
    );
}

#[test]
fn keyval_values_are_converted_by_type() {
    let v = json!({"driver": "null-co", "size": "1024", "latency-ns": "0x10", "read-only": "on"});
    let o: BlockdevOptions = from_keyval(&v).expect("decode");
    let BlockdevOptionsVariant::NullCo(n) = &o.u else {
        panic!("variant")
    };
    assert_eq!(n.size, Some(1024));
    assert_eq!(n.latency_ns, Some(16));
    assert_eq!(o.read_only, Some(true));
    let bad = json!({"driver": "null-co", "read-only": "yes"});
    let r: Result<BlockdevOptions, _> = from_keyval(&bad);
    assert_eq!(
        r.map_err(|e| e.desc),
        Err("Parameter 'read-only' expects 'on' or 'off'".into())
    );
}

#[test]
fn every_command_and_event_is_generated() {
    assert_eq!(COMMAND_NAMES.len(), 155);
    assert_eq!(EVENT_NAMES.len(), 37);
    let schema: Value = serde_json::from_str(SCHEMA_INFO_JSON).expect("schema info");
    let entries = schema.as_array().expect("array");
    let names: std::collections::HashSet<&str> =
        entries.iter().filter_map(|e| e["name"].as_str()).collect();
    // Every reference resolves.
    let mut refs = Vec::new();
    for e in entries {
        for key in ["arg-type", "ret-type", "element-type"] {
            if let Some(t) = e[key].as_str() {
                refs.push(t);
            }
        }
        for list in ["members", "variants"] {
            if let Some(ms) = e[list].as_array() {
                refs.extend(ms.iter().filter_map(|m| m["type"].as_str()));
            }
        }
    }
    for r in refs {
        assert!(names.contains(r), "{r} is referenced but not defined");
    }
    for c in COMMAND_NAMES {
        assert!(names.contains(c), "{c}");
    }
    for e in EVENT_NAMES {
        assert!(names.contains(e), "{e}");
    }
}
