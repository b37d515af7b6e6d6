//! The QMP protocol as QEMU 2.11 speaks it: greeting, negotiation,
//! request checks, ids, ordering, and clients that misbehave.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use vmm_tests::{error_of, generic, QmpClient, VmmProcess};

#[test]
fn greeting_names_qemu_2_11_50_and_vmm() {
    let vmm = VmmProcess::start(&["-S"]);
    let c = vmm.connect();
    let qmp = &c.greeting["QMP"];
    assert_eq!(
        qmp["version"]["qemu"],
        json!({"major": 2, "minor": 11, "micro": 50})
    );
    let package = qmp["version"]["package"].as_str().expect("package");
    assert!(package.contains("vmm"), "{package}");
    assert_eq!(qmp["capabilities"], json!([]));
}

#[test]
fn commands_wait_for_capabilities_negotiation() {
    let vmm = VmmProcess::start(&["-S"]);
    let mut c = vmm.connect();
    assert_eq!(
        c.err("query-status", json!({})),
        (
            "CommandNotFound".into(),
            "Expecting capabilities negotiation with 'qmp_capabilities'".into()
        )
    );
    // Unknown commands get the same answer before negotiation.
    assert_eq!(
        c.err("no-such-command", json!({})).1,
        "Expecting capabilities negotiation with 'qmp_capabilities'"
    );
    // No events before negotiation: a STOP caused by another client is not sent.
    assert_eq!(c.ok("qmp_capabilities", json!({})), json!({}));
    assert_eq!(
        c.err("qmp_capabilities", json!({})),
        (
            "CommandNotFound".into(),
            "Capabilities negotiation is already complete, command ignored".into()
        )
    );
    assert_eq!(c.ok("query-status", json!({}))["status"], "prelaunch");
}

#[test]
fn qmp_capabilities_takes_no_arguments() {
    let vmm = VmmProcess::start(&["-S"]);
    let mut c = vmm.connect();
    assert_eq!(
        c.err("qmp_capabilities", json!({"enable": ["oob"]})),
        generic("Parameter 'enable' is unexpected")
    );
    c.negotiate();
}

#[test]
fn malformed_requests_get_qemu_errors() {
    let vmm = VmmProcess::start(&["-S"]);
    let mut c = vmm.qmp();
    let cases: Vec<(&str, (String, String))> = vec![
        (
            "[1, 2]",
            generic("Expected 'request is not a dictionary' in QMP input"),
        ),
        (
            "42",
            generic("Expected 'request is not a dictionary' in QMP input"),
        ),
        (
            r#"{"arguments": {}}"#,
            generic("Expected 'execute' in QMP input"),
        ),
        (
            r#"{"execute": 1}"#,
            generic("QMP input object member 'execute' expects 'string'"),
        ),
        (
            r#"{"execute": "query-status", "arguments": []}"#,
            generic("QMP input object member 'arguments' expects 'object'"),
        ),
        (
            r#"{"execute": "query-status", "extra": 1}"#,
            generic("QMP input object member 'extra' is unexpected"),
        ),
        (
            r#"{"execute": "no-such-command"}"#,
            (
                "CommandNotFound".into(),
                "The command no-such-command has not been found".into(),
            ),
        ),
        (
            r#"{"execute": "query-status", "arguments": {"verbose": true}}"#,
            generic("Parameter 'verbose' is unexpected"),
        ),
    ];
    for (input, expected) in cases {
        c.send_raw(format!("{input}\n").as_bytes());
        let r = c.read_response();
        assert_eq!(error_of(&r), Some(expected), "for {input}: {r}");
        assert!(r.get("id").is_none());
    }
    // Invalid JSON is answered, and the connection keeps working.
    c.send_raw(b"{\"execute\": }\n");
    let r = c.read_response();
    assert_eq!(
        error_of(&r).map(|e| e.0),
        Some("GenericError".into()),
        "{r}"
    );
    assert_eq!(c.ok("query-status", json!({}))["status"], "prelaunch");
}

#[test]
fn ids_of_any_type_are_echoed_verbatim() {
    let vmm = VmmProcess::start(&["-S"]);
    let mut c = vmm.qmp();
    for id in [
        json!("libvirt-1"),
        json!(42),
        json!(-1.5),
        json!({"a": [1, {"b": null}]}),
        json!([1, "x"]),
        json!(true),
        json!(null),
    ] {
        c.send_raw(format!("{}\n", json!({"execute": "query-status", "id": id})).as_bytes());
        let r = c.read_response();
        assert_eq!(r["id"], id, "{r}");
        assert!(r.get("return").is_some());
        // Errors carry the id too.
        c.send_raw(format!("{}\n", json!({"execute": "nope", "id": id})).as_bytes());
        let r = c.read_response();
        assert_eq!(r["id"], id);
        assert!(r.get("error").is_some());
    }
}

#[test]
fn responses_come_in_request_order_and_events_carry_timestamps() {
    let vmm = VmmProcess::start(&[]);
    let mut c = vmm.qmp();
    // Several requests in one write, split oddly.
    let mut batch = String::new();
    for i in 0..20 {
        let cmd = match i % 4 {
            0 => "query-status",
            1 => "stop",
            2 => "query-version",
            _ => "cont",
        };
        batch.push_str(&format!("{}", json!({"execute": cmd, "id": i})));
    }
    let bytes = batch.as_bytes();
    for chunk in bytes.chunks(7) {
        c.send_raw(chunk);
    }
    for i in 0..20 {
        let r = c.read_response();
        assert_eq!(r["id"], i, "{r}");
    }
    let names = c.event_names();
    assert_eq!(names.len(), 10, "{names:?}");
    assert!(
        names.chunks(2).all(|p| p == ["STOP", "RESUME"]),
        "{names:?}"
    );
    for e in &c.events {
        let ts = &e["timestamp"];
        assert!(
            ts["seconds"].as_u64().is_some_and(|s| s > 1_600_000_000),
            "{e}"
        );
        assert!(
            ts["microseconds"].as_u64().is_some_and(|u| u < 1_000_000),
            "{e}"
        );
    }
}

#[test]
fn an_event_precedes_the_response_of_the_command_that_caused_it() {
    let vmm = VmmProcess::start(&[]);
    let mut c = vmm.qmp();
    c.send_raw(b"{\"execute\": \"stop\"}\n");
    let first = c.read_message().expect("message");
    assert_eq!(first["event"], "STOP", "{first}");
    assert_eq!(c.read_message().expect("message"), json!({"return": {}}));
}

#[test]
fn single_quotes_are_accepted_as_qemu_does() {
    let vmm = VmmProcess::start(&["-S"]);
    let mut c = vmm.qmp();
    c.send_raw(b"{'execute': 'query-status', 'id': 'x'}\n");
    let r = c.read_response();
    assert_eq!(r["id"], "x");
    assert_eq!(r["return"]["status"], "prelaunch");
}

fn still_serves(vmm: &VmmProcess, other: &mut QmpClient) {
    assert_eq!(other.ok("query-status", json!({}))["status"], "prelaunch");
    // The misbehaving client's socket is free again for a new client.
    let mut fresh = vmm.qmp();
    assert_eq!(fresh.ok("query-name", json!({})), json!({}));
}

#[test]
fn bad_clients_do_not_disturb_others() {
    let second = vmm_tests::TempDir::new("second");
    let sock2 = second.path().join("two.sock");
    let arg = format!("unix:{},server,nowait", sock2.display());
    let vmm = VmmProcess::start(&["-S", "-qmp", &arg]);
    vmm.wait_for_path(&sock2);
    let mut other = QmpClient::connect(&sock2);
    other.negotiate();

    // A client that disconnects in the middle of a request.
    {
        let mut c = vmm.qmp();
        c.send_raw(b"{\"execute\": \"query-sta");
    }
    still_serves(&vmm, &mut other);

    // Garbage bytes, then a valid request on the same connection.
    {
        let mut c = vmm.qmp();
        c.send_raw(&[0xff, 0xfe, b'}', b']', 0, 1, 2, b'x', b'\n']);
        c.send_raw(b"{\"execute\": \"query-status\", \"id\": \"after\"}\n");
        let r = loop {
            let r = c.read_response();
            if r.get("id").is_some() {
                break r;
            }
            assert!(r.get("error").is_some(), "{r}");
        };
        assert_eq!(r["id"], "after");
    }
    still_serves(&vmm, &mut other);

    // A 10 MiB line: an error answer or a closed connection.
    {
        let mut c = vmm.qmp();
        let mut big = b"{\"execute\": \"".to_vec();
        big.extend(std::iter::repeat_n(b'a', 10 << 20));
        big.extend_from_slice(b"\"}\n");
        let mut s = c.stream.try_clone().expect("clone");
        let writer = std::thread::spawn(move || {
            let _ = s.write_all(&big);
        });
        let r = c.read_response();
        assert!(
            r.get("error").is_some(),
            "{}",
            &r.to_string()[..200.min(r.to_string().len())]
        );
        let _ = writer.join();
    }
    still_serves(&vmm, &mut other);

    // A deeply nested document.
    {
        let mut c = vmm.qmp();
        let mut deep = b"{\"execute\": \"query-status\", \"arguments\": {\"a\": ".to_vec();
        deep.extend(std::iter::repeat_n(b'[', 100_000));
        deep.extend(std::iter::repeat_n(b']', 100_000));
        deep.extend_from_slice(b"}}\n");
        c.send_raw(&deep);
        c.send_raw(b"{\"execute\": \"query-status\", \"id\": 7}\n");
        let mut saw_error = false;
        loop {
            let r = c.read_response();
            if r["id"] == 7 {
                break;
            }
            saw_error |= r.get("error").is_some();
        }
        assert!(saw_error);
    }
    still_serves(&vmm, &mut other);
}

#[test]
fn a_socket_monitor_serves_one_client_at_a_time() {
    let vmm = VmmProcess::start(&["-S"]);
    let mut first = vmm.qmp();
    // The second client's connection waits until the first leaves, as
    // with a QEMU socket chardev.
    let mut second = UnixStream::connect(&vmm.qmp_path).expect("connect");
    second
        .set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    assert!(
        second.read(&mut buf).is_err(),
        "second client was greeted while the first is connected"
    );
    assert_eq!(first.ok("query-status", json!({}))["status"], "prelaunch");
    drop(first);
    second
        .set_read_timeout(Some(vmm_tests::TIMEOUT))
        .expect("timeout");
    let mut second = QmpClient::over(second);
    assert!(second.greeting.get("QMP").is_some());
    second.negotiate();
}

#[test]
fn query_qmp_schema_ignores_arguments_as_qemu_does() {
    let vmm = VmmProcess::start(&["-S"]);
    let mut c = vmm.qmp();
    let s = c.ok("query-qmp-schema", json!({"whatever": 1}));
    assert!(s.as_array().is_some_and(|a| a.len() > 600));
    let _ = Value::Null;
}
