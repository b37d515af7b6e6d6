//! The i8042 keyboard controller, as far as firmware and kernels probe it,
//! with its CPU reset line (command 0xfe, or output port bit 0 cleared),
//! and a keyboard whose keys the monitor presses (send-key): scancode set
//! 1 while the controller translates (command byte bit 6, the default),
//! set 2 otherwise, as QEMU's PS/2 keyboard and i8042 together send.

use crate::bus::BusDevice;
use crate::platform::{InterruptLine, PlatformRequest, RequestSink};
use std::collections::VecDeque;
use std::sync::Arc;

const STATUS_OBF: u8 = 0x01;
const STATUS_SYS: u8 = 0x04;
const STATUS_CMD: u8 = 0x08;
const CCB_KBD_INT: u8 = 0x01;
const CCB_TRANSLATE: u8 = 0x40;

/// A key as the keyboard sends it: its codes in scancode sets 1 and 2
/// (0xe0xx: with the 0xe0 prefix). Pause and Print Screen send their
/// own sequences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    set1: u16,
    set2: u16,
    sequence: Sequence,
}

/// The keys whose bytes are not their code's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sequence {
    Plain,
    Pause,
    Print,
}

impl Key {
    /// The first key of the map `matches` picks, plain.
    fn find(matches: impl Fn(&(&str, u16, u16)) -> bool) -> Option<Key> {
        super::keymap::QCODE_SCANCODES
            .iter()
            .find(|e| matches(e))
            .map(|&(_, set1, set2)| Key {
                set1,
                set2,
                sequence: Sequence::Plain,
            })
    }

    /// The key a QKeyCode names (`a`, `ctrl_r`, `f1`...).
    pub fn from_qcode(name: &str) -> Option<Key> {
        let key = Key::find(|(n, _, _)| *n == name)?;
        let sequence = match name {
            "pause" => Sequence::Pause,
            "print" => Sequence::Print,
            _ => Sequence::Plain,
        };
        Some(Key { sequence, ..key })
    }

    /// The key a number names, as QEMU's send-key takes it: a set 1 code
    /// with bit 7 for the 0xe0 prefix. None for numbers no key has.
    pub fn from_number(number: i64) -> Option<Key> {
        let n = u16::try_from(number).ok().filter(|n| *n < 0x100)?;
        let set1 = if n & 0x80 != 0 {
            0xe000 | (n & 0x7f)
        } else {
            n
        };
        Key::find(|(_, s1, _)| *s1 == set1)
    }

    /// The bytes a press or a release sends in set 1 or set 2.
    fn bytes(self, down: bool, set1: bool) -> Vec<u8> {
        // QEMU's sequences for the two keys with their own.
        if self.sequence == Sequence::Pause {
            return match (down, set1) {
                (false, _) => Vec::new(),
                (true, true) => vec![0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5],
                (true, false) => vec![0xe1, 0x14, 0x77, 0xe1, 0xf0, 0x14, 0xf0, 0x77],
            };
        }
        if self.sequence == Sequence::Print {
            return match (down, set1) {
                (true, true) => vec![0xe0, 0x2a, 0xe0, 0x37],
                (false, true) => vec![0xe0, 0xb7, 0xe0, 0xaa],
                (true, false) => vec![0xe0, 0x12, 0xe0, 0x7c],
                (false, false) => vec![0xe0, 0xf0, 0x7c, 0xe0, 0xf0, 0x12],
            };
        }
        let code = if set1 { self.set1 } else { self.set2 };
        let mut out = Vec::with_capacity(3);
        if code >> 8 == 0xe0 {
            out.push(0xe0);
        }
        let low = code as u8;
        match (down, set1) {
            (true, _) => out.push(low),
            (false, true) => out.push(low | 0x80),
            (false, false) => out.extend_from_slice(&[0xf0, low]),
        }
        out
    }
}

pub struct I8042 {
    status: u8,
    ccb: u8,
    output: VecDeque<u8>,
    /// The command whose data byte comes next through port 0x60.
    pending: Option<u8>,
    sink: Arc<dyn RequestSink>,
    kbd_irq: Arc<dyn InterruptLine>,
}

impl I8042 {
    pub fn new(sink: Arc<dyn RequestSink>, kbd_irq: Arc<dyn InterruptLine>) -> I8042 {
        I8042 {
            status: STATUS_SYS,
            ccb: 0x45,
            output: VecDeque::new(),
            pending: None,
            sink,
            kbd_irq,
        }
    }

    fn push(&mut self, byte: u8) {
        if self.output.len() < 16 {
            self.output.push_back(byte);
        }
        if self.ccb & CCB_KBD_INT != 0 {
            self.kbd_irq.pulse();
        }
    }

    /// The keyboard sends `key` pressed or released.
    pub fn key_event(&mut self, key: Key, down: bool) {
        for b in key.bytes(down, self.ccb & CCB_TRANSLATE != 0) {
            self.push(b);
        }
    }

    fn command(&mut self, cmd: u8) {
        self.status |= STATUS_CMD;
        match cmd {
            0x20 => self.push(self.ccb),
            0x60 | 0xd1 | 0xd2 | 0xd3 | 0xd4 => self.pending = Some(cmd),
            0xaa => self.push(0x55),        // self-test passed
            0xa9 | 0xab => self.push(0x00), // port tests passed
            0xad => self.ccb |= 0x10,
            0xae => self.ccb &= !0x10,
            0xa7 => self.ccb |= 0x20,
            0xa8 => self.ccb &= !0x20,
            0xd0 => self.push(0x01 | 0x02),
            // Pulse output port bits; bit 0 is the CPU reset line.
            0xf0..=0xff if cmd & 0x01 == 0 => self.sink.request(PlatformRequest::Reset),
            _ => {}
        }
    }

    fn data(&mut self, byte: u8) {
        self.status &= !STATUS_CMD;
        match self.pending.take() {
            Some(0x60) => self.ccb = byte,
            Some(0xd1) if byte & 0x01 == 0 => self.sink.request(PlatformRequest::Reset),
            Some(0xd1) => {}
            Some(0xd2) => self.push(byte),
            Some(_) => {}
            // Keyboard commands: acknowledge; reset answers self-test ok.
            None => match byte {
                0xff => {
                    self.push(0xfa);
                    self.push(0xaa);
                }
                0xf2 => {
                    self.push(0xfa);
                    self.push(0xab);
                    self.push(0x83);
                }
                _ => self.push(0xfa),
            },
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            0 => self.output.pop_front().unwrap_or(0),
            4 => {
                let obf = if self.output.is_empty() {
                    0
                } else {
                    STATUS_OBF
                };
                self.status | obf
            }
            _ => 0xff,
        };
        data.fill(v);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            0 => self.data(v),
            4 => self.command(v),
            _ => {}
        }
    }
}

impl crate::state::DeviceState for I8042 {
    fn state_name(&self) -> &'static str {
        "pckbd"
    }

    fn save_state(&self) -> Result<Vec<u8>, crate::state::StateError> {
        let out: Vec<u8> = self.output.iter().copied().collect();
        Ok(crate::state::StateWriter::new(1)
            .u8(self.status)
            .u8(self.ccb)
            .bool(self.pending.is_some())
            .u8(self.pending.unwrap_or(0))
            .bytes(&out)
            .finish())
    }

    fn load_state(&mut self, data: &[u8]) -> Result<(), crate::state::StateError> {
        let mut r = crate::state::StateReader::new(data, "pckbd", 1)?;
        self.status = r.u8()?;
        self.ccb = r.u8()?;
        let has_pending = r.bool()?;
        let pending = r.u8()?;
        self.pending = has_pending.then_some(pending);
        self.output = r.bytes(16)?.iter().copied().collect();
        r.end()
    }
}

#[cfg(test)]
mod key_tests {
    use super::Key;

    fn key(name: &str) -> Key {
        Key::from_qcode(name).expect("a QKeyCode")
    }

    #[test]
    fn presses_and_releases_in_both_scancode_sets() {
        assert_eq!(key("a").bytes(true, true), [0x1e]);
        assert_eq!(key("a").bytes(false, true), [0x9e]);
        assert_eq!(key("a").bytes(true, false), [0x1c]);
        assert_eq!(key("a").bytes(false, false), [0xf0, 0x1c]);
        assert_eq!(key("ctrl_r").bytes(false, true), [0xe0, 0x9d]);
        assert_eq!(key("ctrl_r").bytes(false, false), [0xe0, 0xf0, 0x14]);
    }

    #[test]
    fn pause_and_print_send_their_own_sequences() {
        assert_eq!(
            key("pause").bytes(true, true),
            [0xe1, 0x1d, 0x45, 0xe1, 0x9d, 0xc5]
        );
        assert!(key("pause").bytes(false, true).is_empty());
        assert_eq!(key("print").bytes(true, true), [0xe0, 0x2a, 0xe0, 0x37]);
        assert_eq!(key("print").bytes(false, true), [0xe0, 0xb7, 0xe0, 0xaa]);
        // SysRq shares Print's code but sends it plainly.
        assert_eq!(key("sysrq").bytes(true, true), [0x54]);
    }

    #[test]
    fn numbers_are_set_1_codes_with_bit_7_for_the_prefix() {
        assert_eq!(Key::from_number(0x1d), Some(key("ctrl")));
        assert_eq!(Key::from_number(0x9d), Some(key("ctrl_r")));
        assert_eq!(Key::from_number(0x1234), None);
        assert_eq!(Key::from_number(-1), None);
    }
}
