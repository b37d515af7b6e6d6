//! Legacy PC platform devices on the port-I/O bus.

pub mod cmos;
pub mod debug_exit;
pub mod fw_cfg;
pub mod i8042;
pub mod keymap;
pub mod ps2;
pub mod reset_control;
pub mod serial;

pub use cmos::Cmos;
pub use debug_exit::DebugExit;
pub use fw_cfg::FwCfg;
pub use i8042::{Key, I8042};
pub use reset_control::ResetControl;
pub use serial::Serial16550;
