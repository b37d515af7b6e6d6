//! Everything a guest touches: buses, legacy platform devices, ACPI power
//! management; PCI, virtio, IDE, watchdogs, TPM, input, display and VNC,
//! chardev, entropy (rng) and network backends arrive with their issues.
//!
//! Devices talk to the machine only through [`platform`]'s traits
//! (interrupt lines, requests), never to the VMM directly.

pub mod acpi_pm;
pub mod bus;
pub mod chardev;
pub mod legacy;
pub mod pci;
pub mod platform;
pub mod rng;
pub mod state;
pub mod thread_pool;
pub mod virtio;

pub use bus::{Bus, BusDevice, SharedDevice};
pub use platform::{InterruptLine, PlatformRequest, RequestSink};
