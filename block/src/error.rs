//! The block layer's errors: QEMU's texts, with the class a QMP answer
//! gives them.

use std::fmt;

/// An error of the block layer, worded as QEMU 2.11 words it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// `GenericError` in QMP.
    Generic(String),
    /// `DeviceNotFound` in QMP.
    DeviceNotFound(String),
    /// A lock held by another process: QEMU's text plus the hint it
    /// prints on the command line (not part of a QMP answer).
    Locked { message: String, hint: &'static str },
}

impl BlockError {
    pub fn generic(m: impl Into<String>) -> BlockError {
        BlockError::Generic(m.into())
    }

    /// The text a QMP answer carries.
    pub fn message(&self) -> &str {
        match self {
            BlockError::Generic(m) | BlockError::DeviceNotFound(m) => m,
            BlockError::Locked { message, .. } => message,
        }
    }

    /// The extra line QEMU prints after the message on the command line.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            BlockError::Locked { hint, .. } => Some(hint),
            _ => None,
        }
    }

    /// Prefixes the message (QEMU's error_prepend).
    pub fn prepend(self, prefix: &str) -> BlockError {
        match self {
            BlockError::Generic(m) => BlockError::Generic(format!("{prefix}{m}")),
            BlockError::DeviceNotFound(m) => BlockError::DeviceNotFound(format!("{prefix}{m}")),
            BlockError::Locked { message, hint } => BlockError::Locked {
                message: format!("{prefix}{message}"),
                hint,
            },
        }
    }
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for BlockError {}

impl From<BlockError> for qmp::Error {
    fn from(e: BlockError) -> qmp::Error {
        match e {
            BlockError::DeviceNotFound(m) => qmp::Error::device_not_found(m),
            other => qmp::Error::generic(other.message().to_string()),
        }
    }
}

/// QEMU's strerror text of an OS error.
pub use qmp::strerror;

pub type Result<T> = std::result::Result<T, BlockError>;
