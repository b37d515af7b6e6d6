//! The input layer: the handlers the machine's devices register, as
//! QEMU's input core numbers and orders them (pc: the i8042's PS/2
//! keyboard, index 1, then its mouse, index 2), which one takes each
//! kind of event (the first in the list that takes it), the mice that
//! query-mice lists with the current one (the first), and the sync that
//! ends a group of events and makes the mouse send its packets.

use crate::machine::Machine;
use qmp::qapi::{InputButton, InputEvent, InputEventKind, KeyValue, MouseInfo};

/// The devices that take input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Device {
    Ps2Keyboard,
    Ps2Mouse,
}

impl Device {
    /// The handler's name, as QEMU's devices register it.
    fn name(self) -> &'static str {
        match self {
            Device::Ps2Keyboard => "QEMU PS/2 Keyboard",
            Device::Ps2Mouse => "QEMU PS/2 Mouse",
        }
    }

    fn takes(self, kind: InputEventKind) -> bool {
        match self {
            Device::Ps2Keyboard => kind == InputEventKind::Key,
            Device::Ps2Mouse => matches!(kind, InputEventKind::Btn | InputEventKind::Rel),
        }
    }

    /// A mouse is a handler for relative or absolute motion.
    fn is_mouse(self) -> bool {
        self.takes(InputEventKind::Rel) || self.takes(InputEventKind::Abs)
    }
}

struct Handler {
    index: i64,
    device: Device,
    /// Events since its last sync (a sync passes handlers without).
    events: u32,
}

pub struct Input {
    /// In QEMU's order: registration, then `mouse_set` moves one first.
    handlers: Vec<Handler>,
    /// HMP mouse_button's last state: one for every monitor, as QEMU
    /// keeps it, changed whether or not the guest runs.
    pub hmp_buttons: i64,
}

/// What an event or a sync asks of the machine beyond the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Wake(pub bool);

impl Input {
    /// The handlers of a machine with an i8042 (all of vmm's boards);
    /// none without a board (`-machine none`).
    pub fn new(has_i8042: bool) -> Input {
        let handlers = if has_i8042 {
            [Device::Ps2Keyboard, Device::Ps2Mouse]
                .into_iter()
                .zip(1..)
                .map(|(device, index)| Handler {
                    index,
                    device,
                    events: 0,
                })
                .collect()
        } else {
            Vec::new()
        };
        Input {
            handlers,
            hmp_buttons: 0,
        }
    }

    fn find(&self, kind: InputEventKind) -> Option<usize> {
        self.handlers.iter().position(|h| h.device.takes(kind))
    }

    /// Whether some handler takes events of `kind`.
    pub fn has_handler(&self, kind: InputEventKind) -> bool {
        self.find(kind).is_some()
    }

    /// Hands `event` to its handler (none: dropped). A key wakes a
    /// suspended guest, as QEMU's keyboard asks.
    pub fn send(&mut self, machine: &Machine, event: &InputEvent) -> Wake {
        let Some(i) = self.find(event.kind()) else {
            return Wake(false);
        };
        self.handlers[i].events = self.handlers[i].events.saturating_add(1);
        match (self.handlers[i].device, event) {
            (Device::Ps2Keyboard, InputEvent::Key(k)) => {
                let key = match &k.key {
                    KeyValue::Qcode(q) => devices::legacy::Key::from_qcode(q.as_str()),
                    KeyValue::Number(n) => devices::legacy::Key::from_number(*n),
                };
                // A number no key has is dropped, as QEMU drops it.
                if let Some(key) = key {
                    machine.key_event(key, k.down);
                }
                Wake(true)
            }
            (Device::Ps2Mouse, InputEvent::Rel(m)) => {
                machine.mouse_motion(m.axis, m.value);
                Wake(false)
            }
            (Device::Ps2Mouse, InputEvent::Btn(b)) => {
                machine.mouse_button(b.button, b.down);
                Wake(false)
            }
            _ => Wake(false),
        }
    }

    /// The end of a group of events: each handler that took some since
    /// its last sync gets one. The mouse sends its packets, and asks to
    /// wake a suspended guest while a button is held.
    pub fn sync(&mut self, machine: &Machine) -> Wake {
        let mut wake = false;
        for h in &mut self.handlers {
            if h.events == 0 {
                continue;
            }
            h.events = 0;
            if h.device == Device::Ps2Mouse {
                wake |= machine.mouse_sync();
            }
        }
        Wake(wake)
    }

    /// The mice, as query-mice lists them: the handlers list's order
    /// reversed, the first in the list current.
    pub fn mice(&self) -> Vec<MouseInfo> {
        let mut mice: Vec<MouseInfo> = self
            .handlers
            .iter()
            .filter(|h| h.device.is_mouse())
            .enumerate()
            .map(|(n, h)| MouseInfo {
                name: h.device.name().to_string(),
                index: h.index,
                current: n == 0,
                absolute: h.device.takes(InputEventKind::Abs),
            })
            .collect();
        mice.reverse();
        mice
    }

    /// HMP mouse_set: the mouse at `index` goes first, so that it takes
    /// the motion. The error is QEMU's text.
    pub fn set_current_mouse(&mut self, index: i64) -> Result<(), String> {
        let Some(i) = self.handlers.iter().position(|h| h.index == index) else {
            return Err(format!("Mouse at index '{index}' not found"));
        };
        if !self.handlers[i].device.is_mouse() {
            return Err(format!(
                "Input device '{}' is not a mouse",
                self.handlers[i].device.name()
            ));
        }
        let h = self.handlers.remove(i);
        self.handlers.insert(0, h);
        Ok(())
    }
}

/// HMP mouse_button's state bits for the buttons it drives, in QEMU's
/// button order (left, middle, right): 1 left, 2 right, 4 middle.
pub const HMP_BUTTONS: [(InputButton, i64); 3] = [
    (InputButton::Left, 1),
    (InputButton::Middle, 4),
    (InputButton::Right, 2),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pc_lists_its_ps2_mouse_as_index_2_and_current() {
        let input = Input::new(true);
        let mice = input.mice();
        assert_eq!(mice.len(), 1);
        assert_eq!(mice[0].name, "QEMU PS/2 Mouse");
        assert_eq!(mice[0].index, 2);
        assert!(mice[0].current);
        assert!(!mice[0].absolute);
        assert!(input.has_handler(InputEventKind::Rel));
        assert!(input.has_handler(InputEventKind::Btn));
        assert!(!input.has_handler(InputEventKind::Abs));
        assert!(Input::new(false).mice().is_empty());
    }

    #[test]
    fn mouse_set_takes_mice_only() {
        let mut input = Input::new(true);
        assert_eq!(input.set_current_mouse(2), Ok(()));
        assert_eq!(
            input.set_current_mouse(1),
            Err("Input device 'QEMU PS/2 Keyboard' is not a mouse".into())
        );
        assert_eq!(
            input.set_current_mouse(7),
            Err("Mouse at index '7' not found".into())
        );
        // The keyboard still takes the keys.
        assert!(input.has_handler(InputEventKind::Key));
        assert!(input.mice()[0].current);
    }
}
