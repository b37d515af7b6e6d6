//! What devices ask of the machine around them: interrupt lines, and
//! requests the main loop carries out (reset, shutdown, exit).

/// A level-triggered interrupt line to the interrupt controller.
pub trait InterruptLine: Send + Sync {
    fn set_level(&self, high: bool);

    /// An edge: raise then lower.
    fn pulse(&self) {
        self.set_level(true);
        self.set_level(false);
    }
}

/// Message-signalled interrupts (MSI, MSI-X) into the interrupt
/// controller.
pub trait MsiSink: Send + Sync {
    fn send_msi(&self, address: u64, data: u32);
    /// A vector of its own, whose messages go through an eventfd that the
    /// hypervisor injects from (KVM's irqfd); None where there is none
    /// (then `send_msi` serves).
    fn vector(&self) -> Option<Box<dyn MsiVector>> {
        None
    }
}

/// One MSI-X vector's route into the interrupt controller.
pub trait MsiVector: Send + Sync {
    /// Sends the message (`address`, `data`), routing the vector to it
    /// first where the message or the VM changed since the last one.
    fn send(&self, address: u64, data: u32) -> std::io::Result<()>;
}

/// Guest writes the hypervisor turns into eventfd signals without an
/// exit to the VMM (KVM's ioeventfd): a virtio queue's notify register.
pub trait IoEventRegistry: Send + Sync {
    /// Any write to guest-physical `addr` (any length, any value)
    /// signals `fd`.
    fn register_mmio(&self, addr: u64, fd: &vmm_sys_util::eventfd::EventFd) -> std::io::Result<()>;
    fn unregister_mmio(
        &self,
        addr: u64,
        fd: &vmm_sys_util::eventfd::EventFd,
    ) -> std::io::Result<()>;
    /// A 16-bit write of `value` to I/O port `port` signals `fd` (the
    /// legacy virtio notify register, where the value names the queue).
    fn register_pio(
        &self,
        port: u16,
        value: u16,
        fd: &vmm_sys_util::eventfd::EventFd,
    ) -> std::io::Result<()>;
    fn unregister_pio(
        &self,
        port: u16,
        value: u16,
        fd: &vmm_sys_util::eventfd::EventFd,
    ) -> std::io::Result<()>;
}

/// Requests a device makes of the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlatformRequest {
    /// The guest asked for a reset (i8042 pulse, ACPI reset register,
    /// triple fault).
    Reset,
    /// The guest powered off (ACPI S5).
    Shutdown,
    /// The guest suspended to RAM (ACPI S3).
    Suspend,
    /// `isa-debug-exit`: the process exits with `(value << 1) | 1`.
    DebugExit(u32),
    /// The guest set the RTC: new offset from host time, in seconds.
    RtcChange(i64),
}

pub trait RequestSink: Send + Sync {
    fn request(&self, request: PlatformRequest);
}

/// A line that goes nowhere (devices not wired to an interrupt).
pub struct NoInterrupt;

impl InterruptLine for NoInterrupt {
    fn set_level(&self, _high: bool) {}
}

/// A device's I/O loop as an iothread drives it, one step at a time,
/// beside the other devices placed on the same thread.
pub trait HostedLoop: Send {
    /// Readable when the loop has something to handle.
    fn fd(&self) -> std::os::fd::RawFd;
    /// How long the loop wants to busy-poll now (0: not at all).
    fn poll_ns(&self) -> u64;
    /// Polling starts (the device's notifications go off); false when
    /// it does not poll now.
    fn poll_begin(&mut self) -> bool;
    /// One look for work while polling.
    fn poll_check(&mut self) -> bool;
    /// Polling ended without work; true when some came meanwhile.
    fn poll_end(&mut self) -> bool;
    /// The thread slept this long after polling found nothing.
    fn slept(&mut self, ns: u64);
    /// Handles what is ready without blocking (`polled`: polling found
    /// work); false once the device ended its loop.
    fn run_once(&mut self, polled: bool) -> bool;
}

/// A thread that runs devices' I/O loops (an `iothread` object): a
/// device placed on it runs its loop there instead of on a thread of its
/// own, beside the others placed there, and polls as long as the
/// thread's poll-max-ns says.
pub trait IoThreadHost: Send + Sync {
    /// Adds a device's loop; the receiver hears when the loop ended.
    fn attach(&self, hosted: Box<dyn HostedLoop>)
        -> std::io::Result<std::sync::mpsc::Receiver<()>>;
    /// The thread's adaptive-polling settings now: poll-max-ns,
    /// poll-grow and poll-shrink.
    fn poll_params(&self) -> [u64; 3];
}

/// A device's iothread, as its configuration carries it.
#[derive(Clone)]
pub struct IoThreadHandle(pub std::sync::Arc<dyn IoThreadHost>);

impl std::fmt::Debug for IoThreadHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IoThreadHandle")
    }
}
