//! What the PS/2 devices behind the i8042 share, and the PS/2 mouse on
//! its aux port, as QEMU 2.11's PS/2 model behaves: the byte queue each
//! device fills (16 slots, 15 bytes at most, a byte that finds it full
//! dropped), the mouse's command set (reset, defaults, device id with
//! the IntelliMouse and Explorer sample-rate knocks, reporting on and
//! off, sample rate, resolution, status, scaling, stream and remote
//! modes, read data, wrap mode) and its movement packets: motion adds up
//! until a sync, which sends 3-byte packets (4 with a wheel) clipped to
//! +-127, as many as fit, the rest left for the next sync.

use crate::state::{StateError, StateReader, StateWriter};
use qmp::qapi::{InputAxis, InputButton};

/// Slots in a PS/2 queue; one stays free, so 15 bytes fit.
pub const QUEUE_SLOTS: usize = 16;

/// The bytes a PS/2 device has for the controller, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ps2Queue {
    data: [u8; QUEUE_SLOTS],
    rptr: usize,
    count: usize,
}

impl Ps2Queue {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Queues `byte`; false (and the byte dropped) when 15 are waiting.
    pub fn push(&mut self, byte: u8) -> bool {
        if self.count >= QUEUE_SLOTS - 1 {
            return false;
        }
        self.data[(self.rptr + self.count) % QUEUE_SLOTS] = byte;
        self.count += 1;
        true
    }

    /// The oldest byte and true; with none waiting, the byte read last
    /// again and false (DOS extenders read the port twice; QEMU answers
    /// them so).
    pub fn pop(&mut self) -> (u8, bool) {
        if self.count == 0 {
            return (
                self.data[(self.rptr + QUEUE_SLOTS - 1) % QUEUE_SLOTS],
                false,
            );
        }
        let byte = self.data[self.rptr];
        self.rptr = (self.rptr + 1) % QUEUE_SLOTS;
        self.count -= 1;
        (byte, true)
    }

    /// Nothing waiting (the slots keep their bytes, as the hardware's
    /// buffer would).
    pub fn clear(&mut self) {
        self.rptr = 0;
        self.count = 0;
    }

    pub(crate) fn save(&self, w: StateWriter) -> StateWriter {
        w.bytes(&self.data).u8(self.rptr as u8).u8(self.count as u8)
    }

    pub(crate) fn load(r: &mut StateReader<'_>) -> Result<Ps2Queue, StateError> {
        let bytes = r.bytes(QUEUE_SLOTS)?;
        let mut data = [0u8; QUEUE_SLOTS];
        if bytes.len() != QUEUE_SLOTS {
            return Err(StateError::Malformed(format!(
                "PS/2 queue: {} slots, expected {QUEUE_SLOTS}",
                bytes.len()
            )));
        }
        data.copy_from_slice(bytes);
        let rptr = usize::from(r.u8()?);
        let count = usize::from(r.u8()?);
        if rptr >= QUEUE_SLOTS || count >= QUEUE_SLOTS {
            return Err(StateError::Malformed(format!(
                "PS/2 queue: read position {rptr}, {count} bytes"
            )));
        }
        Ok(Ps2Queue { data, rptr, count })
    }
}

const ACK: u8 = 0xfa;

// Mouse commands.
const SET_SCALE_1_1: u8 = 0xe6;
const SET_SCALE_2_1: u8 = 0xe7;
const SET_RESOLUTION: u8 = 0xe8;
const STATUS_REQUEST: u8 = 0xe9;
const SET_STREAM: u8 = 0xea;
const READ_DATA: u8 = 0xeb;
const RESET_WRAP: u8 = 0xec;
const SET_WRAP: u8 = 0xee;
const SET_REMOTE: u8 = 0xf0;
const GET_ID: u8 = 0xf2;
const SET_SAMPLE_RATE: u8 = 0xf3;
const ENABLE_REPORTING: u8 = 0xf4;
const DISABLE_REPORTING: u8 = 0xf5;
const SET_DEFAULTS: u8 = 0xf6;
const RESET: u8 = 0xff;

// The status byte (the first of a status request's answer).
const STATUS_REMOTE: u8 = 0x40;
const STATUS_ENABLED: u8 = 0x20;
const STATUS_SCALE_2_1: u8 = 0x10;

// Device ids: plain PS/2, IntelliMouse (wheel), IntelliMouse Explorer
// (wheel and buttons 4 and 5).
const TYPE_PS2: u8 = 0;
const TYPE_IMPS2: u8 = 3;
const TYPE_IMEX: u8 = 4;

/// Bytes kept free by a sync: it sends packets while fewer than this
/// many slots short of full are taken.
const SYNC_ROOM: usize = 4;

/// The button bits of a packet's first byte (left, right, middle) and
/// of the Explorer's fourth (side, extra).
fn button_bit(button: InputButton) -> u8 {
    match button {
        InputButton::Left => 0x01,
        InputButton::Right => 0x02,
        InputButton::Middle => 0x04,
        InputButton::Side => 0x08,
        InputButton::Extra => 0x10,
        InputButton::WheelUp | InputButton::WheelDown => 0,
    }
}

/// The PS/2 mouse.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ps2Mouse {
    queue: Ps2Queue,
    /// The command whose argument byte comes next (set resolution, set
    /// sample rate).
    write_cmd: Option<u8>,
    status: u8,
    resolution: u8,
    sample_rate: u8,
    wrap: bool,
    mouse_type: u8,
    /// How far the sample-rate knock (200, 100 or 200, then 80) went.
    detect_state: u8,
    /// Motion not yet sent; y and the wheel count up as the packets do.
    dx: i32,
    dy: i32,
    dz: i32,
    buttons: u8,
}

impl Ps2Mouse {
    /// Power-on state: everything zero, as QEMU's reset leaves it (its
    /// defaults of 100 samples/s and resolution 2 come with the reset
    /// and set-defaults commands).
    pub fn new() -> Ps2Mouse {
        Ps2Mouse::default()
    }

    pub fn queue(&mut self) -> &mut Ps2Queue {
        &mut self.queue
    }

    pub fn has_data(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Device id: 0, 3 after the IntelliMouse knock, 4 after the
    /// Explorer's.
    pub fn device_id(&self) -> u8 {
        self.mouse_type
    }

    fn put(&mut self, byte: u8) {
        self.queue.push(byte);
    }

    /// A byte the guest sends the mouse (controller command 0xd4).
    pub fn write(&mut self, byte: u8) {
        match self.write_cmd.take() {
            Some(SET_SAMPLE_RATE) => {
                self.sample_rate = byte;
                self.detect_state = match (self.detect_state, byte) {
                    // States past 3 (from a foreign blob) count as 0.
                    (0 | 4.., 200) => 1,
                    (1, 100) => 2,
                    (1, 200) => 3,
                    (2, 80) => {
                        self.mouse_type = TYPE_IMPS2;
                        0
                    }
                    (3, 80) => {
                        self.mouse_type = TYPE_IMEX;
                        0
                    }
                    _ => 0,
                };
                self.put(ACK);
            }
            Some(SET_RESOLUTION) => {
                self.resolution = byte;
                self.put(ACK);
            }
            _ => self.command(byte),
        }
    }

    fn command(&mut self, byte: u8) {
        // Wrap mode echoes every byte but its own end and a reset.
        if self.wrap {
            if byte == RESET_WRAP {
                self.wrap = false;
                self.put(ACK);
                return;
            }
            if byte != RESET {
                self.put(byte);
                return;
            }
        }
        match byte {
            SET_SCALE_1_1 => {
                self.status &= !STATUS_SCALE_2_1;
                self.put(ACK);
            }
            SET_SCALE_2_1 => {
                self.status |= STATUS_SCALE_2_1;
                self.put(ACK);
            }
            SET_STREAM => {
                self.status &= !STATUS_REMOTE;
                self.put(ACK);
            }
            SET_WRAP => {
                self.wrap = true;
                self.put(ACK);
            }
            SET_REMOTE => {
                self.status |= STATUS_REMOTE;
                self.put(ACK);
            }
            GET_ID => {
                self.put(ACK);
                self.put(self.mouse_type);
            }
            SET_RESOLUTION | SET_SAMPLE_RATE => {
                self.write_cmd = Some(byte);
                self.put(ACK);
            }
            STATUS_REQUEST => {
                self.put(ACK);
                self.put(self.status);
                self.put(self.resolution);
                self.put(self.sample_rate);
            }
            READ_DATA => {
                self.put(ACK);
                self.send_packet();
            }
            ENABLE_REPORTING => {
                self.status |= STATUS_ENABLED;
                self.put(ACK);
            }
            DISABLE_REPORTING => {
                self.status &= !STATUS_ENABLED;
                self.put(ACK);
            }
            SET_DEFAULTS => {
                self.set_defaults();
                self.put(ACK);
            }
            // Wrap mode survives a reset, as in QEMU.
            RESET => {
                self.set_defaults();
                self.mouse_type = TYPE_PS2;
                self.put(ACK);
                self.put(0xaa);
                self.put(self.mouse_type);
            }
            // Commands it does not know go unanswered.
            _ => {}
        }
    }

    fn set_defaults(&mut self) {
        self.sample_rate = 100;
        self.resolution = 2;
        self.status = 0;
    }

    /// Relative motion on `axis` (screen coordinates: y grows downwards,
    /// the packet's upwards). Dropped while reporting is off.
    pub fn motion(&mut self, axis: InputAxis, value: i64) {
        if self.status & STATUS_ENABLED == 0 {
            return;
        }
        // The sums are 32-bit and wrap, as QEMU's ints do.
        match axis {
            InputAxis::X => self.dx = (i64::from(self.dx) + value) as i32,
            InputAxis::Y => self.dy = (i64::from(self.dy) - value) as i32,
        }
    }

    /// A button pressed or released; a wheel press is one notch (up
    /// counts negative). Dropped while reporting is off.
    pub fn button(&mut self, button: InputButton, down: bool) {
        if self.status & STATUS_ENABLED == 0 {
            return;
        }
        if down {
            self.buttons |= button_bit(button);
            match button {
                InputButton::WheelUp => self.dz = self.dz.wrapping_sub(1),
                InputButton::WheelDown => self.dz = self.dz.wrapping_add(1),
                _ => {}
            }
        } else {
            self.buttons &= !button_bit(button);
        }
    }

    /// The end of a group of events: in stream mode, packets go out
    /// while the queue has room (at least one, even with no motion, and
    /// whether or not reporting is on, as in QEMU 2.11). True when a
    /// button is held (QEMU wakes a suspended guest then).
    pub fn sync(&mut self) -> bool {
        if self.status & STATUS_REMOTE == 0 {
            while self.queue.len() < QUEUE_SLOTS - SYNC_ROOM {
                self.send_packet();
                if self.dx == 0 && self.dy == 0 && self.dz == 0 {
                    break;
                }
            }
        }
        self.buttons != 0
    }

    /// One packet of the motion so far, clipped; what it carries is
    /// taken off the sums.
    fn send_packet(&mut self) {
        let dx = self.dx.clamp(-127, 127);
        let dy = self.dy.clamp(-127, 127);
        let mut dz = self.dz;
        let first = 0x08 | u8::from(dx < 0) << 4 | u8::from(dy < 0) << 5 | (self.buttons & 0x07);
        self.put(first);
        self.put(dx as u8);
        self.put(dy as u8);
        match self.mouse_type {
            TYPE_IMPS2 => {
                dz = dz.clamp(-127, 127);
                self.put(dz as u8);
            }
            TYPE_IMEX => {
                dz = dz.clamp(-7, 7);
                self.put((dz as u8 & 0x0f) | (self.buttons & 0x18) << 1);
            }
            // A plain mouse has no wheel: its motion is dropped.
            _ => {}
        }
        self.dx -= dx;
        self.dy -= dy;
        self.dz -= dz;
    }

    /// Power-on state again (a system reset).
    pub fn reset(&mut self) {
        *self = Ps2Mouse {
            queue: Ps2Queue {
                data: self.queue.data,
                ..Ps2Queue::default()
            },
            ..Ps2Mouse::default()
        };
    }

    pub(crate) fn save(&self, w: StateWriter) -> StateWriter {
        self.queue
            .save(w)
            .bool(self.write_cmd.is_some())
            .u8(self.write_cmd.unwrap_or(0))
            .u8(self.status)
            .u8(self.resolution)
            .u8(self.sample_rate)
            .bool(self.wrap)
            .u8(self.mouse_type)
            .u8(self.detect_state)
            .u32(self.dx as u32)
            .u32(self.dy as u32)
            .u32(self.dz as u32)
            .u8(self.buttons)
    }

    pub(crate) fn load(r: &mut StateReader<'_>) -> Result<Ps2Mouse, StateError> {
        let queue = Ps2Queue::load(r)?;
        let has_cmd = r.bool()?;
        let cmd = r.u8()?;
        Ok(Ps2Mouse {
            queue,
            write_cmd: has_cmd.then_some(cmd),
            status: r.u8()?,
            resolution: r.u8()?,
            sample_rate: r.u8()?,
            wrap: r.bool()?,
            mouse_type: r.u8()?,
            detect_state: r.u8()?,
            dx: r.u32()? as i32,
            dy: r.u32()? as i32,
            dz: r.u32()? as i32,
            buttons: r.u8()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(m: &mut Ps2Mouse) -> Vec<u8> {
        let mut out = Vec::new();
        while m.has_data() {
            out.push(m.queue().pop().0);
        }
        out
    }

    /// A mouse after reset with reporting on.
    fn enabled() -> Ps2Mouse {
        let mut m = Ps2Mouse::new();
        m.write(RESET);
        m.write(ENABLE_REPORTING);
        assert_eq!(drain(&mut m), [0xfa, 0xaa, 0x00, 0xfa]);
        m
    }

    fn knock(m: &mut Ps2Mouse, rates: [u8; 3]) {
        for r in rates {
            m.write(SET_SAMPLE_RATE);
            m.write(r);
        }
        assert_eq!(drain(m), [0xfa; 6]);
    }

    #[test]
    fn the_queue_holds_fifteen_bytes_and_rereads_the_last() {
        let mut q = Ps2Queue::default();
        for b in 0..20u8 {
            assert_eq!(q.push(b), b < 15);
        }
        assert_eq!(q.len(), 15);
        for b in 0..15u8 {
            assert_eq!(q.pop(), (b, true));
        }
        assert_eq!(q.pop(), (14, false));
        assert_eq!(q.pop(), (14, false));
    }

    #[test]
    fn packets_carry_sign_bits_and_y_upwards() {
        let mut m = enabled();
        m.motion(InputAxis::X, 5);
        m.motion(InputAxis::Y, -3);
        m.sync();
        assert_eq!(drain(&mut m), [0x08, 0x05, 0x03]);
        m.motion(InputAxis::X, -10);
        m.motion(InputAxis::Y, 20);
        m.sync();
        assert_eq!(drain(&mut m), [0x38, 0xf6, 0xec]);
    }

    #[test]
    fn big_motion_is_clipped_and_split_across_packets_while_room_lasts() {
        let mut m = enabled();
        m.motion(InputAxis::X, 300);
        m.sync();
        assert_eq!(
            drain(&mut m),
            [0x08, 0x7f, 0x00, 0x08, 0x7f, 0x00, 0x08, 0x2e, 0x00]
        );
        // Four packets fill the queue to 12 bytes; the rest waits for the
        // next sync.
        m.motion(InputAxis::X, -1000);
        m.sync();
        assert_eq!(drain(&mut m), [0x18, 0x81, 0x00].repeat(4));
        m.button(InputButton::Left, true);
        m.sync();
        let mut rest = [0x19, 0x81, 0x00].repeat(3);
        rest.extend_from_slice(&[0x19, 0x91, 0x00]);
        assert_eq!(drain(&mut m), rest);
        // With 12 bytes waiting a sync sends nothing; the motion waits.
        for _ in 0..3 {
            m.write(STATUS_REQUEST);
        }
        m.motion(InputAxis::X, 1);
        m.sync();
        assert_eq!(m.queue().len(), 12);
        drain(&mut m);
        m.sync();
        assert_eq!(drain(&mut m), [0x09, 0x01, 0x00]);
    }

    #[test]
    fn buttons_and_the_wheel_by_device_id() {
        let mut m = enabled();
        m.button(InputButton::Right, true);
        m.button(InputButton::Middle, true);
        assert!(m.sync());
        assert_eq!(drain(&mut m), [0x0e, 0x00, 0x00]);
        m.button(InputButton::Right, false);
        m.button(InputButton::Middle, false);
        // A plain mouse drops the wheel.
        m.button(InputButton::WheelDown, true);
        assert!(!m.sync());
        assert_eq!(drain(&mut m), [0x08, 0x00, 0x00]);

        knock(&mut m, [200, 100, 80]);
        m.write(GET_ID);
        assert_eq!(drain(&mut m), [0xfa, 0x03]);
        m.button(InputButton::WheelUp, true);
        m.button(InputButton::WheelUp, false);
        m.button(InputButton::WheelUp, true);
        m.sync();
        assert_eq!(drain(&mut m), [0x08, 0x00, 0x00, 0xfe]);

        knock(&mut m, [200, 200, 80]);
        m.write(GET_ID);
        assert_eq!(drain(&mut m), [0xfa, 0x04]);
        m.button(InputButton::Side, true);
        m.button(InputButton::Extra, true);
        for _ in 0..9 {
            m.button(InputButton::WheelDown, true);
        }
        m.sync();
        // The Explorer's wheel is 4 bits (+-7), buttons 4 and 5 above it.
        assert_eq!(
            drain(&mut m),
            [0x08, 0x00, 0x00, 0x37, 0x08, 0x00, 0x00, 0x32]
        );
        // A reset makes it a plain mouse again.
        m.write(RESET);
        assert_eq!(drain(&mut m), [0xfa, 0xaa, 0x00]);
    }

    #[test]
    fn an_interrupted_knock_starts_over() {
        let mut m = enabled();
        knock(&mut m, [200, 100, 60]);
        knock(&mut m, [200, 60, 80]);
        m.write(GET_ID);
        assert_eq!(drain(&mut m), [0xfa, 0x00]);
    }

    #[test]
    fn status_defaults_and_modes() {
        let mut m = Ps2Mouse::new();
        // Power-on: all zero until reset or set-defaults.
        m.write(STATUS_REQUEST);
        assert_eq!(drain(&mut m), [0xfa, 0x00, 0x00, 0x00]);
        m.write(SET_DEFAULTS);
        m.write(SET_SCALE_2_1);
        m.write(SET_RESOLUTION);
        m.write(3);
        m.write(ENABLE_REPORTING);
        m.write(SET_REMOTE);
        m.write(STATUS_REQUEST);
        assert_eq!(
            drain(&mut m),
            [0xfa, 0xfa, 0xfa, 0xfa, 0xfa, 0xfa, 0xfa, 0x70, 0x03, 0x64]
        );
        // Remote mode: a sync sends nothing; read data sends the motion.
        m.motion(InputAxis::X, 2);
        m.sync();
        assert!(!m.has_data());
        m.write(READ_DATA);
        assert_eq!(drain(&mut m), [0xfa, 0x08, 0x02, 0x00]);
        m.write(SET_STREAM);
        m.write(SET_SCALE_1_1);
        m.write(DISABLE_REPORTING);
        m.write(STATUS_REQUEST);
        assert_eq!(drain(&mut m), [0xfa, 0xfa, 0xfa, 0xfa, 0x00, 0x03, 0x64]);
        // Unknown commands get no answer.
        m.write(0x42);
        assert!(!m.has_data());
    }

    #[test]
    fn a_disabled_mouse_drops_motion_but_a_sync_still_sends() {
        let mut m = Ps2Mouse::new();
        m.write(RESET);
        drain(&mut m);
        m.motion(InputAxis::X, 9);
        m.button(InputButton::Left, true);
        m.sync();
        assert_eq!(drain(&mut m), [0x08, 0x00, 0x00]);
    }

    #[test]
    fn wrap_mode_echoes_until_reset_wrap() {
        let mut m = enabled();
        m.write(SET_WRAP);
        m.write(0x12);
        m.write(GET_ID);
        m.write(RESET_WRAP);
        m.write(GET_ID);
        assert_eq!(drain(&mut m), [0xfa, 0x12, 0xf2, 0xfa, 0xfa, 0x00]);
        // A reset in wrap mode resets, and wrap mode stays.
        m.write(SET_WRAP);
        m.write(RESET);
        m.write(0x34);
        assert_eq!(drain(&mut m), [0xfa, 0xfa, 0xaa, 0x00, 0x34]);
    }

    #[test]
    fn motion_sums_wrap_at_32_bits() {
        let mut m = enabled();
        m.motion(InputAxis::X, i64::from(i32::MAX));
        m.motion(InputAxis::X, 2);
        assert_eq!(m.dx, i32::MIN + 1);
        m.motion(InputAxis::Y, 1 << 40);
        assert_eq!(m.dy, 0);
    }

    #[test]
    fn state_round_trips_and_bad_blobs_are_refused() {
        let mut m = enabled();
        m.motion(InputAxis::X, 500);
        m.sync();
        m.write(SET_RESOLUTION);
        let saved = m.save(StateWriter::new(1)).finish();
        let mut r = StateReader::new(&saved, "ps2", 1).unwrap();
        let back = Ps2Mouse::load(&mut r).unwrap();
        r.end().unwrap();
        assert_eq!(back, m);
        let mut bad = saved.clone();
        // The read position (after the length and 16 slots) out of range.
        bad[1 + 4 + 16] = 16;
        let mut r = StateReader::new(&bad, "ps2", 1).unwrap();
        assert!(Ps2Mouse::load(&mut r).is_err());
    }
}
