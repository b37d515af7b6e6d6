//! Everything a guest touches: buses, legacy platform devices, PCI, virtio, IDE,
//! watchdogs, TPM, input, display and VNC, chardev and network backends.
//!
//! Devices arrive with the KVM machine issue and the device issues after it.
