//! What the host offers: whether KVM is there and usable.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

/// `KVM_GET_API_VERSION`, `_IO(KVMIO, 0x00)`.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
/// The only KVM API version there has ever been.
const KVM_API_VERSION: libc::c_int = 12;

#[derive(Debug)]
pub enum KvmError {
    Open(std::io::Error),
    ApiVersion(libc::c_int),
}

impl std::fmt::Display for KvmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvmError::Open(e) => write!(f, "Could not access KVM kernel module: {e}"),
            KvmError::ApiVersion(v) => write!(
                f,
                "kvm version not supported (got {v}, need {KVM_API_VERSION})"
            ),
        }
    }
}

/// Opens `/dev/kvm` and checks its API version.
pub fn probe() -> Result<std::fs::File, KvmError> {
    let kvm = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(KvmError::Open)?;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int.
    let version = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if version != KVM_API_VERSION {
        return Err(KvmError::ApiVersion(version));
    }
    Ok(kvm)
}

/// KVM_REINJECT_CONTROL: whether the in-kernel PIT re-injects the
/// ticks a guest missed (QEMU's kvm-pit lost_tick_policy delay) or
/// drops them (discard).
pub fn set_pit_reinject(vm: &kvm_ioctls::VmFd, reinject: bool) -> std::io::Result<()> {
    const KVM_REINJECT_CONTROL: libc::c_ulong = 0xae71;
    let ctl = kvm_bindings::kvm_reinject_control {
        pit_reinject: u8::from(reinject),
        ..Default::default()
    };
    // SAFETY: the ioctl reads one kvm_reinject_control from the pointer,
    // which stays valid for the call.
    let r = unsafe { libc::ioctl(vm.as_raw_fd(), KVM_REINJECT_CONTROL, &ctl) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
