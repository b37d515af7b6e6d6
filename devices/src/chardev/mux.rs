//! The `mux` chardev: one backend (the `-base` chardev under it) shared
//! by up to four frontends, typically a serial port and the human
//! monitor, with QEMU's Ctrl-A escapes on input.
//!
//! Every frontend's output goes to the backend; input goes to the
//! frontend that has the focus. A frontend that attaches takes the
//! focus (the one losing it is told `MuxOut`, the new one `MuxIn`);
//! `C-a c` moves it to the next frontend. Until [`Mux::realize`] (the
//! end of machine creation) the frontends are not told the backend is
//! open, so that only the one with the focus at the end shows its
//! banner or prompt; from then on, opening and closing of the backend
//! (a socket client coming and going) reaches every frontend.
//!
//! Escapes, after `C-a`: `h` or `?` help, `x` ends the process, `s`
//! commits disks (through the hook vmm installs), `b` a break to the
//! frontend with the focus, `c` switch, `t` timestamps on output lines,
//! `C-a` itself.

use super::{Chardev, Event, Frontend, IN_CAP};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Instant;

/// QEMU's limit on the frontends of one mux.
pub const MAX_MUX: usize = 4;
/// The escape character (Ctrl-A).
const ESCAPE: u8 = 0x01;

/// What `C-a s` runs: commit the disks' overlays.
static COMMIT_HOOK: OnceLock<Box<dyn Fn() + Send + Sync>> = OnceLock::new();

/// Installs what `C-a s` does (once per process).
pub fn set_commit_hook(f: Box<dyn Fn() + Send + Sync>) {
    let _ = COMMIT_HOOK.set(f);
}

#[derive(Default)]
struct State {
    fes: [Option<Arc<dyn Frontend>>; MAX_MUX],
    /// Tags handed out so far (a detached frontend keeps its tag).
    count: usize,
    focus: Option<usize>,
    got_escape: bool,
    timestamps: bool,
    /// When the first stamped line began.
    ts_start: Option<Instant>,
    linestart: bool,
    /// Input waiting for each frontend.
    bufs: [VecDeque<u8>; MAX_MUX],
    realized: bool,
}

/// What to do once the state lock is released, in order.
enum Action {
    Input(usize),
    Event(usize, Event),
    Break(usize),
    Help,
    Exit,
    Commit,
}

pub(crate) struct Mux {
    label: String,
    base: Chardev,
    st: Mutex<State>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The mux as the frontend of its backend.
struct BaseFrontend(Weak<Mux>);

impl Frontend for BaseFrontend {
    fn input_ready(&self) {
        if let Some(m) = self.0.upgrade() {
            m.pump();
        }
    }

    fn output_ready(&self) {
        if let Some(m) = self.0.upgrade() {
            for fe in m.frontends() {
                fe.output_ready();
            }
        }
    }

    fn send_break(&self) {
        if let Some(m) = self.0.upgrade() {
            m.broadcast_break();
        }
    }

    fn event(&self, ev: Event) {
        if let Some(m) = self.0.upgrade() {
            m.broadcast(ev);
        }
    }
}

impl Mux {
    /// A mux over `base`, which it attaches to as its one frontend.
    pub fn new(label: &str, base: Chardev) -> Result<Arc<Mux>, String> {
        let m = Arc::new(Mux {
            label: label.to_string(),
            base: base.clone(),
            st: Mutex::new(State::default()),
        });
        base.attach(Arc::new(BaseFrontend(Arc::downgrade(&m))), false)?;
        Ok(m)
    }

    fn frontends(&self) -> Vec<Arc<dyn Frontend>> {
        lock(&self.st).fes.iter().flatten().cloned().collect()
    }

    pub fn has_frontends(&self) -> bool {
        lock(&self.st).fes.iter().any(Option::is_some)
    }

    /// Adds a frontend; it takes the focus (and, once the mux is
    /// realized, hears that the backend is open). Returns its tag.
    pub fn attach(&self, fe: Arc<dyn Frontend>) -> Result<usize, String> {
        let mut st = lock(&self.st);
        if st.count >= MAX_MUX {
            return Err(format!("Device '{}' is in use", self.label));
        }
        let tag = st.count;
        st.count += 1;
        st.fes[tag] = Some(fe);
        let mut actions = Vec::new();
        set_focus(&mut st, tag, &mut actions);
        if st.realized {
            actions.push(Action::Event(tag, Event::Opened));
        }
        drop(st);
        self.run(actions);
        Ok(tag)
    }

    pub fn detach(&self, tag: usize) {
        let mut st = lock(&self.st);
        if let Some(slot) = st.fes.get_mut(tag) {
            *slot = None;
        }
        if let Some(b) = st.bufs.get_mut(tag) {
            b.clear();
        }
    }

    /// The end of machine creation: every frontend hears that the
    /// backend is open, and later ones hear it when they attach.
    pub fn realize(&self) {
        let mut st = lock(&self.st);
        if st.realized {
            return;
        }
        st.realized = true;
        let tags: Vec<usize> = (0..MAX_MUX).filter(|t| st.fes[*t].is_some()).collect();
        drop(st);
        self.run(
            tags.into_iter()
                .map(|t| Action::Event(t, Event::Opened))
                .collect(),
        );
    }

    fn broadcast(&self, ev: Event) {
        let st = lock(&self.st);
        if !st.realized {
            return;
        }
        let tags: Vec<usize> = (0..MAX_MUX).filter(|t| st.fes[*t].is_some()).collect();
        drop(st);
        self.run(tags.into_iter().map(|t| Action::Event(t, ev)).collect());
    }

    fn broadcast_break(&self) {
        for fe in self.frontends() {
            fe.send_break();
        }
    }

    /// A break to the frontend with the focus (`chardev-send-break` on
    /// the mux).
    pub fn send_break(&self) {
        let focus = lock(&self.st).focus;
        if let Some(t) = focus {
            self.run(vec![Action::Break(t)]);
        }
    }

    /// Output of any frontend: to the backend, each line stamped with
    /// the time since stamping began while timestamps are on.
    pub fn write(&self, data: &[u8]) -> usize {
        let mut st = lock(&self.st);
        if !st.timestamps {
            drop(st);
            return self.base.write(data);
        }
        let mut done = 0;
        for &b in data {
            if st.linestart {
                let now = Instant::now();
                let start = *st.ts_start.get_or_insert(now);
                let ms = now.duration_since(start).as_millis();
                let secs = ms / 1000;
                let stamp = format!(
                    "[{:02}:{:02}:{:02}.{:03}] ",
                    secs / 3600,
                    (secs / 60) % 60,
                    secs % 60,
                    ms % 1000
                );
                self.base.write(stamp.as_bytes());
                st.linestart = false;
            }
            if self.base.write(&[b]) == 0 {
                break;
            }
            done += 1;
            if b == b'\n' {
                st.linestart = true;
            }
        }
        done
    }

    /// Input for the frontend with `tag`.
    pub fn read_input(&self, tag: usize, max: usize) -> Vec<u8> {
        let mut st = lock(&self.st);
        let Some(buf) = st.bufs.get_mut(tag) else {
            return Vec::new();
        };
        let was_full = buf.len() >= IN_CAP;
        let n = max.min(buf.len());
        let v: Vec<u8> = buf.drain(..n).collect();
        drop(st);
        if was_full && n > 0 {
            // The backend held input back while this buffer was full.
            self.base.renotify_input();
        }
        v
    }

    pub fn has_input(&self, tag: usize) -> bool {
        lock(&self.st).bufs.get(tag).is_some_and(|b| !b.is_empty())
    }

    /// Takes the backend's input while the frontend with the focus has
    /// room, handling escapes.
    fn pump(&self) {
        loop {
            let mut st = lock(&self.st);
            let room = match st.focus {
                Some(f) => IN_CAP.saturating_sub(st.bufs[f].len()),
                None => IN_CAP,
            };
            if room == 0 {
                return;
            }
            let data = self.base.read_input(room);
            if data.is_empty() {
                return;
            }
            let mut actions = Vec::new();
            for b in data {
                proc_byte(&mut st, b, &mut actions);
            }
            drop(st);
            self.run(actions);
        }
    }

    fn run(&self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Input(t) => {
                    if let Some(fe) = self.fe(t) {
                        fe.input_ready();
                    }
                }
                Action::Event(t, ev) => {
                    if let Some(fe) = self.fe(t) {
                        fe.event(ev);
                    }
                }
                Action::Break(t) => {
                    if let Some(fe) = self.fe(t) {
                        fe.send_break();
                    }
                }
                Action::Help => self.write_all(&help_text()),
                Action::Exit => {
                    self.write_all(b"QEMU: Terminated\n\r");
                    // As QEMU: the process ends here, with status 0;
                    // queued chardev output is flushed at exit.
                    std::process::exit(0);
                }
                Action::Commit => {
                    if let Some(f) = COMMIT_HOOK.get() {
                        f();
                    }
                }
            }
        }
    }

    fn fe(&self, tag: usize) -> Option<Arc<dyn Frontend>> {
        lock(&self.st).fes.get(tag).cloned().flatten()
    }

    /// Writes text of the mux itself; what the backend cannot take now
    /// is dropped (it is queued up to the backend's limit).
    fn write_all(&self, text: &[u8]) {
        let mut off = 0;
        while off < text.len() {
            let n = self.write(&text[off..]);
            if n == 0 {
                break;
            }
            off += n;
        }
    }
}

fn set_focus(st: &mut State, tag: usize, actions: &mut Vec<Action>) {
    if let Some(old) = st.focus {
        actions.push(Action::Event(old, Event::MuxOut));
    }
    st.focus = Some(tag);
    actions.push(Action::Event(tag, Event::MuxIn));
    if !st.bufs[tag].is_empty() {
        actions.push(Action::Input(tag));
    }
}

fn proc_byte(st: &mut State, b: u8, actions: &mut Vec<Action>) {
    if st.got_escape {
        st.got_escape = false;
        if b != ESCAPE {
            match b {
                b'?' | b'h' => actions.push(Action::Help),
                b'x' => actions.push(Action::Exit),
                b's' => actions.push(Action::Commit),
                b'b' => {
                    if let Some(f) = st.focus {
                        actions.push(Action::Break(f));
                    }
                }
                b'c' if st.count > 0 => {
                    let next = st.focus.map_or(0, |f| (f + 1) % st.count);
                    set_focus(st, next, actions);
                }
                b't' => {
                    st.timestamps = !st.timestamps;
                    st.ts_start = None;
                    st.linestart = false;
                }
                _ => {}
            }
            return;
        }
    } else if b == ESCAPE {
        st.got_escape = true;
        return;
    }
    let Some(f) = st.focus else {
        return;
    };
    if st.fes[f].is_none() {
        return;
    }
    st.bufs[f].push_back(b);
    if !matches!(actions.last(), Some(Action::Input(t)) if *t == f) {
        actions.push(Action::Input(f));
    }
}

/// The escape help, lines ended `\n\r` as a raw terminal needs.
fn help_text() -> Vec<u8> {
    const LINES: &[(&str, &str)] = &[
        ("h", "   this help"),
        ("x", "   end the emulator"),
        (
            "s",
            "   commit disk changes to their backing files (-snapshot)",
        ),
        ("t", "   timestamps on console lines, on or off"),
        ("b", "   send a break (magic SysRq)"),
        ("c", "   next frontend: console or monitor"),
        ("C-a", " send C-a itself"),
    ];
    let mut s = String::from("\n\r");
    for (key, what) in LINES {
        s.push_str(&format!("C-a {key} {what}\n\r"));
    }
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_switch_focus_and_pass_the_escape_character() {
        let mut st = State {
            count: 2,
            focus: Some(1),
            ..State::default()
        };
        struct Nop;
        impl Frontend for Nop {
            fn input_ready(&self) {}
            fn output_ready(&self) {}
            fn send_break(&self) {}
        }
        st.fes[0] = Some(Arc::new(Nop));
        st.fes[1] = Some(Arc::new(Nop));
        let mut a = Vec::new();
        for b in [b'x', ESCAPE, b'c', b'y', ESCAPE, ESCAPE, ESCAPE, b'c', b'z'] {
            proc_byte(&mut st, b, &mut a);
        }
        assert_eq!(st.bufs[1].iter().copied().collect::<Vec<u8>>(), b"xz");
        assert_eq!(st.bufs[0].iter().copied().collect::<Vec<u8>>(), b"y\x01");
        assert_eq!(st.focus, Some(1));
        let kinds: Vec<String> = a
            .iter()
            .map(|a| match a {
                Action::Input(t) => format!("in{t}"),
                Action::Event(t, e) => format!("{e:?}{t}"),
                _ => "other".into(),
            })
            .collect();
        assert_eq!(
            kinds,
            ["in1", "MuxOut1", "MuxIn0", "in0", "MuxOut0", "MuxIn1", "in1"]
        );
    }
}
