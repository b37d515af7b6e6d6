//! A human monitor on a terminal or socket: QEMU's banner, the `(qemu) `
//! prompt, and line input with editing (backspace, delete, cursor keys,
//! Ctrl-A/E/U) and history (up and down), redrawn the way QEMU's readline
//! redraws it. Output ends lines with `\r\n`.

use super::{run_line, HmpState};
use crate::commands::Vmm;

const BANNER: &str = "QEMU 2.11.50 monitor - type 'help' for more information\r\n";
const PROMPT: &str = "(qemu) ";
/// QEMU keeps this many command lines.
const HISTORY_MAX: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Esc {
    Normal,
    /// After ESC.
    Escape,
    /// After ESC [ (or ESC O), with the digits so far.
    Csi(u32),
}

/// One readline monitor connection.
pub struct Session {
    pub state: HmpState,
    line: Vec<u8>,
    cursor: usize,
    /// What the terminal shows now (for redrawing).
    shown: Vec<u8>,
    shown_cursor: usize,
    esc: Esc,
    /// Position while walking the history; `None` on a fresh line.
    hist_pos: Option<usize>,
    /// The last byte was a CR (a following LF ends no second line).
    after_cr: bool,
    /// Set by `quit`: input is ignored from then on.
    pub closed: bool,
    /// On a mux: another frontend has the focus; output waits.
    mux_out: bool,
    /// The backend has been opened once (the banner was printed).
    reset_seen: bool,
    /// Prompts owed: the prompt comes back when this returns to zero.
    suspend_cnt: u32,
}

impl Session {
    /// A new session; its banner and first prompt go to `out`.
    pub fn new(out: &mut Vec<u8>) -> Session {
        out.extend_from_slice(BANNER.as_bytes());
        out.extend_from_slice(PROMPT.as_bytes());
        let mut s = Session::on_chardev();
        s.reset_seen = true;
        s
    }

    /// A session on a chardev frontend: it prints nothing until the
    /// backend is open ([`Session::opened`]).
    pub fn on_chardev() -> Session {
        Session {
            state: HmpState {
                history: Some(Vec::new()),
                ..HmpState::default()
            },
            line: Vec::new(),
            cursor: 0,
            shown: Vec::new(),
            shown_cursor: 0,
            esc: Esc::Normal,
            hist_pos: None,
            after_cr: false,
            closed: false,
            mux_out: false,
            reset_seen: false,
            suspend_cnt: 0,
        }
    }

    /// Output waits while a mux gives another frontend the focus.
    pub fn held(&self) -> bool {
        self.mux_out
    }

    /// The line being typed is dropped (QEMU's `readline_restart`).
    fn restart(&mut self) {
        self.line.clear();
        self.cursor = 0;
        self.shown.clear();
        self.shown_cursor = 0;
        self.esc = Esc::Normal;
        self.hist_pos = None;
    }

    fn show_prompt(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(PROMPT.as_bytes());
        self.shown.clear();
        self.shown_cursor = 0;
        self.esc = Esc::Normal;
    }

    /// The backend opened: the banner, and a fresh prompt unless another
    /// frontend of the mux has the focus (then both wait for it).
    pub fn opened(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(BANNER.as_bytes());
        if !self.mux_out && !self.closed {
            self.restart();
            self.show_prompt(out);
        }
        self.reset_seen = true;
    }

    /// The mux gave this monitor the focus: a fresh prompt once every
    /// earlier focus change is undone; what waited goes out.
    pub fn focus_in(&mut self, out: &mut Vec<u8>) {
        self.mux_out = false;
        if self.reset_seen {
            self.restart();
            self.suspend_cnt = self.suspend_cnt.saturating_sub(1);
            if self.suspend_cnt == 0 && !self.closed {
                self.show_prompt(out);
            }
        } else {
            self.suspend_cnt = 0;
        }
    }

    /// The mux took the focus away: the line ends (the caller writes it
    /// out before calling [`Session::held`] again) and the monitor waits.
    pub fn focus_out(&mut self, out: &mut Vec<u8>) {
        if self.reset_seen && self.suspend_cnt == 0 {
            out.extend_from_slice(b"\r\n");
        }
        self.suspend_cnt += 1;
    }

    /// After [`Session::focus_out`]'s output is written.
    pub fn hold(&mut self) {
        self.mux_out = true;
    }

    /// Takes bytes from the terminal: echoes and edits, and runs each
    /// complete line.
    pub fn receive(&mut self, bytes: &[u8], vmm: &mut Vmm, out: &mut Vec<u8>) {
        for &b in bytes {
            if self.closed {
                return;
            }
            let cr = self.after_cr;
            self.after_cr = b == b'\r';
            if b == b'\n' && cr {
                continue;
            }
            if let Some(line) = self.byte(b) {
                out.extend_from_slice(b"\r\n");
                self.shown.clear();
                self.shown_cursor = 0;
                let text = run_line(vmm, &mut self.state, &line);
                // After `quit` the monitor takes no more input, as QEMU
                // suspends it until the process ends.
                let word = line.split_whitespace().next().unwrap_or("");
                self.closed = word == "q" || word == "quit";
                out.extend_from_slice(text.replace('\n', "\r\n").as_bytes());
                if !self.closed {
                    out.extend_from_slice(PROMPT.as_bytes());
                }
            } else {
                self.redraw(out);
            }
        }
    }

    fn set_line(&mut self, text: &[u8]) {
        self.line = text.to_vec();
        self.cursor = self.line.len();
    }

    /// Handles one byte; a completed line comes back.
    fn byte(&mut self, b: u8) -> Option<String> {
        match self.esc {
            Esc::Escape => {
                self.esc = if b == b'[' || b == b'O' {
                    Esc::Csi(0)
                } else {
                    Esc::Normal
                };
                return None;
            }
            Esc::Csi(n) => {
                if b.is_ascii_digit() {
                    self.esc = Esc::Csi(n.saturating_mul(10).saturating_add(u32::from(b - b'0')));
                    return None;
                }
                self.esc = Esc::Normal;
                match (b, n) {
                    (b'A', _) => self.history_step(true),
                    (b'B', _) => self.history_step(false),
                    (b'C', _) => self.cursor = (self.cursor + 1).min(self.line.len()),
                    (b'D', _) => self.cursor = self.cursor.saturating_sub(1),
                    (b'H', _) | (b'~', 1) => self.cursor = 0,
                    (b'F', _) | (b'~', 4) => self.cursor = self.line.len(),
                    (b'~', 3) if self.cursor < self.line.len() => {
                        self.line.remove(self.cursor);
                    }
                    _ => {}
                }
                return None;
            }
            Esc::Normal => {}
        }
        match b {
            b'\r' | b'\n' => {
                let line = String::from_utf8_lossy(&self.line).into_owned();
                self.add_history(&line);
                self.line.clear();
                self.cursor = 0;
                self.hist_pos = None;
                return Some(line);
            }
            27 => self.esc = Esc::Escape,
            8 | 127 if self.cursor > 0 => {
                self.cursor -= 1;
                self.line.remove(self.cursor);
            }
            1 => self.cursor = 0,
            5 => self.cursor = self.line.len(),
            21 => {
                self.line.drain(..self.cursor);
                self.cursor = 0;
            }
            b if b >= 32 => {
                self.line.insert(self.cursor, b);
                self.cursor += 1;
            }
            _ => {}
        }
        None
    }

    fn add_history(&mut self, line: &str) {
        let Some(h) = self.state.history.as_mut() else {
            return;
        };
        if line.is_empty() {
            return;
        }
        // A line typed again moves to the end.
        if let Some(i) = h.iter().position(|l| l == line) {
            h.remove(i);
        }
        if h.len() == HISTORY_MAX {
            h.remove(0);
        }
        h.push(line.to_string());
    }

    fn history_step(&mut self, back: bool) {
        let Some(h) = self.state.history.as_ref() else {
            return;
        };
        let pos = match (self.hist_pos, back) {
            (None, true) if !h.is_empty() => Some(h.len() - 1),
            (None, _) => return,
            (Some(0), true) => Some(0),
            (Some(p), true) => Some(p - 1),
            (Some(p), false) if p + 1 < h.len() => Some(p + 1),
            (Some(_), false) => None,
        };
        let text = pos.and_then(|p| h.get(p)).cloned().unwrap_or_default();
        self.hist_pos = pos;
        self.set_line(text.as_bytes());
    }

    /// Brings the terminal up to date: back to the line's start, the
    /// line, clear to the end, then the cursor where it belongs.
    fn redraw(&mut self, out: &mut Vec<u8>) {
        if self.line != self.shown {
            for _ in 0..self.shown_cursor {
                out.extend_from_slice(b"\x1b[D");
            }
            out.extend_from_slice(&self.line);
            out.extend_from_slice(b"\x1b[K");
            self.shown = self.line.clone();
            self.shown_cursor = self.line.len();
        }
        if self.cursor > self.shown_cursor {
            for _ in self.shown_cursor..self.cursor {
                out.extend_from_slice(b"\x1b[C");
            }
        } else {
            for _ in self.cursor..self.shown_cursor {
                out.extend_from_slice(b"\x1b[D");
            }
        }
        self.shown_cursor = self.cursor;
    }
}
