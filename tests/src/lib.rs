//! Helpers shared by the end-to-end tests: start the `vmm` binary, talk
//! QMP to it over a real socket, read the oracle recording.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a test waits for any single answer before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The `vmm` binary of this build (`target/<profile>/vmm`).
pub fn vmm_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("VMM_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/vmm
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let bin = dir.join("vmm");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        bin.display()
    );
    bin
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("vmm-test-{}-{}-{}", tag, std::process::id(), n));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `vmm` process, killed when dropped.
pub struct VmmProcess {
    pub child: Child,
    pub dir: TempDir,
    /// The socket of the first `-qmp` monitor the helper added.
    pub qmp_path: PathBuf,
}

impl VmmProcess {
    /// Starts `vmm -qmp unix:DIR/qmp.sock,server,nowait ARGS...` and waits
    /// for the socket to appear.
    pub fn start(args: &[&str]) -> VmmProcess {
        let dir = TempDir::new("vmm");
        let qmp_path = dir.path().join("qmp.sock");
        let mut cmd = Command::new(vmm_binary());
        cmd.arg("-qmp")
            .arg(format!("unix:{},server,nowait", qmp_path.display()))
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn vmm");
        let p = VmmProcess {
            child,
            dir,
            qmp_path,
        };
        p.wait_for_path(&p.qmp_path);
        p
    }

    pub fn wait_for_path(&self, path: &Path) {
        let deadline = Instant::now() + TIMEOUT;
        while !path.exists() {
            assert!(
                Instant::now() < deadline,
                "{} never appeared",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Connects and reads the greeting (not negotiated).
    pub fn connect(&self) -> QmpClient {
        QmpClient::connect(&self.qmp_path)
    }

    /// Connects and negotiates capabilities.
    pub fn qmp(&self) -> QmpClient {
        let mut c = self.connect();
        c.negotiate();
        c
    }

    /// Starts `vmm -S -nodefaults EXTRA...` and connects a negotiated
    /// QMP client.
    pub fn start_paused(extra: &[&str]) -> (VmmProcess, QmpClient) {
        let mut args = vec!["-S", "-nodefaults"];
        args.extend_from_slice(extra);
        let vmm = VmmProcess::start(&args);
        let qmp = vmm.qmp();
        (vmm, qmp)
    }

    /// Waits for the process to end; fails the test after [`TIMEOUT`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait vmm") {
                return status;
            }
            assert!(Instant::now() < deadline, "vmm did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for VmmProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills process `pid` after `after` unless the test ended first, so that
/// a hung process fails the test instead of hanging the suite.
pub fn kill_after(pid: u32, after: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        // SAFETY: kill(2) has no memory-safety preconditions; a pid that
        // was already reaped at worst hits nothing.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
}

/// Sends `signal` to process `pid`.
pub fn send_signal(pid: u32, signal: i32) {
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, signal) };
}

/// Why a full guest boot cannot run here, if it cannot: a host without
/// hardware virtualization (or behind the paravirtual `kvm_pvm`
/// hypervisor) emulates guest ring 0, and stock kernels die there.
pub fn full_boot_unavailable() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or("");
    let hw = flags.split_whitespace().any(|f| f == "vmx" || f == "svm");
    if Path::new("/sys/module/kvm_pvm").exists() {
        Some(
            "KVM runs through the paravirtual kvm_pvm hypervisor (guest ring 0 is emulated)".into(),
        )
    } else if !hw {
        Some("the host CPU shows no vmx/svm (no hardware virtualization)".into())
    } else {
        None
    }
}

/// A file the test set-up (scripts/setup.sh) provides.
pub fn asset(relative: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(relative);
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh",
        p.display()
    );
    p
}

/// Waits until `path` holds a line for which `done` is true; returns the
/// whole text. Fails the test after `limit`.
pub fn wait_for_text(path: &Path, limit: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(&done) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out; {} holds:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The project's test guest (tests/guest), built by tests/guest/build.sh.
pub fn guest_elf() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/target/guest.elf");
    assert!(
        p.exists(),
        "{} is missing: run tests/guest/build.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// The command line that boots the test guest with `test=TEST`, COM1 into
/// `serial`, and the debug-exit device it reports through; then `extra`.
pub fn guest_args(test: &str, serial: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "-nodefaults",
        "-m",
        "256",
        "-kernel",
        &guest_elf().display().to_string(),
        "-append",
        &format!("test={test}"),
        "-serial",
        &format!("file:{}", serial.display()),
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Runs `vmm ARGS` to completion (for options that exit at once).
pub fn run_vmm(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(vmm_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vmm");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `vmm ARGS`, which must fail to start with `text` in what it
/// prints on stderr; returns all of stderr.
pub fn start_fails(args: &[&str], text: &str) -> String {
    let (status, _out, err) = run_vmm(args);
    assert!(!status.success(), "{args:?} started");
    assert!(err.contains(text), "{args:?}: {err}");
    err
}

/// A QMP client over a unix socket.
pub struct QmpClient {
    pub stream: UnixStream,
    reader: BufReader<UnixStream>,
    pub greeting: Value,
    /// Events read while waiting for responses.
    pub events: Vec<Value>,
}

impl QmpClient {
    pub fn connect(path: &Path) -> QmpClient {
        // The socket file appears at bind(), a moment before listen().
        let deadline = Instant::now() + TIMEOUT;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("connect to QMP socket {}: {e}", path.display()),
            }
        };
        QmpClient::over(stream)
    }

    pub fn over(stream: UnixStream) -> QmpClient {
        stream.set_read_timeout(Some(TIMEOUT)).expect("set timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone socket"));
        let mut c = QmpClient {
            stream,
            reader,
            greeting: Value::Null,
            events: Vec::new(),
        };
        c.greeting = c.read_message().expect("greeting");
        c
    }

    pub fn negotiate(&mut self) {
        let r = self.execute("qmp_capabilities", json!({}));
        assert_eq!(r, json!({"return": {}}), "negotiation");
    }

    /// Reads one line-terminated message; `None` at end of stream.
    pub fn read_message(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => {
                assert!(line.ends_with("\r\n"), "QMP lines end with CRLF: {line:?}");
                Some(
                    serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("bad JSON from vmm: {e}: {line}")),
                )
            }
            Err(e) => panic!("reading from vmm: {e}"),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to vmm");
    }

    /// Reads the next response, keeping events aside.
    pub fn read_response(&mut self) -> Value {
        loop {
            let m = self
                .read_message()
                .expect("connection closed before a response");
            if m.get("event").is_some() {
                self.events.push(m);
            } else {
                return m;
            }
        }
    }

    /// Sends a command and returns the whole response object.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Value {
        let req = if arguments.as_object().is_some_and(|a| a.is_empty()) {
            json!({"execute": command})
        } else {
            json!({"execute": command, "arguments": arguments})
        };
        self.send_raw(format!("{req}\n").as_bytes());
        self.read_response()
    }

    /// Sends a command that must succeed and returns its `return` value.
    pub fn ok(&mut self, command: &str, arguments: Value) -> Value {
        let r = self.execute(command, arguments);
        match r.get("return") {
            Some(v) => v.clone(),
            None => panic!("{command} failed: {r}"),
        }
    }

    /// Runs a human monitor command line through human-monitor-command
    /// and returns the text it printed.
    pub fn hmp(&mut self, line: &str) -> String {
        let r = self.ok("human-monitor-command", json!({ "command-line": line }));
        r.as_str()
            .unwrap_or_else(|| panic!("{line}: not a string: {r}"))
            .to_string()
    }

    /// Sends a command that must fail and returns (class, desc).
    pub fn err(&mut self, command: &str, arguments: Value) -> (String, String) {
        let r = self.execute(command, arguments);
        error_of(&r).unwrap_or_else(|| panic!("{command} did not fail: {r}"))
    }

    /// Waits for event `name`, returning it; earlier events stay recorded.
    pub fn wait_event(&mut self, name: &str) -> Value {
        if let Some(pos) = self.events.iter().position(|e| e["event"] == name) {
            return self.events.remove(pos);
        }
        loop {
            let m = self
                .read_message()
                .unwrap_or_else(|| panic!("closed while waiting for {name}"));
            if m["event"] == name {
                return m;
            }
            if m.get("event").is_some() {
                self.events.push(m);
            } else {
                panic!("unexpected response while waiting for {name}: {m}");
            }
        }
    }

    /// Names of the events received so far, in order.
    pub fn event_names(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| e["event"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// A GenericError answer with this text, as `QmpClient::err` gives it.
pub fn generic(desc: &str) -> (String, String) {
    ("GenericError".to_string(), desc.to_string())
}

impl QmpClient {
    /// name -> type of every property qom-list reports at `path`.
    pub fn qom_props(&mut self, path: &str) -> std::collections::BTreeMap<String, String> {
        self.ok("qom-list", serde_json::json!({ "path": path }))
            .as_array()
            .expect("qom-list answers a list")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_string(),
                    p["type"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// The names of the internal snapshots of query-block's entry `i`.
    pub fn snapshot_names(&mut self, i: usize) -> Vec<String> {
        let blk = self.ok("query-block", serde_json::json!({}));
        blk[i]["inserted"]["image"]["snapshots"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s["name"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// qom-get of `property` at `path`.
    pub fn qom_get(&mut self, path: &str, property: &str) -> Value {
        self.ok(
            "qom-get",
            serde_json::json!({ "path": path, "property": property }),
        )
    }
}

/// (class, desc) of an error response.
pub fn error_of(r: &Value) -> Option<(String, String)> {
    let e = r.get("error")?;
    Some((
        e["class"].as_str()?.to_string(),
        e["desc"].as_str()?.to_string(),
    ))
}

/// The recorded conversation with QEMU 2.11.0 (see shared/oracle).
pub struct Oracle {
    pub messages: Vec<Value>,
}

impl Oracle {
    pub fn load() -> Oracle {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/oracle/qemu-2.11.0-x86_64.replies");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let messages = text
            .split("\n\n")
            .filter(|b| !b.trim().is_empty())
            .map(|b| serde_json::from_str(b).expect("oracle JSON"))
            .collect();
        Oracle { messages }
    }

    /// The reply to the first request that executes `command` (KVM probe).
    pub fn reply<'a>(&'a self, command: &'a str) -> &'a Value {
        self.replies(command)
            .next()
            .unwrap_or_else(|| panic!("no {command} in the oracle"))
    }

    /// Every (request, reply) pair for `command`.
    pub fn exchanges<'a>(
        &'a self,
        command: &'a str,
    ) -> impl Iterator<Item = (&'a Value, &'a Value)> + 'a {
        self.messages
            .windows(2)
            .filter(move |w| w[0]["execute"] == command)
            .map(|w| (&w[0], &w[1]))
    }

    pub fn replies<'a>(&'a self, command: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.exchanges(command).map(|(_, r)| r)
    }
}
