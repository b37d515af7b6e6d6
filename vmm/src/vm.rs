//! The virtual machine as the control plane sees it: run state, requests
//! that the main loop carries out (reset, shutdown, power-down), events,
//! and the KVM machine when there is one (`-machine none` has none).

use crate::machine::{Machine, MachineEvent};
use crate::runstate::{InvalidTransition, RunStateMachine};
use devices::PlatformRequest;
use qmp::qapi::{Event, ResetEvent, RtcChangeEvent, RunState, ShutdownEvent};
use std::time::SystemTime;

/// Why a shutdown or reset was asked for (QEMU's ShutdownCause).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// `quit`, `system_reset` and friends.
    HostQmp,
    /// SIGINT, SIGTERM, SIGHUP.
    HostSignal,
    /// The guest asked (ACPI, i8042, triple fault).
    Guest,
}

impl Cause {
    fn by_guest(self) -> bool {
        self == Cause::Guest
    }
}

#[derive(Default)]
struct Requests {
    shutdown: Option<Cause>,
    reset: Option<Cause>,
    powerdown: bool,
}

/// What the main loop should do after the requests are processed.
#[derive(Debug, PartialEq, Eq)]
pub enum LoopControl {
    Continue,
    Exit(i32),
}

pub struct Vm {
    runstate: RunStateMachine,
    requests: Requests,
    /// Events not yet handed to the monitors.
    events: Vec<(Event, SystemTime)>,
    pub machine: Option<Machine>,
    /// `-no-shutdown`: stay in state `shutdown` instead of exiting.
    pub no_shutdown: bool,
    /// `-no-reboot`: a reset request shuts down instead.
    pub no_reboot: bool,
    /// With `-incoming`, `cont` only marks the VM to start after migration.
    pub autostart: bool,
    /// QEMU's virtual clock: time spent running before the current run,
    /// and when the current run began.
    ran: std::time::Duration,
    running_since: Option<std::time::Instant>,
}

impl Vm {
    pub fn new(start_paused: bool, machine: Option<Machine>) -> Vm {
        Vm {
            runstate: RunStateMachine::new(RunState::Prelaunch),
            requests: Requests::default(),
            events: Vec::new(),
            machine,
            no_shutdown: false,
            no_reboot: false,
            autostart: !start_paused,
            ran: std::time::Duration::ZERO,
            running_since: None,
        }
    }

    /// Nanoseconds the guest has run (QEMU_CLOCK_VIRTUAL): the clock
    /// stands still while the VM is stopped.
    pub fn vm_clock_ns(&self) -> u64 {
        let now = self
            .running_since
            .map_or(std::time::Duration::ZERO, |t| t.elapsed());
        (self.ran + now).as_nanos() as u64
    }

    pub fn runstate(&self) -> RunState {
        self.runstate.get()
    }

    pub fn is_running(&self) -> bool {
        self.runstate.is_running()
    }

    pub fn emit(&mut self, event: Event) {
        self.events.push((event, SystemTime::now()));
    }

    pub fn take_events(&mut self) -> Vec<(Event, SystemTime)> {
        std::mem::take(&mut self.events)
    }

    fn set_state(&mut self, to: RunState) -> Result<(), InvalidTransition> {
        self.runstate.set(to)?;
        let running = self.runstate.is_running();
        match (running, self.running_since) {
            (true, None) => self.running_since = Some(std::time::Instant::now()),
            (false, Some(t)) => {
                self.ran += t.elapsed();
                self.running_since = None;
            }
            _ => {}
        }
        Ok(())
    }

    /// Starts the guest at the end of start-up, unless `-S` was given.
    pub fn start_if_autostart(&mut self) -> Result<(), InvalidTransition> {
        if self.autostart && !self.runstate.is(RunState::Inmigrate) {
            self.vm_start()?;
        }
        Ok(())
    }

    /// Stops the guest into `state`; nothing happens unless it runs.
    pub fn vm_stop(&mut self, state: RunState) -> Result<(), InvalidTransition> {
        if self.runstate.is_running() {
            if let Some(m) = self.machine.as_mut() {
                m.pause_all();
                m.vm_stopped();
            }
            self.set_state(state)?;
            self.emit(Event::Stop);
        }
        Ok(())
    }

    /// Resumes the guest; emits RESUME unless it already runs.
    pub fn vm_start(&mut self) -> Result<(), InvalidTransition> {
        if self.runstate.is_running() {
            return Ok(());
        }
        self.set_state(RunState::Running)?;
        self.emit(Event::Resume);
        if let Some(m) = self.machine.as_mut() {
            // Devices hear of it before any vCPU runs (QEMU notifies its
            // run-state handlers before resuming vCPUs): otherwise a
            // request that fails and stops the VM in the gap would be
            // taken for one from before the stop and retried at once.
            m.vm_running();
            m.resume_all();
        }
        Ok(())
    }

    pub fn needs_reset(&self) -> bool {
        self.runstate.needs_reset()
    }

    pub fn request_shutdown(&mut self, cause: Cause) {
        self.requests.shutdown = Some(cause);
    }

    pub fn request_reset(&mut self, cause: Cause) {
        if self.no_reboot {
            self.requests.shutdown = Some(cause);
        } else {
            self.requests.reset = Some(cause);
        }
    }

    pub fn request_powerdown(&mut self) {
        self.requests.powerdown = true;
    }

    /// Carries out pending requests, as QEMU's main loop does between
    /// iterations: shutdown first, then reset, then power-down.
    pub fn process_requests(&mut self) -> Result<LoopControl, InvalidTransition> {
        if let Some(cause) = self.requests.shutdown.take() {
            self.emit(Event::Shutdown(ShutdownEvent {
                guest: cause.by_guest(),
            }));
            if self.no_shutdown {
                self.vm_stop(RunState::Shutdown)?;
            } else {
                return Ok(LoopControl::Exit(0));
            }
        }
        if let Some(cause) = self.requests.reset.take() {
            // A reset rebuilds the vCPUs, running or not as before.
            if let Some(m) = self.machine.as_mut() {
                m.reset();
            }
            self.emit(Event::Reset(ResetEvent {
                guest: cause.by_guest(),
            }));
            if !self.runstate.is(RunState::Running) && !self.runstate.is(RunState::Inmigrate) {
                self.set_state(RunState::Prelaunch)?;
            }
        }
        if std::mem::take(&mut self.requests.powerdown) {
            self.emit(Event::Powerdown);
            if let Some(m) = self.machine.as_ref() {
                m.press_power_button();
            }
        }
        Ok(LoopControl::Continue)
    }
}

impl Vm {
    /// Acts on what the machine reported from its vCPU threads.
    pub fn handle_machine_event(
        &mut self,
        event: MachineEvent,
    ) -> Result<LoopControl, InvalidTransition> {
        match event {
            MachineEvent::GuestReset | MachineEvent::Platform(PlatformRequest::Reset) => {
                self.request_reset(Cause::Guest);
            }
            MachineEvent::GuestShutdown | MachineEvent::Platform(PlatformRequest::Shutdown) => {
                self.request_shutdown(Cause::Guest);
            }
            MachineEvent::Platform(PlatformRequest::DebugExit(v)) => {
                // As QEMU's isa-debug-exit: the process ends at once.
                return Ok(LoopControl::Exit(((v << 1) | 1) as i32));
            }
            MachineEvent::Platform(PlatformRequest::Suspend) => {
                if self.runstate.is_running() {
                    if let Some(m) = self.machine.as_mut() {
                        m.pause_all();
                    }
                    self.set_state(RunState::Suspended)?;
                    self.emit(Event::Suspend);
                }
            }
            MachineEvent::Platform(PlatformRequest::RtcChange(offset)) => {
                self.emit(Event::RtcChange(RtcChangeEvent { offset }));
            }
            MachineEvent::InternalError(message) => {
                eprintln!("{message}");
                self.vm_stop(RunState::InternalError)?;
            }
            MachineEvent::Block(event) => self.emit(event),
            // The main loop runs it: it owns the block graph.
            MachineEvent::CommitAll => {}
            MachineEvent::BlockIoError { event, stop } => {
                // The event first: a STOP always follows it.
                self.emit(Event::BlockIoError(event));
                if stop {
                    self.vm_stop(RunState::IoError)?;
                }
            }
        }
        Ok(LoopControl::Continue)
    }

    /// `system_wakeup`: a suspended guest runs again. As QEMU 2.11 does,
    /// the wake-up resets the machine (firmware or kernel follow their
    /// resume path from there), without a RESET event, then emits WAKEUP.
    pub fn wakeup(&mut self) -> Result<(), InvalidTransition> {
        if !self.runstate.is(RunState::Suspended) {
            return Ok(());
        }
        self.set_state(RunState::Running)?;
        if let Some(m) = self.machine.as_mut() {
            m.reset();
            m.wake();
            m.resume_all();
        }
        self.emit(Event::Wakeup);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(vm: &mut Vm) -> Vec<&'static str> {
        vm.take_events().iter().map(|(e, _)| e.name()).collect()
    }

    #[test]
    fn reset_while_paused_goes_to_prelaunch() {
        let mut vm = Vm::new(false, None);
        vm.start_if_autostart().unwrap();
        vm.vm_stop(RunState::Paused).unwrap();
        vm.request_reset(Cause::HostQmp);
        assert_eq!(vm.process_requests(), Ok(LoopControl::Continue));
        assert_eq!(vm.runstate(), RunState::Prelaunch);
        assert_eq!(names(&mut vm), ["RESUME", "STOP", "RESET"]);
    }

    #[test]
    fn no_reboot_turns_reset_into_shutdown() {
        let mut vm = Vm::new(false, None);
        vm.no_reboot = true;
        vm.request_reset(Cause::HostQmp);
        assert_eq!(vm.process_requests(), Ok(LoopControl::Exit(0)));
    }
}
