//! QEMU's firmware configuration device (`fw_cfg`) on its x86 ports:
//! the firmware writes a 16-bit key to 0x510 and reads the item's bytes
//! one at a time from 0x511. Items are the legacy numbered ones (the
//! "QEMU" signature, RAM size, CPU counts, ...) and named files listed in
//! the file directory (key 0x19), as SeaBIOS reads them. The DMA
//! interface is not offered (the feature bit says so), and writes to the
//! data port are ignored, as in QEMU 2.11.

use crate::bus::BusDevice;
use std::collections::BTreeMap;

/// The x86 ports: selector at +0 (16 bits), data at +1 (8 bits).
pub const FW_CFG_IO_BASE: u64 = 0x510;
pub const FW_CFG_IO_LEN: u64 = 2;

pub const KEY_SIGNATURE: u16 = 0x00;
pub const KEY_ID: u16 = 0x01;
pub const KEY_UUID: u16 = 0x02;
pub const KEY_RAM_SIZE: u16 = 0x03;
pub const KEY_NOGRAPHIC: u16 = 0x04;
pub const KEY_NB_CPUS: u16 = 0x05;
pub const KEY_NUMA: u16 = 0x0d;
pub const KEY_BOOT_MENU: u16 = 0x0e;
pub const KEY_MAX_CPUS: u16 = 0x0f;
pub const KEY_FILE_DIR: u16 = 0x19;
/// Files get keys from here on, in the order they are added.
const KEY_FILE_FIRST: u16 = 0x20;
/// The length of a name in a directory entry, NUL included.
const FILE_NAME_LEN: usize = 56;

/// The items and the read position of the current one.
pub struct FwCfg {
    items: BTreeMap<u16, Vec<u8>>,
    files: Vec<(String, u16)>,
    selected: u16,
    offset: usize,
}

impl Default for FwCfg {
    fn default() -> Self {
        FwCfg::new()
    }
}

impl FwCfg {
    /// A device with the signature and the ID (traditional interface
    /// only: bit 0 set, no DMA).
    pub fn new() -> FwCfg {
        let mut f = FwCfg {
            items: BTreeMap::new(),
            files: Vec::new(),
            selected: 0,
            offset: 0,
        };
        f.add_item(KEY_SIGNATURE, b"QEMU".to_vec());
        f.add_item(KEY_ID, 1u32.to_le_bytes().to_vec());
        f.update_directory();
        f
    }

    /// Sets a numbered item (little-endian values, as QEMU stores them).
    pub fn add_item(&mut self, key: u16, data: Vec<u8>) {
        self.items.insert(key, data);
    }

    /// Adds (or replaces) a named file; names longer than the directory
    /// takes are cut, as they would not fit QEMU's either.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) {
        let key = match self.files.iter().find(|(n, _)| n == name) {
            Some((_, k)) => *k,
            None => {
                let k = KEY_FILE_FIRST + self.files.len() as u16;
                self.files.push((name.to_string(), k));
                k
            }
        };
        self.items.insert(key, data);
        self.update_directory();
    }

    /// The directory: a big-endian count, then per file its size, key,
    /// a reserved half-word and the NUL-padded name.
    fn update_directory(&mut self) {
        let mut dir = (self.files.len() as u32).to_be_bytes().to_vec();
        for (name, key) in &self.files {
            let size = self.items.get(key).map_or(0, |d| d.len()) as u32;
            dir.extend_from_slice(&size.to_be_bytes());
            dir.extend_from_slice(&key.to_be_bytes());
            dir.extend_from_slice(&0u16.to_be_bytes());
            let mut n = [0u8; FILE_NAME_LEN];
            let bytes = name.as_bytes();
            let len = bytes.len().min(FILE_NAME_LEN - 1);
            n[..len].copy_from_slice(&bytes[..len]);
            dir.extend_from_slice(&n);
        }
        self.items.insert(KEY_FILE_DIR, dir);
    }

    fn select(&mut self, key: u16) {
        self.selected = key;
        self.offset = 0;
    }

    /// The next byte of the selected item; 0 past its end or for an
    /// item that does not exist.
    fn next_byte(&mut self) -> u8 {
        let b = self
            .items
            .get(&self.selected)
            .and_then(|d| d.get(self.offset))
            .copied()
            .unwrap_or(0);
        self.offset = self.offset.saturating_add(1);
        b
    }
}

impl BusDevice for FwCfg {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            // Wider reads of the data port return consecutive bytes, as
            // QEMU's port handler does.
            1 => data.iter_mut().for_each(|b| *b = self.next_byte()),
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && !data.is_empty() {
            let lo = data[0];
            let hi = data.get(1).copied().unwrap_or(0);
            self.select(u16::from_le_bytes([lo, hi]));
        }
    }
}

impl crate::state::DeviceState for FwCfg {
    fn state_name(&self) -> &'static str {
        "fw_cfg"
    }

    fn save_state(&self) -> Result<Vec<u8>, crate::state::StateError> {
        Err(crate::state::StateError::NotMigratable(
            "fw_cfg cannot be migrated yet".into(),
        ))
    }

    fn load_state(&mut self, _data: &[u8]) -> Result<(), crate::state::StateError> {
        Err(crate::state::StateError::NotMigratable(
            "fw_cfg cannot be migrated yet".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_item(f: &mut FwCfg, key: u16, len: usize) -> Vec<u8> {
        f.write(0, &key.to_le_bytes());
        let mut out = vec![0u8; len];
        for b in out.iter_mut() {
            let mut one = [0u8];
            f.read(1, &mut one);
            *b = one[0];
        }
        out
    }

    #[test]
    fn the_signature_reads_qemu_and_past_the_end_reads_zero() {
        let mut f = FwCfg::new();
        assert_eq!(read_item(&mut f, KEY_SIGNATURE, 6), b"QEMU\0\0");
        assert_eq!(read_item(&mut f, KEY_ID, 4), [1, 0, 0, 0]);
        assert_eq!(read_item(&mut f, 0x1234, 2), [0, 0]);
    }

    #[test]
    fn files_are_listed_in_the_directory_with_their_keys() {
        let mut f = FwCfg::new();
        f.add_file("etc/e820", vec![7; 40]);
        f.add_file("bootorder", vec![]);
        let dir = read_item(&mut f, KEY_FILE_DIR, 4 + 2 * 64);
        assert_eq!(&dir[..4], &2u32.to_be_bytes());
        assert_eq!(&dir[4..8], &40u32.to_be_bytes());
        let key = u16::from_be_bytes([dir[8], dir[9]]);
        assert_eq!(&dir[12..20], b"etc/e820");
        assert_eq!(dir[20], 0);
        assert_eq!(read_item(&mut f, key, 2), [7, 7]);
        assert_eq!(&dir[4 + 64 + 8..4 + 64 + 17], b"bootorder");
    }
}
