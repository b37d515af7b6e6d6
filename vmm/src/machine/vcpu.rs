//! vCPU threads: each runs KVM_RUN in a loop, serves port and MMIO exits
//! from the buses, and parks when the machine pauses it. A paused vCPU
//! holds no lock, so the main thread may read or set its registers.

use super::MachineEvent;
use devices::Bus;
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Default)]
struct ControlState {
    pause: bool,
    paused: bool,
    exit: bool,
}

/// What the machine shares with one vCPU thread.
pub struct VcpuShared {
    pub index: usize,
    pub fd: Mutex<VcpuFd>,
    control: Mutex<ControlState>,
    changed: Condvar,
    /// The thread's Linux tid, for query-cpus.
    pub tid: AtomicI32,
    thread: OnceLock<libc::pthread_t>,
}

/// The signal that knocks a vCPU out of KVM_RUN.
fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Installs the kick handler once: it does nothing, but without
/// SA_RESTART it makes KVM_RUN return EINTR.
pub fn install_kick_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: installing a handler that does nothing; the sigaction
        // struct is fully initialised.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(kick_signal(), &sa, std::ptr::null_mut());
        }
    });
}

pub type EventSink = Arc<dyn Fn(MachineEvent) + Send + Sync>;

impl VcpuShared {
    pub fn new(index: usize, fd: VcpuFd, start_paused: bool) -> Arc<VcpuShared> {
        Arc::new(VcpuShared {
            index,
            fd: Mutex::new(fd),
            control: Mutex::new(ControlState {
                pause: start_paused,
                ..ControlState::default()
            }),
            changed: Condvar::new(),
            tid: AtomicI32::new(0),
            thread: OnceLock::new(),
        })
    }

    fn lock_control(&self) -> std::sync::MutexGuard<'_, ControlState> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kick(&self) {
        if let Some(t) = self.thread.get() {
            // SAFETY: the thread exists until `exit` is acknowledged and
            // joined; signalling it has no memory-safety preconditions.
            unsafe { libc::pthread_kill(*t, kick_signal()) };
        }
    }

    /// Stops the vCPU and returns once it runs no guest code.
    pub fn pause(&self) {
        let mut st = self.lock_control();
        st.pause = true;
        while !st.paused && !st.exit && self.thread.get().is_some() {
            drop(st);
            // A kick that lands just before KVM_RUN is lost; repeat it.
            self.kick();
            st = self.lock_control();
            if !st.paused {
                st = self
                    .changed
                    .wait_timeout(st, Duration::from_millis(1))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
        }
    }

    pub fn resume(&self) {
        let mut st = self.lock_control();
        st.pause = false;
        self.changed.notify_all();
        drop(st);
    }

    /// Ends the thread; the caller joins it.
    pub fn stop(&self) {
        let mut st = self.lock_control();
        st.exit = true;
        self.changed.notify_all();
        drop(st);
        self.kick();
    }

    /// Parks while paused; false when the thread should end.
    fn wait_while_paused(&self) -> bool {
        let mut st = self.lock_control();
        loop {
            if st.exit {
                return false;
            }
            if !st.pause {
                st.paused = false;
                return true;
            }
            if !st.paused {
                st.paused = true;
                self.changed.notify_all();
            }
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn io_error_event(index: usize, what: String) -> MachineEvent {
    MachineEvent::InternalError(format!("vCPU {index}: {what}"))
}

/// Starts the thread of one vCPU.
pub fn spawn(
    shared: Arc<VcpuShared>,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    events: EventSink,
    name: String,
) -> std::io::Result<JoinHandle<()>> {
    let handle = std::thread::Builder::new().name(name).spawn({
        let shared = shared.clone();
        move || {
            // SAFETY: gettid has no preconditions.
            shared
                .tid
                .store(unsafe { libc::gettid() }, Ordering::SeqCst);
            run_loop(&shared, &pio, &mmio, &events);
        }
    })?;
    use std::os::unix::thread::JoinHandleExt;
    let _ = shared.thread.set(handle.as_pthread_t());
    Ok(handle)
}

fn run_loop(shared: &VcpuShared, pio: &Bus, mmio: &Bus, events: &EventSink) {
    loop {
        if !shared.wait_while_paused() {
            return;
        }
        let mut fd = shared.fd.lock().unwrap_or_else(|e| e.into_inner());
        let event = match fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                if !pio.read(u64::from(port), data) {
                    data.fill(0xff);
                }
                None
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                pio.write(u64::from(port), data);
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !mmio.read(addr, data) {
                    data.fill(0xff);
                }
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                mmio.write(addr, data);
                None
            }
            Ok(VcpuExit::Hlt) | Ok(VcpuExit::Intr) | Ok(VcpuExit::IrqWindowOpen) => None,
            // A triple fault: PC hardware resets.
            Ok(VcpuExit::Shutdown) => Some(MachineEvent::GuestReset),
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => Some(MachineEvent::GuestReset),
                _ => Some(MachineEvent::GuestShutdown),
            },
            Ok(VcpuExit::FailEntry(reason, cpu)) => Some(io_error_event(
                shared.index,
                format!("KVM entry failed, hardware error {reason:#x} on host cpu {cpu}"),
            )),
            Ok(VcpuExit::InternalError) => {
                // SAFETY: KVM filled the `internal` member for this exit reason.
                let sub = unsafe { fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                Some(io_error_event(
                    shared.index,
                    format!("KVM internal error. Suberror: {sub}"),
                ))
            }
            Ok(other) => Some(io_error_event(
                shared.index,
                format!("unhandled exit {other:?}"),
            )),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => Some(io_error_event(shared.index, format!("KVM_RUN failed: {e}"))),
        };
        drop(fd);
        if let Some(event) = event {
            let stop = matches!(event, MachineEvent::InternalError(_));
            events(event);
            if stop {
                // The machine stops; this vCPU must not run on meanwhile.
                let mut st = shared.lock_control();
                st.pause = true;
            }
        }
    }
}
