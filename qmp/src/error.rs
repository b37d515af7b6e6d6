//! The error a command answers with: a QAPI error class and a text.

use crate::qapi::QapiErrorClass;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub class: QapiErrorClass,
    pub desc: String,
}

impl Error {
    pub fn new(class: QapiErrorClass, desc: impl Into<String>) -> Error {
        Error {
            class,
            desc: desc.into(),
        }
    }

    /// `GenericError`, the class of most errors.
    pub fn generic(desc: impl Into<String>) -> Error {
        Error::new(QapiErrorClass::GenericError, desc)
    }

    pub fn command_not_found(desc: impl Into<String>) -> Error {
        Error::new(QapiErrorClass::CommandNotFound, desc)
    }

    pub fn device_not_found(desc: impl Into<String>) -> Error {
        Error::new(QapiErrorClass::DeviceNotFound, desc)
    }

    /// The `{"class": ..., "desc": ...}` object of an error response.
    pub fn to_qobject(&self) -> serde_json::Value {
        serde_json::json!({"class": self.class.as_str(), "desc": self.desc})
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.desc)
    }
}

impl std::error::Error for Error {}
