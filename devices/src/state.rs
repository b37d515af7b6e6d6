//! Device state for migration, savevm and snapshots: every device says
//! what it holds, as versioned bytes, or that it cannot be migrated.
//!
//! The encoding is little-endian fields in a fixed order behind a
//! one-byte version; readers check every length.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// The device cannot be migrated (yet); the text says why.
    NotMigratable(String),
    /// The bytes do not describe this device's state.
    Malformed(String),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::NotMigratable(why) => write!(f, "{why}"),
            StateError::Malformed(why) => write!(f, "invalid device state: {why}"),
        }
    }
}

impl std::error::Error for StateError {}

/// What every device implements beside bus access and reset.
pub trait DeviceState {
    /// The section name, as in QEMU's migration stream (`serial`, `mc146818rtc`...).
    fn state_name(&self) -> &'static str;
    fn save_state(&self) -> Result<Vec<u8>, StateError>;
    fn load_state(&mut self, data: &[u8]) -> Result<(), StateError>;
}

/// Builds a state blob.
pub struct StateWriter(Vec<u8>);

impl StateWriter {
    pub fn new(version: u8) -> StateWriter {
        StateWriter(vec![version])
    }

    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }

    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn i64(self, v: i64) -> Self {
        self.u64(v as u64)
    }

    pub fn bool(self, v: bool) -> Self {
        self.u8(u8::from(v))
    }

    /// A length-prefixed byte string.
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Reads a state blob written by [`StateWriter`].
pub struct StateReader<'a> {
    data: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> StateReader<'a> {
    /// Checks the version byte.
    pub fn new(
        data: &'a [u8],
        what: &'static str,
        version: u8,
    ) -> Result<StateReader<'a>, StateError> {
        match data.first() {
            Some(v) if *v == version => Ok(StateReader { data, pos: 1, what }),
            Some(v) => Err(StateError::Malformed(format!(
                "{what}: version {v}, expected {version}"
            ))),
            None => Err(StateError::Malformed(format!("{what}: empty"))),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| StateError::Malformed(format!("{}: truncated", self.what)))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, StateError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, StateError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, StateError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub fn i64(&mut self) -> Result<i64, StateError> {
        self.u64().map(|v| v as i64)
    }

    pub fn bool(&mut self) -> Result<bool, StateError> {
        Ok(self.u8()? != 0)
    }

    /// A length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, max: usize) -> Result<&'a [u8], StateError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(StateError::Malformed(format!(
                "{}: {n} bytes where at most {max} fit",
                self.what
            )));
        }
        self.take(n)
    }

    /// Every byte was consumed.
    pub fn end(self) -> Result<(), StateError> {
        if self.pos == self.data.len() {
            Ok(())
        } else {
            Err(StateError::Malformed(format!(
                "{}: trailing bytes",
                self.what
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_restore_what_they_saved() {
        use crate::bus::BusDevice;
        use crate::legacy::Serial16550;
        use crate::platform::NoInterrupt;
        use std::sync::Arc;
        let mut a = Serial16550::new(Arc::new(NoInterrupt), None);
        a.write(3, &[0x80]); // DLAB
        a.write(0, &[0x01]);
        a.write(3, &[0x03]);
        a.write(7, &[0x5a]);
        a.queue_input(b"hi");
        let saved = a.save_state().unwrap();
        let mut b = Serial16550::new(Arc::new(NoInterrupt), None);
        b.load_state(&saved).unwrap();
        let mut v = [0u8];
        b.read(7, &mut v);
        assert_eq!(v[0], 0x5a);
        b.read(0, &mut v);
        assert_eq!(v[0], b'h');
        assert_eq!(b.save_state().unwrap()[..8], a.save_state().unwrap()[..8]);
        // A blob of another device, or cut short, is refused cleanly.
        assert!(b.load_state(&saved[..saved.len() - 1]).is_err());
        assert!(b.load_state(&[9]).is_err());
    }

    #[test]
    fn round_trip_and_hostile_input() {
        let b = StateWriter::new(3)
            .u8(1)
            .u16(2)
            .u32(3)
            .u64(4)
            .bool(true)
            .bytes(b"xyz")
            .finish();
        let mut r = StateReader::new(&b, "t", 3).unwrap();
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u16().unwrap(), 2);
        assert_eq!(r.u32().unwrap(), 3);
        assert_eq!(r.u64().unwrap(), 4);
        assert!(r.bool().unwrap());
        assert_eq!(r.bytes(16).unwrap(), b"xyz");
        r.end().unwrap();
        assert!(StateReader::new(&b, "t", 4).is_err());
        let mut r = StateReader::new(&b[..5], "t", 3).unwrap();
        assert!(r.u8().is_ok() && r.u16().is_ok());
        assert!(r.u32().is_err());
        let huge = StateWriter::new(1).u32(u32::MAX).finish();
        assert!(StateReader::new(&huge, "t", 1).unwrap().bytes(64).is_err());
    }
}
