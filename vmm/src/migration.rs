//! Migration as the monitor sees it: the run's status, the capabilities
//! and the parameters, with QEMU 2.11's defaults, checks and texts.
//!
//! Orchestrators set these before they migrate (libvirt probes the
//! capabilities at start-up), so they are held and checked here although
//! the transfer itself (`migrate`, `migrate-incoming`) has not landed:
//! until it does, no migration ever starts and the status stays `none`.

use qmp::qapi::{
    MigrateSetParameters, MigrationCapability, MigrationCapabilityStatus, MigrationInfo,
    MigrationParameters, MigrationStatus, StrOrNull,
};
use std::fmt;

/// The guest page size the XBZRLE cache is counted in.
const TARGET_PAGE_SIZE: u64 = 4096;
/// The longest downtime `downtime-limit` may ask for, in seconds.
const MAX_DOWNTIME_SECONDS: i64 = 2000;

/// Why a migration setting was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum MigrationError {
    /// A migration is in its setup or active phase.
    Active,
    /// QEMU's "Parameter 'NAME' expects WHAT".
    InvalidValue {
        name: &'static str,
        expects: &'static str,
    },
    /// `max-bandwidth` outside what a size_t holds.
    Bandwidth,
    /// `downtime-limit` above the maximum, in milliseconds.
    DowntimeMs,
    /// migrate_set_downtime's argument outside 0..2000 seconds.
    DowntimeSeconds,
    /// postcopy-ram together with compress.
    PostcopyWithCompression,
    /// migrate-start-postcopy without the postcopy-ram capability.
    PostcopyNotEnabled,
    /// migrate-start-postcopy before any migration.
    PostcopyBeforeStart,
    /// migrate-continue from a state the migration is not in.
    NotInState(MigrationStatus),
}

impl fmt::Display for MigrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrationError::Active => write!(f, "There's a migration process in progress"),
            MigrationError::InvalidValue { name, expects } => {
                write!(f, "Parameter '{name}' expects {expects}")
            }
            MigrationError::Bandwidth => write!(
                f,
                "Parameter 'max_bandwidth' expects an integer in the range of 0 to {} bytes/second",
                usize::MAX
            ),
            MigrationError::DowntimeMs => write!(
                f,
                "Parameter 'downtime_limit' expects an integer in the range of 0 to {} milliseconds",
                MAX_DOWNTIME_SECONDS * 1000
            ),
            MigrationError::DowntimeSeconds => write!(
                f,
                "Parameter 'downtime_limit' expects an integer in the range of 0 to \
                 {MAX_DOWNTIME_SECONDS} seconds"
            ),
            MigrationError::PostcopyWithCompression => {
                write!(f, "Postcopy is not currently compatible with compression")
            }
            MigrationError::PostcopyNotEnabled => write!(
                f,
                "Enable postcopy with migrate_set_capability before the start of migration"
            ),
            MigrationError::PostcopyBeforeStart => write!(
                f,
                "Postcopy must be started after migration has been started"
            ),
            MigrationError::NotInState(s) => {
                write!(f, "Migration not in expected state: {}", s.as_str())
            }
        }
    }
}

impl std::error::Error for MigrationError {}

/// The migration state of this VMM: what QEMU keeps in its one
/// MigrationState object.
pub struct Migration {
    status: MigrationStatus,
    /// Indexed as `MigrationCapability::ALL`.
    capabilities: Vec<bool>,
    /// Every member present.
    parameters: MigrationParameters,
}

impl Default for Migration {
    fn default() -> Self {
        Migration {
            status: MigrationStatus::None,
            capabilities: vec![false; MigrationCapability::ALL.len()],
            parameters: MigrationParameters {
                compress_level: Some(1),
                compress_threads: Some(8),
                decompress_threads: Some(2),
                cpu_throttle_initial: Some(20),
                cpu_throttle_increment: Some(10),
                tls_creds: Some(String::new()),
                tls_hostname: Some(String::new()),
                max_bandwidth: Some(32 << 20),
                downtime_limit: Some(300),
                x_checkpoint_delay: Some(200),
                block_incremental: Some(false),
                x_multifd_channels: Some(2),
                x_multifd_page_count: Some(16),
                xbzrle_cache_size: Some(64 << 20),
            },
        }
    }
}

fn capability_index(cap: MigrationCapability) -> usize {
    MigrationCapability::ALL
        .iter()
        .position(|c| *c == cap)
        .unwrap_or_default()
}

/// Whether `status` is one a migration sets up or runs in, when its
/// settings may not change.
fn is_setup_or_active(status: MigrationStatus) -> bool {
    matches!(
        status,
        MigrationStatus::Setup
            | MigrationStatus::Active
            | MigrationStatus::PostcopyActive
            | MigrationStatus::PreSwitchover
            | MigrationStatus::Device
    )
}

/// A null `tls-creds`/`tls-hostname` means the empty string, as in QEMU.
fn str_or_empty(v: StrOrNull) -> String {
    match v {
        StrOrNull::S(s) => s,
        StrOrNull::N(()) => String::new(),
    }
}

/// QEMU's range checks of a complete parameter set, in its order.
fn check_parameters(p: &MigrationParameters) -> Result<(), MigrationError> {
    let invalid = |name, expects| MigrationError::InvalidValue { name, expects };
    const TO_255: &str = "is invalid, it should be in the range of 1 to 255";
    const TO_99: &str = "an integer in the range of 1 to 99";
    let ranges = [
        (
            p.compress_level,
            0,
            9,
            invalid(
                "compress_level",
                "is invalid, it should be in the range of 0 to 9",
            ),
        ),
        (
            p.compress_threads,
            1,
            255,
            invalid("compress_threads", TO_255),
        ),
        (
            p.decompress_threads,
            1,
            255,
            invalid("decompress_threads", TO_255),
        ),
        (
            p.cpu_throttle_initial,
            1,
            99,
            invalid("cpu_throttle_initial", TO_99),
        ),
        (
            p.cpu_throttle_increment,
            1,
            99,
            invalid("cpu_throttle_increment", TO_99),
        ),
        (p.max_bandwidth, 0, i64::MAX, MigrationError::Bandwidth),
        (
            p.downtime_limit,
            0,
            MAX_DOWNTIME_SECONDS * 1000,
            MigrationError::DowntimeMs,
        ),
        (
            p.x_checkpoint_delay,
            0,
            i64::MAX,
            invalid("x_checkpoint_delay", "is invalid, it should be positive"),
        ),
        (
            p.x_multifd_channels,
            1,
            255,
            invalid("multifd_channels", TO_255),
        ),
        (
            p.x_multifd_page_count,
            1,
            10000,
            invalid(
                "multifd_page_count",
                "is invalid, it should be in the range of 1 to 10000",
            ),
        ),
    ];
    for (value, lo, hi, error) in ranges {
        if value.is_some_and(|v| !(lo..=hi).contains(&v)) {
            return Err(error);
        }
    }
    if p.xbzrle_cache_size
        .is_some_and(|v| v < TARGET_PAGE_SIZE || !v.is_power_of_two() || v > i64::MAX as u64)
    {
        return Err(invalid(
            "xbzrle_cache_size",
            "is invalid, it should be bigger than target page size and a power of two",
        ));
    }
    Ok(())
}

impl Migration {
    /// query-migrate: nothing at all before the first migration.
    pub fn info(&self) -> MigrationInfo {
        MigrationInfo {
            status: (self.status != MigrationStatus::None).then_some(self.status),
            ram: None,
            disk: None,
            xbzrle_cache: None,
            total_time: None,
            expected_downtime: None,
            downtime: None,
            setup_time: None,
            cpu_throttle_percentage: None,
            error_desc: None,
        }
    }

    /// query-migrate-capabilities: every capability, in the schema's
    /// order.
    pub fn capabilities(&self) -> Vec<MigrationCapabilityStatus> {
        MigrationCapability::ALL
            .iter()
            .zip(&self.capabilities)
            .map(|(c, s)| MigrationCapabilityStatus {
                capability: *c,
                state: *s,
            })
            .collect()
    }

    pub fn capability(&self, cap: MigrationCapability) -> bool {
        self.capabilities[capability_index(cap)]
    }

    /// migrate-set-capabilities: all of `list` or, when the result would
    /// be refused, none of it.
    pub fn set_capabilities(
        &mut self,
        list: &[MigrationCapabilityStatus],
    ) -> Result<(), MigrationError> {
        if is_setup_or_active(self.status) {
            return Err(MigrationError::Active);
        }
        let mut caps = self.capabilities.clone();
        for c in list {
            caps[capability_index(c.capability)] = c.state;
        }
        let on = |c| caps[capability_index(c)];
        if on(MigrationCapability::PostcopyRam) && on(MigrationCapability::Compress) {
            return Err(MigrationError::PostcopyWithCompression);
        }
        self.capabilities = caps;
        Ok(())
    }

    /// query-migrate-parameters: every parameter.
    pub fn parameters(&self) -> MigrationParameters {
        self.parameters.clone()
    }

    /// migrate-set-parameters: the given members, checked together with
    /// the others; all or nothing.
    pub fn set_parameters(&mut self, set: MigrateSetParameters) -> Result<(), MigrationError> {
        let mut p = self.parameters.clone();
        fn put<T>(dst: &mut Option<T>, v: Option<T>) {
            if v.is_some() {
                *dst = v;
            }
        }
        put(&mut p.compress_level, set.compress_level);
        put(&mut p.compress_threads, set.compress_threads);
        put(&mut p.decompress_threads, set.decompress_threads);
        put(&mut p.cpu_throttle_initial, set.cpu_throttle_initial);
        put(&mut p.cpu_throttle_increment, set.cpu_throttle_increment);
        put(&mut p.tls_creds, set.tls_creds.map(str_or_empty));
        put(&mut p.tls_hostname, set.tls_hostname.map(str_or_empty));
        put(&mut p.max_bandwidth, set.max_bandwidth);
        put(&mut p.downtime_limit, set.downtime_limit);
        put(&mut p.x_checkpoint_delay, set.x_checkpoint_delay);
        put(&mut p.block_incremental, set.block_incremental);
        put(&mut p.x_multifd_channels, set.x_multifd_channels);
        put(&mut p.x_multifd_page_count, set.x_multifd_page_count);
        put(&mut p.xbzrle_cache_size, set.xbzrle_cache_size);
        check_parameters(&p)?;
        self.parameters = p;
        Ok(())
    }

    fn set_one(&mut self, f: impl FnOnce(&mut MigrateSetParameters)) -> Result<(), MigrationError> {
        let mut set = MigrateSetParameters {
            compress_level: None,
            compress_threads: None,
            decompress_threads: None,
            cpu_throttle_initial: None,
            cpu_throttle_increment: None,
            tls_creds: None,
            tls_hostname: None,
            max_bandwidth: None,
            downtime_limit: None,
            x_checkpoint_delay: None,
            block_incremental: None,
            x_multifd_channels: None,
            x_multifd_page_count: None,
            xbzrle_cache_size: None,
        };
        f(&mut set);
        self.set_parameters(set)
    }

    /// query-migrate-cache-size: the XBZRLE cache size in bytes.
    pub fn cache_size(&self) -> i64 {
        self.parameters
            .xbzrle_cache_size
            .map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX))
    }

    /// migrate-set-cache-size: the `xbzrle-cache-size` parameter. A
    /// negative size is refused as one that is not a power of two.
    pub fn set_cache_size(&mut self, bytes: i64) -> Result<(), MigrationError> {
        let size = u64::try_from(bytes).unwrap_or(0);
        self.set_one(|p| p.xbzrle_cache_size = Some(size))
    }

    /// migrate_set_speed: the `max-bandwidth` parameter.
    pub fn set_speed(&mut self, bytes_per_second: i64) -> Result<(), MigrationError> {
        self.set_one(|p| p.max_bandwidth = Some(bytes_per_second))
    }

    /// migrate_set_downtime: the `downtime-limit` parameter, given in
    /// seconds.
    pub fn set_downtime(&mut self, seconds: f64) -> Result<(), MigrationError> {
        // The negated test also refuses NaN.
        if !(0.0..=MAX_DOWNTIME_SECONDS as f64).contains(&seconds) {
            return Err(MigrationError::DowntimeSeconds);
        }
        let ms = (seconds * 1000.0) as i64;
        self.set_one(|p| p.downtime_limit = Some(ms))
    }

    /// migrate_cancel: ends a migration in progress; nothing otherwise.
    pub fn cancel(&mut self) {
        if is_setup_or_active(self.status) {
            self.status = MigrationStatus::Cancelling;
        }
    }

    /// migrate-continue: goes on from a pause in `state`.
    pub fn resume_from(&mut self, state: MigrationStatus) -> Result<(), MigrationError> {
        if self.status != state {
            return Err(MigrationError::NotInState(self.status));
        }
        Ok(())
    }

    /// migrate-start-postcopy: refused without the capability or before
    /// a migration has started.
    pub fn start_postcopy(&mut self) -> Result<(), MigrationError> {
        if !self.capability(MigrationCapability::PostcopyRam) {
            return Err(MigrationError::PostcopyNotEnabled);
        }
        if self.status == MigrationStatus::None {
            return Err(MigrationError::PostcopyBeforeStart);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(c: MigrationCapability, state: bool) -> MigrationCapabilityStatus {
        MigrationCapabilityStatus {
            capability: c,
            state,
        }
    }

    #[test]
    fn a_refused_capability_list_changes_nothing() {
        let mut m = Migration::default();
        m.set_capabilities(&[cap(MigrationCapability::Compress, true)])
            .unwrap();
        let e = m
            .set_capabilities(&[
                cap(MigrationCapability::Events, true),
                cap(MigrationCapability::PostcopyRam, true),
            ])
            .unwrap_err();
        assert_eq!(e, MigrationError::PostcopyWithCompression);
        assert!(!m.capability(MigrationCapability::Events));
        // Turning compress off in the same list makes it acceptable.
        m.set_capabilities(&[
            cap(MigrationCapability::Compress, false),
            cap(MigrationCapability::PostcopyRam, true),
        ])
        .unwrap();
        assert!(m.capability(MigrationCapability::PostcopyRam));
    }

    #[test]
    fn parameters_are_checked_together_and_applied_whole() {
        let mut m = Migration::default();
        let e = m
            .set_one(|p| {
                p.compress_level = Some(5);
                p.cpu_throttle_initial = Some(100);
            })
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Parameter 'cpu_throttle_initial' expects an integer in the range of 1 to 99"
        );
        assert_eq!(m.parameters().compress_level, Some(1));
        m.set_one(|p| p.tls_creds = Some(StrOrNull::S("tls0".into())))
            .unwrap();
        m.set_one(|p| p.tls_creds = Some(StrOrNull::N(()))).unwrap();
        assert_eq!(m.parameters().tls_creds.as_deref(), Some(""));
    }

    #[test]
    fn cache_size_must_be_a_power_of_two_of_at_least_a_page() {
        let mut m = Migration::default();
        for bad in [-4096, 0, 2048, 3 << 20] {
            assert!(m.set_cache_size(bad).is_err(), "{bad}");
        }
        m.set_cache_size(1 << 20).unwrap();
        assert_eq!(m.cache_size(), 1 << 20);
    }

    #[test]
    fn downtime_in_seconds_becomes_milliseconds() {
        let mut m = Migration::default();
        m.set_downtime(0.5).unwrap();
        assert_eq!(m.parameters().downtime_limit, Some(500));
        for bad in [-1.0, 2000.5, f64::NAN] {
            assert_eq!(
                m.set_downtime(bad).unwrap_err(),
                MigrationError::DowntimeSeconds
            );
        }
    }
}
