//! QEMU 2.11's run-state machine: which state may follow which.

use qmp::qapi::RunState;

/// The transitions QEMU 2.11 allows (vl.c's table); any other is a bug in
/// the caller and is refused.
const TRANSITIONS: &[(RunState, RunState)] = {
    use RunState::*;
    &[
        (Debug, Running),
        (Debug, FinishMigrate),
        (Debug, Prelaunch),
        (Debug, Suspended),
        (Inmigrate, InternalError),
        (Inmigrate, IoError),
        (Inmigrate, Paused),
        (Inmigrate, Running),
        (Inmigrate, Shutdown),
        (Inmigrate, Suspended),
        (Inmigrate, Watchdog),
        (Inmigrate, GuestPanicked),
        (Inmigrate, FinishMigrate),
        (Inmigrate, Prelaunch),
        (Inmigrate, Postmigrate),
        (Inmigrate, Colo),
        (InternalError, Paused),
        (InternalError, FinishMigrate),
        (InternalError, Prelaunch),
        (IoError, Running),
        (IoError, FinishMigrate),
        (IoError, Prelaunch),
        (Paused, Running),
        (Paused, FinishMigrate),
        (Paused, Postmigrate),
        (Paused, Prelaunch),
        (Paused, Colo),
        (Postmigrate, Running),
        (Postmigrate, FinishMigrate),
        (Postmigrate, Prelaunch),
        (Prelaunch, Running),
        (Prelaunch, FinishMigrate),
        (Prelaunch, Inmigrate),
        (FinishMigrate, Running),
        (FinishMigrate, Paused),
        (FinishMigrate, Postmigrate),
        (FinishMigrate, Prelaunch),
        (FinishMigrate, Colo),
        (RestoreVm, Running),
        (RestoreVm, Prelaunch),
        (Colo, Running),
        (Running, Debug),
        (Running, InternalError),
        (Running, IoError),
        (Running, Paused),
        (Running, FinishMigrate),
        (Running, RestoreVm),
        (Running, SaveVm),
        (Running, Shutdown),
        (Running, Watchdog),
        (Running, GuestPanicked),
        (Running, Colo),
        (Running, Suspended),
        (SaveVm, Running),
        (Shutdown, Paused),
        (Shutdown, FinishMigrate),
        (Shutdown, Prelaunch),
        (Suspended, Running),
        (Suspended, FinishMigrate),
        (Suspended, Prelaunch),
        (Suspended, Colo),
        (Watchdog, Running),
        (Watchdog, FinishMigrate),
        (Watchdog, Prelaunch),
        (Watchdog, Colo),
        (GuestPanicked, Running),
        (GuestPanicked, FinishMigrate),
        (GuestPanicked, Prelaunch),
    ]
};

#[derive(Debug, PartialEq, Eq)]
pub struct InvalidTransition {
    pub from: RunState,
    pub to: RunState,
}

impl std::fmt::Display for InvalidTransition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid runstate transition: '{}' -> '{}'",
            self.from.as_str(),
            self.to.as_str()
        )
    }
}

#[derive(Debug)]
pub struct RunStateMachine {
    state: RunState,
}

impl RunStateMachine {
    pub fn new(initial: RunState) -> RunStateMachine {
        RunStateMachine { state: initial }
    }

    pub fn get(&self) -> RunState {
        self.state
    }

    pub fn is(&self, s: RunState) -> bool {
        self.state == s
    }

    pub fn is_running(&self) -> bool {
        self.state == RunState::Running
    }

    /// States that only a reset leaves (`cont` is refused in them).
    pub fn needs_reset(&self) -> bool {
        matches!(self.state, RunState::InternalError | RunState::Shutdown)
    }

    pub fn allowed(from: RunState, to: RunState) -> bool {
        from == to || TRANSITIONS.contains(&(from, to))
    }

    pub fn set(&mut self, to: RunState) -> Result<(), InvalidTransition> {
        if !Self::allowed(self.state, to) {
            return Err(InvalidTransition {
                from: self.state,
                to,
            });
        }
        self.state = to;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_qemu_shape() {
        let mut m = RunStateMachine::new(RunState::Prelaunch);
        assert!(m.set(RunState::Running).is_ok());
        assert!(m.set(RunState::Shutdown).is_ok());
        assert_eq!(
            m.set(RunState::Running),
            Err(InvalidTransition {
                from: RunState::Shutdown,
                to: RunState::Running
            })
        );
        assert!(m.needs_reset());
        assert!(m.set(RunState::Prelaunch).is_ok());
        // Every state can reach prelaunch or running somehow, except
        // through the table's own dead ends.
        for &(from, to) in TRANSITIONS {
            assert_ne!(from, to);
        }
    }
}
