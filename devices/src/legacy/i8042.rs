//! The i8042 keyboard controller, as far as firmware and kernels probe it,
//! with its CPU reset line (command 0xfe, or output port bit 0 cleared),
//! a keyboard whose keys the monitor presses (send-key): scancode set
//! 1 while the controller translates (command byte bit 6, the default),
//! set 2 otherwise, as QEMU's PS/2 keyboard and i8042 together send; and
//! the PS/2 mouse on its aux port (ps2.rs) on IRQ 12: commands through
//! 0xd4, its bytes flagged by status bit 5.

use super::ps2::{Ps2Mouse, Ps2Queue};
use crate::bus::BusDevice;
use crate::platform::{InterruptLine, PlatformRequest, RequestSink};
use qmp::qapi::{InputAxis, InputButton};
use std::sync::Arc;

const STATUS_OBF: u8 = 0x01;
const STATUS_SYS: u8 = 0x04;
const STATUS_CMD: u8 = 0x08;
const STATUS_AUX_OBF: u8 = 0x20;
const CCB_KBD_INT: u8 = 0x01;
const CCB_AUX_INT: u8 = 0x02;
const CCB_KBD_DISABLED: u8 = 0x10;
const CCB_AUX_DISABLED: u8 = 0x20;
const CCB_TRANSLATE: u8 = 0x40;
/// Keyboard interrupt, system flag, translation.
const CCB_POWER_ON: u8 = 0x45;

/// The output port at power-on: CPU reset line high (not in reset), A20
/// on, the unused bits set (QEMU's KBD_OUT_RESET | KBD_OUT_A20 |
/// KBD_OUT_ONES).
const OUTPORT_POWER_ON: u8 = 0xcf;
const OUTPORT_OBF: u8 = 0x10;
const OUTPORT_AUX_OBF: u8 = 0x20;
const PENDING_KBD: u8 = 1;
const PENDING_AUX: u8 = 2;

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
    /// The status register's stored bits (system flag, last write a
    /// command); the output-buffer bits follow `pending`.
    status: u8,
    ccb: u8,
    /// The controller command whose data byte comes next through port
    /// 0x60.
    write_cmd: Option<u8>,
    /// The output port as last written (0xd1); the buffer-full bits
    /// follow `pending` when it is read (0xd0).
    outport: u8,
    /// Which devices have bytes waiting (PENDING_KBD, PENDING_AUX), as
    /// their queues last said.
    pending: u8,
    kbd: Ps2Queue,
    mouse: Ps2Mouse,
    sink: Arc<dyn RequestSink>,
    kbd_irq: Arc<dyn InterruptLine>,
    aux_irq: Arc<dyn InterruptLine>,
}

impl I8042 {
    /// The controller as firmware leaves it (vmm boots kernels without
    /// firmware): self-test passed, keyboard interrupt and translation
    /// on, both ports enabled, mouse interrupt off.
    pub fn new(
        sink: Arc<dyn RequestSink>,
        kbd_irq: Arc<dyn InterruptLine>,
        aux_irq: Arc<dyn InterruptLine>,
    ) -> I8042 {
        I8042 {
            status: STATUS_SYS,
            ccb: CCB_POWER_ON,
            write_cmd: None,
            outport: OUTPORT_POWER_ON,
            pending: 0,
            kbd: Ps2Queue::default(),
            mouse: Ps2Mouse::new(),
            sink,
            kbd_irq,
            aux_irq,
        }
    }

    /// Power-on state again (system reset): both devices' queues empty,
    /// the mouse as at power-on.
    pub fn reset(&mut self) {
        self.status = STATUS_SYS;
        self.ccb = CCB_POWER_ON;
        self.write_cmd = None;
        self.outport = OUTPORT_POWER_ON;
        self.kbd.clear();
        self.mouse.reset();
        self.pending = 0;
        self.update_irq();
    }

    /// The status bits and interrupt lines from `pending`: keyboard data
    /// goes first; mouse data shows (status bit 5, IRQ 12) only when no
    /// keyboard byte waits. A disabled keyboard port raises no IRQ 1.
    fn update_irq(&mut self) {
        let mut kbd_level = false;
        let mut aux_level = false;
        self.status &= !(STATUS_OBF | STATUS_AUX_OBF);
        if self.pending != 0 {
            self.status |= STATUS_OBF;
            if self.pending == PENDING_AUX {
                self.status |= STATUS_AUX_OBF;
                aux_level = self.ccb & CCB_AUX_INT != 0;
            } else {
                kbd_level = self.ccb & CCB_KBD_INT != 0 && self.ccb & CCB_KBD_DISABLED == 0;
            }
        }
        self.kbd_irq.set_level(kbd_level);
        self.aux_irq.set_level(aux_level);
    }

    /// A device says whether it has bytes waiting.
    fn set_pending(&mut self, device: u8, waiting: bool) {
        if waiting {
            self.pending |= device;
        } else {
            self.pending &= !device;
        }
        self.update_irq();
    }

    fn push_kbd(&mut self, byte: u8) {
        if self.kbd.push(byte) {
            self.set_pending(PENDING_KBD, true);
        }
    }

    /// The mouse's queue grew (or not): its pending bit follows.
    fn mouse_queued(&mut self) {
        if self.mouse.has_data() {
            self.set_pending(PENDING_AUX, true);
        }
    }

    fn push_aux(&mut self, byte: u8) {
        if self.mouse.queue().push(byte) {
            self.set_pending(PENDING_AUX, true);
        }
    }

    /// The keyboard sends `key` pressed or released.
    pub fn key_event(&mut self, key: Key, down: bool) {
        for b in key.bytes(down, self.ccb & CCB_TRANSLATE != 0) {
            self.push_kbd(b);
        }
    }

    /// Relative motion for the mouse (input-send-event `rel`).
    pub fn mouse_motion(&mut self, axis: InputAxis, value: i64) {
        self.mouse.motion(axis, value);
    }

    /// A mouse button (input-send-event `btn`).
    pub fn mouse_button(&mut self, button: InputButton, down: bool) {
        self.mouse.button(button, down);
    }

    /// The end of a group of mouse events: packets go out. True when a
    /// button is held.
    pub fn mouse_sync(&mut self) -> bool {
        let held = self.mouse.sync();
        self.mouse_queued();
        held
    }

    fn command(&mut self, cmd: u8) {
        self.status |= STATUS_CMD;
        match cmd {
            0x20 => self.push_kbd(self.ccb),
            0x60 | 0xd1 | 0xd2 | 0xd3 | 0xd4 => self.write_cmd = Some(cmd),
            0xaa => self.push_kbd(0x55),        // self-test passed
            0xa9 | 0xab => self.push_kbd(0x00), // port tests passed
            0xad => {
                self.ccb |= CCB_KBD_DISABLED;
                self.update_irq();
            }
            0xae => {
                self.ccb &= !CCB_KBD_DISABLED;
                self.update_irq();
            }
            // The aux port's enable bit is bookkeeping only: the mouse
            // keeps sending, as QEMU's does.
            0xa7 => self.ccb |= CCB_AUX_DISABLED,
            0xa8 => self.ccb &= !CCB_AUX_DISABLED,
            0xd0 => {
                let mut port = self.outport & !(OUTPORT_OBF | OUTPORT_AUX_OBF);
                if self.pending != 0 {
                    port |= OUTPORT_OBF;
                    if self.pending == PENDING_AUX {
                        port |= OUTPORT_AUX_OBF;
                    }
                }
                self.push_kbd(port);
            }
            // Pulse output port bits; bit 0 is the CPU reset line.
            0xf0..=0xff if cmd & 0x01 == 0 => self.sink.request(PlatformRequest::Reset),
            _ => {}
        }
    }

    fn data(&mut self, byte: u8) {
        self.status &= !STATUS_CMD;
        match self.write_cmd.take() {
            Some(0x60) => {
                self.ccb = byte;
                self.update_irq();
            }
            Some(0xd1) => {
                self.outport = byte;
                if byte & 0x01 == 0 {
                    self.sink.request(PlatformRequest::Reset);
                }
            }
            Some(0xd2) => self.push_kbd(byte),
            Some(0xd3) => self.push_aux(byte),
            Some(0xd4) => {
                self.mouse.write(byte);
                self.mouse_queued();
            }
            Some(_) => {}
            // Keyboard commands: acknowledge; reset answers self-test ok.
            None => match byte {
                0xff => {
                    self.push_kbd(0xfa);
                    self.push_kbd(0xaa);
                }
                // An MF2 keyboard's id; its second byte as the
                // controller translates it (QEMU answers the same).
                0xf2 => {
                    self.push_kbd(0xfa);
                    self.push_kbd(0xab);
                    self.push_kbd(if self.ccb & CCB_TRANSLATE != 0 {
                        0x41
                    } else {
                        0x83
                    });
                }
                _ => self.push_kbd(0xfa),
            },
        }
    }

    /// Port 0x60: the mouse's byte when only the mouse has one, else the
    /// keyboard's (its last byte again when it has none). Each byte read
    /// drops the device's line and raises it again while more wait, so
    /// an edge-triggered guest sees one interrupt per byte.
    fn read_data(&mut self) -> u8 {
        let (device, (byte, taken)) = if self.pending == PENDING_AUX {
            (PENDING_AUX, self.mouse.queue().pop())
        } else {
            (PENDING_KBD, self.kbd.pop())
        };
        if taken {
            self.set_pending(device, false);
            let more = if device == PENDING_AUX {
                self.mouse.has_data()
            } else {
                !self.kbd.is_empty()
            };
            self.set_pending(device, more);
        }
        byte
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            0 => self.read_data(),
            4 => self.status,
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
        let w = crate::state::StateWriter::new(3)
            .u8(self.status)
            .u8(self.ccb)
            .bool(self.write_cmd.is_some())
            .u8(self.write_cmd.unwrap_or(0))
            .u8(self.outport)
            .u8(self.pending);
        Ok(self.mouse.save(self.kbd.save(w)).finish())
    }

    fn load_state(&mut self, data: &[u8]) -> Result<(), crate::state::StateError> {
        let mut r = crate::state::StateReader::new(data, "pckbd", 3)?;
        let status = r.u8()?;
        let ccb = r.u8()?;
        let has_cmd = r.bool()?;
        let cmd = r.u8()?;
        let outport = r.u8()?;
        let pending = r.u8()? & (PENDING_KBD | PENDING_AUX);
        let kbd = Ps2Queue::load(&mut r)?;
        let mouse = Ps2Mouse::load(&mut r)?;
        r.end()?;
        self.status = status;
        self.ccb = ccb;
        self.write_cmd = has_cmd.then_some(cmd);
        self.outport = outport;
        self.pending = pending;
        self.kbd = kbd;
        self.mouse = mouse;
        self.update_irq();
        Ok(())
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

#[cfg(test)]
mod aux_tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    /// A line that counts its rising edges and remembers its level.
    #[derive(Default)]
    struct Line {
        high: Mutex<bool>,
        edges: AtomicU32,
    }

    impl InterruptLine for Line {
        fn set_level(&self, high: bool) {
            let mut level = self.high.lock().unwrap();
            if high && !*level {
                self.edges.fetch_add(1, Ordering::Relaxed);
            }
            *level = high;
        }
    }

    struct NoRequests;
    impl RequestSink for NoRequests {
        fn request(&self, _: PlatformRequest) {}
    }

    fn controller() -> (I8042, Arc<Line>, Arc<Line>) {
        let kbd = Arc::new(Line::default());
        let aux = Arc::new(Line::default());
        let c = I8042::new(Arc::new(NoRequests), kbd.clone(), aux.clone());
        (c, kbd, aux)
    }

    fn status(c: &mut I8042) -> u8 {
        let mut v = [0];
        c.read(4, &mut v);
        v[0]
    }

    fn data(c: &mut I8042) -> u8 {
        let mut v = [0];
        c.read(0, &mut v);
        v[0]
    }

    fn to_mouse(c: &mut I8042, byte: u8) {
        c.write(4, &[0xd4]);
        c.write(0, &[byte]);
    }

    /// Every byte waiting, with its status register as it was read.
    fn drain(c: &mut I8042) -> Vec<(u8, u8)> {
        let mut out = Vec::new();
        while status(c) & STATUS_OBF != 0 {
            let s = status(c);
            out.push((s & (STATUS_OBF | STATUS_AUX_OBF), data(c)));
        }
        out
    }

    const AUX: u8 = STATUS_OBF | STATUS_AUX_OBF;
    const KBD: u8 = STATUS_OBF;

    /// The keyboard's id follows translation, and the output port reads
    /// back what was written with the buffer-full bits, as QEMU's.
    #[test]
    fn keyboard_id_and_output_port_as_qemu() {
        let (mut c, _, _) = controller();
        c.write(0, &[0xf2]);
        assert_eq!(drain(&mut c), [(KBD, 0xfa), (KBD, 0xab), (KBD, 0x41)]);
        c.write(4, &[0x60]);
        c.write(0, &[CCB_POWER_ON & !CCB_TRANSLATE]);
        c.write(0, &[0xf2]);
        assert_eq!(drain(&mut c), [(KBD, 0xfa), (KBD, 0xab), (KBD, 0x83)]);
        c.write(4, &[0xd0]);
        assert_eq!(drain(&mut c), [(KBD, OUTPORT_POWER_ON)]);
        // A20 off (bit 1), reset line kept high (bit 0); with a mouse
        // byte waiting the aux buffer-full bits show too.
        c.write(4, &[0xd1]);
        c.write(0, &[0xcd]);
        c.write(4, &[0xd3]);
        c.write(0, &[0x5a]);
        c.write(4, &[0xd0]);
        assert_eq!(drain(&mut c), [(KBD, 0xcd | 0x30), (AUX, 0x5a)]);
    }

    #[test]
    fn the_aux_port_reaches_the_mouse_and_flags_its_bytes() {
        let (mut c, _, _) = controller();
        to_mouse(&mut c, 0xff);
        assert_eq!(drain(&mut c), [(AUX, 0xfa), (AUX, 0xaa), (AUX, 0x00)]);
        to_mouse(&mut c, 0xf2);
        assert_eq!(drain(&mut c), [(AUX, 0xfa), (AUX, 0x00)]);
        // 0xd3 puts a byte in the mouse's queue; 0xd2 in the keyboard's.
        c.write(4, &[0xd3]);
        c.write(0, &[0x5a]);
        c.write(4, &[0xd2]);
        c.write(0, &[0xa5]);
        // Keyboard bytes go first.
        assert_eq!(drain(&mut c), [(KBD, 0xa5), (AUX, 0x5a)]);
        // The aux port test passes; 0xa7/0xa8 flip command byte bit 5.
        c.write(4, &[0xa9]);
        assert_eq!(drain(&mut c), [(KBD, 0x00)]);
        c.write(4, &[0xa7]);
        c.write(4, &[0x20]);
        assert_eq!(drain(&mut c), [(KBD, CCB_POWER_ON | CCB_AUX_DISABLED)]);
        c.write(4, &[0xa8]);
        c.write(4, &[0x20]);
        assert_eq!(drain(&mut c), [(KBD, CCB_POWER_ON)]);
        // Read empty, the port gives the keyboard's last byte again.
        assert_eq!(data(&mut c), CCB_POWER_ON);
    }

    #[test]
    fn irq_12_follows_the_command_byte_and_pulses_per_byte() {
        let (mut c, kbd, aux) = controller();
        to_mouse(&mut c, 0xff);
        // Mouse interrupt off (the power-on command byte).
        assert_eq!(aux.edges.load(Ordering::Relaxed), 0);
        drain(&mut c);
        c.write(4, &[0x60]);
        c.write(0, &[CCB_POWER_ON | CCB_AUX_INT]);
        to_mouse(&mut c, 0xf4);
        c.mouse_motion(InputAxis::X, 1);
        c.mouse_sync();
        // One edge for the first byte, one more for each byte read with
        // more waiting.
        assert_eq!(aux.edges.load(Ordering::Relaxed), 1);
        assert_eq!(drain(&mut c).len(), 4);
        assert_eq!(aux.edges.load(Ordering::Relaxed), 4);
        assert!(!*aux.high.lock().unwrap());
        // A keyboard byte holds IRQ 12 back until it is read.
        let kbd_edges = kbd.edges.load(Ordering::Relaxed);
        c.key_event(Key::from_qcode("a").expect("a key"), true);
        c.mouse_sync();
        assert!(*kbd.high.lock().unwrap());
        assert!(!*aux.high.lock().unwrap());
        assert_eq!(data(&mut c), 0x1e);
        assert!(*aux.high.lock().unwrap());
        assert_eq!(kbd.edges.load(Ordering::Relaxed), kbd_edges + 1);
    }

    #[test]
    fn reset_empties_both_queues_and_forgets_the_mouse_mode() {
        let (mut c, _, _) = controller();
        for r in [200, 100, 80] {
            to_mouse(&mut c, 0xf3);
            to_mouse(&mut c, r);
        }
        c.key_event(Key::from_qcode("a").expect("a key"), true);
        c.reset();
        assert_eq!(status(&mut c) & STATUS_OBF, 0);
        to_mouse(&mut c, 0xf2);
        assert_eq!(drain(&mut c), [(AUX, 0xfa), (AUX, 0x00)]);
    }

    #[test]
    fn state_round_trips() {
        use crate::state::DeviceState;
        let (mut c, _, _) = controller();
        to_mouse(&mut c, 0xe9);
        c.key_event(Key::from_qcode("b").expect("a key"), true);
        c.write(4, &[0xd4]);
        let saved = c.save_state().unwrap();
        let (mut d, _, _) = controller();
        d.load_state(&saved).unwrap();
        assert_eq!(d.save_state().unwrap(), saved);
        assert_eq!(
            drain(&mut d),
            [
                (KBD, 0x30),
                (AUX, 0xfa),
                (AUX, 0x00),
                (AUX, 0x00),
                (AUX, 0x00)
            ]
        );
        assert!(d.load_state(&saved[..saved.len() - 1]).is_err());
    }
}
