//! One QMP monitor's protocol state: greeting, capability negotiation,
//! request checks, dispatch, responses and events, independent of the
//! transport that carries the bytes.

use crate::error::Error;
use crate::json::{to_qmp_string, to_qmp_string_pretty, JsonError, JsonStreamer};
use crate::qapi::{Event, COMMAND_NAMES, UNGENERATED_COMMANDS};
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

/// Commands a QEMU 2.11 x86-64 build without SPICE leaves unregistered:
/// absent from `query-commands` and answered "has not been found", though
/// `query-qmp-schema` still lists them.
pub const UNREGISTERED_COMMANDS: &[&str] = &[
    "dump-skeys",
    "query-gic-capabilities",
    "query-cpu-model-baseline",
    "query-cpu-model-comparison",
    "query-spice",
];

pub fn is_registered(name: &str) -> bool {
    COMMAND_NAMES.contains(&name) && !UNREGISTERED_COMMANDS.contains(&name)
}

/// Registered commands in the order QEMU 2.11's `query-commands` lists
/// them: it registers the generated commands by name, then the
/// hand-written ones (`query-qmp-schema`, `device_add`, `netdev_add`), and
/// answers newest first.
pub fn registered_commands() -> Vec<&'static str> {
    let mut generated: Vec<&'static str> = COMMAND_NAMES
        .iter()
        .copied()
        .filter(|c| is_registered(c) && !UNGENERATED_COMMANDS.contains(c))
        .collect();
    generated.sort_unstable();
    for c in ["query-qmp-schema", "device_add", "netdev_add"] {
        if is_registered(c) {
            generated.push(c);
        }
    }
    generated.reverse();
    generated
}

/// Runs a command: `None` when no such command exists.
pub type Executor<'a> = dyn FnMut(&str, &Map<String, Value>) -> Option<Result<Value, Error>> + 'a;

/// The QMP side of one monitor connection.
pub struct Monitor {
    streamer: JsonStreamer,
    /// Parsed requests (or parse errors) not yet answered.
    pending: VecDeque<Result<Value, JsonError>>,
    negotiated: bool,
    pretty: bool,
}

/// The `{"QMP": ...}` greeting.
pub fn greeting(package: &str) -> Value {
    // Built in QEMU's insertion order, which its output order derives from.
    json!({"QMP": {"version": {"qemu": {"major": 2, "minor": 11, "micro": 50}, "package": package}, "capabilities": []}})
}

/// The event object with QEMU's timestamp.
pub fn event_message(event: &Event, when: SystemTime) -> Value {
    let since = when.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut m = Map::new();
    m.insert("event".into(), Value::String(event.name().to_string()));
    m.insert(
        "timestamp".into(),
        json!({"seconds": since.as_secs(), "microseconds": since.subsec_micros()}),
    );
    if let Some(data) = event.data() {
        m.insert("data".into(), data);
    }
    Value::Object(m)
}

/// Checks the request object as QEMU 2.11's dispatcher does, and returns
/// the command name and its arguments.
/// A checked request: the command name and its `arguments`, if given.
type Request<'a> = (&'a str, Option<&'a Map<String, Value>>);

fn check_request(request: &Value) -> Result<Request<'_>, Error> {
    let Value::Object(dict) = request else {
        return Err(Error::generic(
            "Expected 'request is not a dictionary' in QMP input",
        ));
    };
    let mut execute = None;
    let mut arguments = None;
    for (key, value) in dict {
        match key.as_str() {
            "execute" => match value {
                Value::String(s) => execute = Some(s.as_str()),
                _ => {
                    return Err(Error::generic(
                        "QMP input object member 'execute' expects 'string'",
                    ))
                }
            },
            "arguments" => match value {
                Value::Object(a) => arguments = Some(a),
                _ => {
                    return Err(Error::generic(
                        "QMP input object member 'arguments' expects 'object'",
                    ))
                }
            },
            "id" => {}
            other => {
                return Err(Error::generic(format!(
                    "QMP input object member '{other}' is unexpected"
                )))
            }
        }
    }
    match execute {
        Some(e) => Ok((e, arguments)),
        None => Err(Error::generic("Expected 'execute' in QMP input")),
    }
}

impl Monitor {
    pub fn new(pretty: bool) -> Monitor {
        Monitor {
            streamer: JsonStreamer::new(),
            pending: VecDeque::new(),
            negotiated: false,
            pretty,
        }
    }

    /// Whether `qmp_capabilities` has been accepted: only then does the
    /// monitor run commands and receive events.
    pub fn negotiated(&self) -> bool {
        self.negotiated
    }

    /// Appends one message, as QEMU's monitor writes it (`\r\n` ends it).
    pub fn write_message(&self, value: &Value, out: &mut Vec<u8>) {
        let text = if self.pretty {
            to_qmp_string_pretty(value)
        } else {
            to_qmp_string(value)
        };
        out.extend_from_slice(text.replace('\n', "\r\n").as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// Takes bytes from the client; complete requests wait for
    /// [`Monitor::next_response`].
    pub fn receive(&mut self, bytes: &[u8]) {
        self.pending.extend(self.streamer.feed(bytes));
    }

    /// Runs the oldest waiting request through `exec` and returns its
    /// response; `None` when nothing waits.
    pub fn next_response(&mut self, exec: &mut Executor<'_>) -> Option<Value> {
        let item = self.pending.pop_front()?;
        Some(match item {
            Ok(request) => self.handle_request(request, exec),
            Err(e) => {
                let mut m = Map::new();
                m.insert("error".into(), Error::generic(e.to_string()).to_qobject());
                Value::Object(m)
            }
        })
    }

    fn handle_request(&mut self, request: Value, exec: &mut Executor<'_>) -> Value {
        let id = match &request {
            Value::Object(d) => d.get("id").cloned(),
            _ => None,
        };
        let result = self.run(&request, exec);
        let mut m = Map::new();
        match result {
            Ok(v) => m.insert("return".into(), v),
            Err(e) => m.insert("error".into(), e.to_qobject()),
        };
        if let Some(id) = id {
            m.insert("id".into(), id);
        }
        Value::Object(m)
    }

    fn run(&mut self, request: &Value, exec: &mut Executor<'_>) -> Result<Value, Error> {
        let (name, args) = check_request(request)?;
        let empty = Map::new();
        let args = args.unwrap_or(&empty);
        if !self.negotiated {
            if name != "qmp_capabilities" {
                return Err(Error::command_not_found(
                    "Expecting capabilities negotiation with 'qmp_capabilities'",
                ));
            }
            let r = exec(name, args).unwrap_or_else(|| Err(not_found(name)));
            if r.is_ok() {
                self.negotiated = true;
            }
            return r;
        }
        if name == "qmp_capabilities" {
            return Err(Error::command_not_found(
                "Capabilities negotiation is already complete, command ignored",
            ));
        }
        if !is_registered(name) {
            return Err(not_found(name));
        }
        exec(name, args).unwrap_or_else(|| Err(not_found(name)))
    }
}

fn not_found(name: &str) -> Error {
    Error::command_not_found(format!("The command {name} has not been found"))
}
