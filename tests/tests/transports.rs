//! Monitors on every transport the control plane offers: `-qmp unix:`
//! with QEMU's flag spellings, `-qmp tcp:`, `-qmp stdio`, `-mon` over a
//! `-chardev socket`, and `server` without `nowait`.

use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vmm_tests::{vmm_binary, QmpClient, TempDir, VmmProcess, TIMEOUT};

#[test]
fn unix_socket_flag_spellings() {
    let dir = TempDir::new("spell");
    let a = dir.path().join("a.sock");
    let b = dir.path().join("b.sock");
    let arg_a = format!("unix:{},server=on,wait=off", a.display());
    let arg_b = format!("unix:{},nowait,server", b.display());
    let vmm = VmmProcess::start(&["-S", "-qmp", &arg_a, "-qmp", &arg_b]);
    for p in [&a, &b] {
        vmm.wait_for_path(p);
        let mut c = QmpClient::connect(p);
        c.negotiate();
        assert_eq!(c.ok("query-status", json!({}))["status"], "prelaunch");
    }
}

fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn tcp_monitor() {
    let port = free_tcp_port();
    let arg = format!("tcp:127.0.0.1:{port},server,nowait");
    let _vmm = VmmProcess::start(&["-S", "-qmp", &arg]);
    let deadline = Instant::now() + TIMEOUT;
    let stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("connect: {e}"),
        }
    };
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut w = stream;
    let mut line = String::new();
    reader.read_line(&mut line).expect("greeting");
    assert!(line.contains("\"QMP\""), "{line}");
    w.write_all(
        b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"query-status\",\"id\":\"t\"}\n",
    )
    .expect("write");
    line.clear();
    reader.read_line(&mut line).expect("response");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&line).expect("json"),
        json!({"return": {}})
    );
    line.clear();
    reader.read_line(&mut line).expect("response");
    let r: serde_json::Value = serde_json::from_str(&line).expect("json");
    assert_eq!(r["id"], "t");
    assert_eq!(r["return"]["status"], "prelaunch");
}

#[test]
fn stdio_monitor() {
    let mut child = Command::new(vmm_binary())
        .args(["-S", "-nodefaults", "-qmp", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    vmm_tests::kill_after(child.id(), TIMEOUT);
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("greeting");
    assert!(line.starts_with("{\"QMP\""), "{line}");
    stdin
        .write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"quit\"}\n")
        .expect("write");
    let mut rest = Vec::new();
    loop {
        line.clear();
        if out.read_line(&mut line).expect("read") == 0 {
            break;
        }
        rest.push(serde_json::from_str::<serde_json::Value>(&line).expect("json"));
    }
    assert_eq!(rest[0], json!({"return": {}}));
    assert_eq!(rest[1], json!({"return": {}}));
    assert_eq!(rest[2]["event"], "SHUTDOWN");
    assert_eq!(child.wait().expect("wait").code(), Some(0));
}

#[test]
fn mon_over_a_chardev_socket_with_pretty_output() {
    let dir = TempDir::new("mon");
    let p = dir.path().join("m.sock");
    let chardev = format!("socket,id=mon0,path={},server,nowait", p.display());
    let vmm = VmmProcess::start(&[
        "-S",
        "-chardev",
        &chardev,
        "-mon",
        "chardev=mon0,mode=control,pretty=on",
    ]);
    vmm.wait_for_path(&p);
    let mut s = UnixStream::connect(&p).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut reader = BufReader::new(s.try_clone().expect("clone"));
    // Pretty output spans lines; read until the greeting's last brace.
    let mut text = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read");
        text.push_str(&line);
        if line == "}\r\n" {
            break;
        }
    }
    assert!(text.starts_with("{\r\n    \"QMP\": {"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["QMP"]["version"]["qemu"]["minor"], 11);
    s.write_all(b"{\"execute\":\"qmp_capabilities\"}")
        .expect("write");
    let mut resp = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read");
        resp.push_str(&line);
        if line == "}\r\n" {
            break;
        }
    }
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&resp).expect("json"),
        json!({"return": {}})
    );
}

#[test]
fn server_without_nowait_waits_for_its_first_client() {
    let dir = TempDir::new("wait");
    let p = dir.path().join("w.sock");
    let mut child = Command::new(vmm_binary())
        .args(["-S", "-qmp"])
        .arg(format!("unix:{},server", p.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    vmm_tests::kill_after(child.id(), TIMEOUT);
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    err.read_line(&mut line).expect("stderr line");
    assert!(line.contains("waiting for connection"), "{line}");
    let mut c = QmpClient::connect(&p);
    c.negotiate();
    assert_eq!(c.ok("query-status", json!({}))["status"], "prelaunch");
    c.ok("quit", json!({}));
    assert_eq!(child.wait().expect("wait").code(), Some(0));
}
