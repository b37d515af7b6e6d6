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

/// The `strerror` text of an OS error, as QEMU appends it to its
/// messages (`: No such file or directory`): Rust's text without its
/// " (os error N)".
pub fn strerror(e: &std::io::Error) -> String {
    let text = e.to_string();
    match e.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .map_or_else(|| text.clone(), str::to_string),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn strerror_is_the_c_text() {
        let e = std::io::Error::from_raw_os_error(2);
        assert_eq!(super::strerror(&e), "No such file or directory");
        let other = std::io::Error::other("plain");
        assert_eq!(super::strerror(&other), "plain");
    }
}
