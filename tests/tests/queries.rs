//! The query commands of the control plane, compared with what a real
//! QEMU 2.11.0 answered libvirt's probe (shared/oracle).

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use vmm_tests::{Oracle, VmmProcess};

/// Commands and events of the 2.11.50 schema that 2.11.0 did not have, and
/// the other way round (the oracle README says to expect a few).
fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|e| e["name"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn query_version_target_kvm_name_uuid() {
    let vmm = VmmProcess::start(&[
        "-S",
        "-name",
        "guest0,debug-threads=on",
        "-uuid",
        "5e1a2b3c-0000-4000-8000-00000000abcd",
    ]);
    let mut c = vmm.qmp();
    let v = c.ok("query-version", json!({}));
    assert_eq!(v["qemu"], json!({"major": 2, "minor": 11, "micro": 50}));
    assert!(v["package"].as_str().is_some_and(|p| p.contains("vmm")));
    assert_eq!(
        c.ok("query-target", json!({})),
        Oracle::load().reply("query-target")["return"]
    );
    assert_eq!(
        c.ok("query-kvm", json!({})),
        json!({"enabled": true, "present": true})
    );
    assert_eq!(c.ok("query-name", json!({})), json!({"name": "guest0"}));
    assert_eq!(
        c.ok("query-uuid", json!({})),
        json!({"UUID": "5e1a2b3c-0000-4000-8000-00000000abcd"})
    );
}

#[test]
fn query_name_and_uuid_defaults() {
    let vmm = VmmProcess::start(&["-S"]);
    let mut c = vmm.qmp();
    assert_eq!(c.ok("query-name", json!({})), json!({}));
    assert_eq!(
        c.ok("query-uuid", json!({})),
        json!({"UUID": "00000000-0000-0000-0000-000000000000"})
    );
}

#[test]
fn query_commands_lists_the_registered_commands_in_qemu_order() {
    let vmm = VmmProcess::start(&["-S"]);
    let mut c = vmm.qmp();
    let ours = names(&c.ok("query-commands", json!({})));
    assert_eq!(ours.len(), 150);
    for absent in [
        "dump-skeys",
        "query-gic-capabilities",
        "query-cpu-model-baseline",
        "query-cpu-model-comparison",
        "query-spice",
    ] {
        assert!(!ours.contains(&absent.to_string()), "{absent}");
        assert_eq!(
            c.err(absent, json!({})),
            (
                "CommandNotFound".into(),
                format!("The command {absent} has not been found")
            )
        );
    }
    let oracle = Oracle::load();
    let theirs = names(&oracle.reply("query-commands")["return"]);
    // Same order for the commands both have.
    let common: BTreeSet<&String> = ours.iter().filter(|n| theirs.contains(n)).collect();
    let ours_common: Vec<&String> = ours.iter().filter(|n| common.contains(n)).collect();
    let theirs_common: Vec<&String> = theirs.iter().filter(|n| common.contains(n)).collect();
    assert_eq!(ours_common, theirs_common);
    // The differences are the few commands 2.11.50 changed.
    let only_ours: Vec<&String> = ours.iter().filter(|n| !theirs.contains(n)).collect();
    let only_theirs: Vec<&String> = theirs.iter().filter(|n| !ours.contains(n)).collect();
    assert!(
        only_ours.len() + only_theirs.len() <= 6,
        "ours only {only_ours:?}, theirs only {only_theirs:?}"
    );
}

#[test]
fn query_events_lists_every_event_of_the_schema() {
    let vmm = VmmProcess::start(&["-S"]);
    let mut c = vmm.qmp();
    let ours = names(&c.ok("query-events", json!({})));
    assert_eq!(ours.len(), 37);
    let theirs = names(&Oracle::load().reply("query-events")["return"]);
    // QEMU lists every event of its schema, SPICE's included, whatever it
    // was built with.
    let ours_filtered: Vec<&String> = ours.iter().filter(|n| theirs.contains(n)).collect();
    let theirs_filtered: Vec<&String> = theirs.iter().filter(|n| ours.contains(n)).collect();
    assert_eq!(ours_filtered, theirs_filtered, "same order");
    assert_eq!(
        ours.len(),
        ours_filtered.len(),
        "2.11.0 and 2.11.50 have the same events"
    );
}

#[test]
fn query_machines_matches_qemu_for_the_machines_vmm_has() {
    let vmm = VmmProcess::start(&["-S"]);
    let mut c = vmm.qmp();
    let ours = c.ok("query-machines", json!({}));
    let oracle = Oracle::load();
    let theirs = &oracle.reply("query-machines")["return"];
    let by_name = |v: &Value| -> BTreeMap<String, Value> {
        v.as_array()
            .expect("list")
            .iter()
            .map(|m| (m["name"].as_str().expect("name").to_string(), m.clone()))
            .collect()
    };
    let theirs = by_name(theirs);
    let ours = by_name(&ours);
    assert!(ours.contains_key("pc-i440fx-2.11") && ours.contains_key("none"));
    for (name, m) in &ours {
        assert_eq!(Some(m), theirs.get(name), "{name}");
    }
}

#[test]
fn query_command_line_options_matches_qemu_for_each_group_vmm_parses() {
    let vmm = VmmProcess::start(&["-S"]);
    let mut c = vmm.qmp();
    let ours = c.ok("query-command-line-options", json!({}));
    let oracle = Oracle::load();
    let theirs = &oracle.reply("query-command-line-options")["return"];
    let groups = |v: &Value| -> BTreeMap<String, Value> {
        v.as_array()
            .expect("list")
            .iter()
            .map(|g| (g["option"].as_str().expect("option").to_string(), g.clone()))
            .collect()
    };
    let theirs = groups(theirs);
    let ours_map = groups(&ours);
    assert!(ours_map.len() >= 10, "{:?}", ours_map.keys());
    for (name, g) in &ours_map {
        assert_eq!(Some(g), theirs.get(name), "group {name}");
    }
    // The filter, and QEMU's error for an unknown group.
    let one = c.ok("query-command-line-options", json!({"option": "machine"}));
    assert_eq!(one.as_array().map(Vec::len), Some(1));
    assert_eq!(
        c.err(
            "query-command-line-options",
            json!({"option": "nonexistent"})
        ),
        ("GenericError".into(), "Invalid parameter 'option'".into())
    );
}

/// Resolves masked type names so two schema answers can be compared.
fn resolve(info: &Value) -> BTreeMap<String, Value> {
    let entries = info.as_array().expect("list");
    let by_name: BTreeMap<&str, &Value> = entries
        .iter()
        .map(|e| (e["name"].as_str().expect("name"), e))
        .collect();
    fn expand(t: &str, by_name: &BTreeMap<&str, &Value>, depth: usize) -> Value {
        if depth > 6 {
            return json!("...");
        }
        if let Some(inner) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            return json!([expand(inner, by_name, depth + 1)]);
        }
        let Some(e) = by_name.get(t) else {
            return json!(t);
        };
        match e["meta-type"].as_str() {
            Some("builtin") => json!(t),
            Some("enum") => json!({"enum": e["values"]}),
            Some("object") => {
                let members: Vec<Value> = e["members"]
                    .as_array()
                    .map(|ms| {
                        ms.iter()
                            .map(|m| {
                                json!([
                                    m["name"],
                                    m.get("default").is_some(),
                                    expand(m["type"].as_str().unwrap_or(""), by_name, depth + 1)
                                ])
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let variants: Vec<Value> = e["variants"]
                    .as_array()
                    .map(|vs| {
                        vs.iter()
                            .map(|v| {
                                json!([
                                    v["case"],
                                    expand(v["type"].as_str().unwrap_or(""), by_name, depth + 1)
                                ])
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                json!({"members": members, "tag": e["tag"], "variants": variants})
            }
            Some("alternate") => {
                let members: Vec<Value> = e["members"]
                    .as_array()
                    .map(|ms| {
                        ms.iter()
                            .map(|m| expand(m["type"].as_str().unwrap_or(""), by_name, depth + 1))
                            .collect()
                    })
                    .unwrap_or_default();
                json!({"alternate": members})
            }
            Some("array") => json!([expand(
                e["element-type"].as_str().unwrap_or(""),
                by_name,
                depth + 1
            )]),
            _ => json!(t),
        }
    }
    entries
        .iter()
        .filter(|e| matches!(e["meta-type"].as_str(), Some("command") | Some("event")))
        .map(|e| {
            let arg = expand(e["arg-type"].as_str().unwrap_or(""), &by_name, 0);
            let ret = e
                .get("ret-type")
                .map(|r| expand(r.as_str().unwrap_or(""), &by_name, 0));
            (
                e["name"].as_str().unwrap_or("").to_string(),
                json!({"arg": arg, "ret": ret}),
            )
        })
        .collect()
}

#[test]
fn query_qmp_schema_has_qemu_shape_and_matches_the_oracle_where_unchanged() {
    let vmm = VmmProcess::start(&["-S"]);
    let mut c = vmm.qmp();
    let ours = c.ok("query-qmp-schema", json!({}));
    let entries = ours.as_array().expect("list");
    // Commands and events first, sorted; types masked as numbers.
    let first_type = entries
        .iter()
        .position(|e| !matches!(e["meta-type"].as_str(), Some("command") | Some("event")))
        .expect("types");
    let heads: Vec<&str> = entries[..first_type]
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect();
    let mut sorted = heads.clone();
    sorted.sort_unstable();
    assert_eq!(heads, sorted);
    assert_eq!(heads.len(), 155 + 37);
    assert_eq!(
        entries[0],
        json!({"name": "ACPI_DEVICE_OST", "meta-type": "event", "arg-type": "0"})
    );
    // Unregistered commands are still described.
    assert!(heads.contains(&"query-spice") && heads.contains(&"dump-skeys"));

    let theirs = resolve(&Oracle::load().reply("query-qmp-schema")["return"]);
    let ours = resolve(&ours);
    let mut same = 0;
    let mut differ = Vec::new();
    for (name, sig) in &ours {
        match theirs.get(name) {
            Some(t) if t == sig => same += 1,
            Some(_) => differ.push(name.clone()),
            None => {}
        }
    }
    // 2.11.50 changed a handful of commands against 2.11.0.
    assert!(same >= 170, "only {same} identical; differing: {differ:?}");
    assert!(differ.len() <= 15, "{differ:?}");
}

/// What vmm has none of yet (block jobs, a balloon, VNC, a TPM, DIMMs,
/// NICs) is reported as QEMU reports a machine without them, in QMP and
/// in the human monitor.
#[test]
fn queries_for_absent_subsystems_answer_as_qemu_without_them() {
    let vmm = VmmProcess::start(&["-S", "-nodefaults"]);
    let mut c = vmm.qmp();
    assert_eq!(c.ok("query-block-jobs", json!({})), json!([]));
    assert_eq!(c.ok("query-vnc", json!({})), json!({"enabled": false}));
    assert_eq!(c.ok("query-vnc-servers", json!({})), json!([]));
    assert_eq!(c.ok("query-tpm", json!({})), json!([]));
    assert_eq!(c.ok("query-memory-devices", json!({})), json!([]));
    assert_eq!(
        c.err("query-balloon", json!({})),
        (
            "DeviceNotActive".to_string(),
            "No balloon device has been activated".to_string()
        )
    );
    let mut hmp = |line: &str| {
        c.ok("human-monitor-command", json!({ "command-line": line }))
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(hmp("info block-jobs"), "No active jobs\r\n");
    assert_eq!(hmp("info vnc"), "None\r\n");
    assert_eq!(
        hmp("info balloon"),
        "No balloon device has been activated\r\n"
    );
    assert_eq!(hmp("info tpm"), "");
    assert_eq!(hmp("info memory-devices"), "");
    assert_eq!(hmp("info network"), "");
}
