//! The migration stream, precopy with KVM dirty logging, per-device state,
//! transports, capabilities and parameters, and guest memory dump.
//!
//! Arrives with the migration issue.
