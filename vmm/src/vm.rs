//! The virtual machine as the control plane sees it: run state, requests
//! that the main loop carries out (reset, shutdown, power-down), events,
//! and the vCPUs behind a small trait so that the KVM machine plugs in.

use crate::runstate::{InvalidTransition, RunStateMachine};
use qmp::qapi::{Event, ResetEvent, RunState, ShutdownEvent};
use std::time::SystemTime;

/// What the run state needs from the vCPUs. Until the KVM machine lands
/// there are none and every call is immediate.
pub trait Vcpus {
    /// Stops every vCPU; returns once none runs guest code.
    fn pause_all(&mut self);
    fn resume_all(&mut self);
    /// Puts every vCPU and device back in its power-on state.
    fn reset(&mut self);
}

/// A machine without vCPUs (the control plane alone).
pub struct NoVcpus;

impl Vcpus for NoVcpus {
    fn pause_all(&mut self) {}
    fn resume_all(&mut self) {}
    fn reset(&mut self) {}
}

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
    vcpus: Box<dyn Vcpus>,
    /// `-no-shutdown`: stay in state `shutdown` instead of exiting.
    pub no_shutdown: bool,
    /// `-no-reboot`: a reset request shuts down instead.
    pub no_reboot: bool,
    /// With `-incoming`, `cont` only marks the VM to start after migration.
    pub autostart: bool,
}

impl Vm {
    pub fn new(start_paused: bool, vcpus: Box<dyn Vcpus>) -> Vm {
        Vm {
            runstate: RunStateMachine::new(RunState::Prelaunch),
            requests: Requests::default(),
            events: Vec::new(),
            vcpus,
            no_shutdown: false,
            no_reboot: false,
            autostart: !start_paused,
        }
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
        self.runstate.set(to)
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
            self.vcpus.pause_all();
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
        self.vcpus.resume_all();
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
            self.vcpus.pause_all();
            self.vcpus.reset();
            self.emit(Event::Reset(ResetEvent {
                guest: cause.by_guest(),
            }));
            self.vcpus.resume_all();
            if !self.runstate.is(RunState::Running) && !self.runstate.is(RunState::Inmigrate) {
                self.set_state(RunState::Prelaunch)?;
            }
        }
        if std::mem::take(&mut self.requests.powerdown) {
            // The ACPI power button reaches the guest with the KVM machine.
            self.emit(Event::Powerdown);
        }
        Ok(LoopControl::Continue)
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
        let mut vm = Vm::new(false, Box::new(NoVcpus));
        vm.start_if_autostart().unwrap();
        vm.vm_stop(RunState::Paused).unwrap();
        vm.request_reset(Cause::HostQmp);
        assert_eq!(vm.process_requests(), Ok(LoopControl::Continue));
        assert_eq!(vm.runstate(), RunState::Prelaunch);
        assert_eq!(names(&mut vm), ["RESUME", "STOP", "RESET"]);
    }

    #[test]
    fn no_reboot_turns_reset_into_shutdown() {
        let mut vm = Vm::new(false, Box::new(NoVcpus));
        vm.no_reboot = true;
        vm.request_reset(Cause::HostQmp);
        assert_eq!(vm.process_requests(), Ok(LoopControl::Exit(0)));
    }
}
