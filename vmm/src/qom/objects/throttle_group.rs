//! `throttle-group`: I/O limits shared by the block devices that join the
//! group. The limits are set one by one (`x-bps-total`, ...) before the
//! group exists, or all at once through `limits`, and checked as QEMU's
//! throttle_is_valid checks them.

use crate::qom::props::{Access, ObjectState, PropInfo, PropInput};
use crate::qom::tree::Tree;
use qmp::qapi::ThrottleLimits;
use qmp::visit::ToQObject;
use qmp::Error;
use serde_json::{Map, Value};
use std::any::Any;

/// The largest rate a bucket may have.
const THROTTLE_VALUE_MAX: i64 = 1_000_000_000_000_000;

/// The six buckets: (bps|iops) x (total|read|write).
const BUCKETS: &[&str] = &[
    "iops-total",
    "iops-read",
    "iops-write",
    "bps-total",
    "bps-read",
    "bps-write",
];

/// One bucket's settings.
#[derive(Clone, Copy)]
struct Bucket {
    avg: i64,
    max: i64,
    burst_length: i64,
}

pub struct ThrottleGroup {
    buckets: [Bucket; 6],
    iops_size: i64,
    /// Set once object-add completes: from then on only `limits`
    /// changes the configuration, in one step.
    initialized: bool,
}

/// Which setting a limit name (without `x-`) addresses.
enum Setting {
    Avg(usize),
    Max(usize),
    BurstLength(usize),
    IopsSize,
}

fn setting(name: &str) -> Option<Setting> {
    if name == "iops-size" {
        return Some(Setting::IopsSize);
    }
    for (i, b) in BUCKETS.iter().enumerate() {
        match name.strip_prefix(b) {
            Some("") => return Some(Setting::Avg(i)),
            Some("-max") => return Some(Setting::Max(i)),
            Some("-max-length") => return Some(Setting::BurstLength(i)),
            _ => {}
        }
    }
    None
}

/// Every limit name, in ThrottleLimits' order.
fn limit_names() -> Vec<String> {
    let mut out = Vec::new();
    for b in BUCKETS {
        out.push(b.to_string());
        out.push(format!("{b}-max"));
        out.push(format!("{b}-max-length"));
    }
    out.push("iops-size".to_string());
    out
}

impl ThrottleGroup {
    pub fn new() -> ThrottleGroup {
        ThrottleGroup {
            buckets: [Bucket {
                avg: 0,
                max: 0,
                burst_length: 1,
            }; 6],
            iops_size: 0,
            initialized: false,
        }
    }

    fn value(&self, name: &str) -> i64 {
        match setting(name) {
            Some(Setting::Avg(i)) => self.buckets[i].avg,
            Some(Setting::Max(i)) => self.buckets[i].max,
            Some(Setting::BurstLength(i)) => self.buckets[i].burst_length,
            Some(Setting::IopsSize) | None => self.iops_size,
        }
    }

    fn apply(&mut self, name: &str, value: i64) -> Result<(), Error> {
        match setting(name) {
            Some(Setting::Avg(i)) => self.buckets[i].avg = value,
            Some(Setting::Max(i)) => self.buckets[i].max = value,
            Some(Setting::BurstLength(i)) => {
                if value > i64::from(u32::MAX) {
                    return Err(Error::generic(format!(
                        "{name} value must be in the range [0, {}]",
                        u32::MAX
                    )));
                }
                self.buckets[i].burst_length = value;
            }
            Some(Setting::IopsSize) | None => self.iops_size = value,
        }
        Ok(())
    }

    /// QEMU's throttle_is_valid.
    fn check(&self) -> Result<(), Error> {
        let [ops_total, ops_read, ops_write, bps_total, bps_read, bps_write] = self.buckets;
        let mixed = |t: Bucket, r: Bucket, w: Bucket| {
            (t.avg != 0 && (r.avg != 0 || w.avg != 0)) || (t.max != 0 && (r.max != 0 || w.max != 0))
        };
        if mixed(bps_total, bps_read, bps_write) || mixed(ops_total, ops_read, ops_write) {
            return Err(Error::generic(
                "bps/iops/max total values and read/write values cannot be used at the same time",
            ));
        }
        if self.iops_size != 0 && ops_total.avg == 0 && ops_read.avg == 0 && ops_write.avg == 0 {
            return Err(Error::generic("iops size requires an iops value to be set"));
        }
        for b in &self.buckets {
            if b.avg > THROTTLE_VALUE_MAX || b.max > THROTTLE_VALUE_MAX {
                return Err(Error::generic(format!(
                    "bps/iops/max values must be within [0, {THROTTLE_VALUE_MAX}]"
                )));
            }
            if b.burst_length == 0 {
                return Err(Error::generic("the burst length cannot be 0"));
            }
            if b.burst_length > 1 && b.max == 0 {
                return Err(Error::generic("burst length set without burst rate"));
            }
            if b.max != 0 && b.avg == 0 {
                return Err(Error::generic(
                    "bps_max/iops_max require corresponding bps/iops values",
                ));
            }
            if b.max != 0 && b.max < b.avg {
                return Err(Error::generic(
                    "bps_max/iops_max cannot be lower than bps/iops",
                ));
            }
        }
        Ok(())
    }

    fn limits(&self) -> Value {
        let mut m = Map::new();
        for name in limit_names() {
            m.insert(name.clone(), Value::from(self.value(&name)));
        }
        Value::Object(m)
    }

    /// `limits`: the members given replace the current values; the
    /// result must be valid as a whole.
    fn set_limits(&mut self, input: &PropInput) -> Result<(), Error> {
        if input.keyval {
            return Err(Error::generic(
                "Property 'limits' takes a JSON object; use the x- properties on the command line",
            ));
        }
        let limits = qmp::visit::from_value::<ThrottleLimits>(input.value)
            .map_err(|e| Error::generic(e.desc.replace("'<anonymous>", "'limits")))?;
        let given = match limits.to_qobject() {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let mut next = ThrottleGroup {
            buckets: self.buckets,
            iops_size: self.iops_size,
            initialized: self.initialized,
        };
        for (name, value) in &given {
            next.apply(name, value.as_i64().unwrap_or_default())?;
        }
        if self.initialized {
            next.check()?;
        }
        *self = next;
        Ok(())
    }
}

impl Default for ThrottleGroup {
    fn default() -> Self {
        ThrottleGroup::new()
    }
}

impl ObjectState for ThrottleGroup {
    fn properties(&self) -> Vec<PropInfo> {
        let mut p: Vec<PropInfo> = limit_names()
            .iter()
            .map(|n| PropInfo::new(&format!("x-{n}"), "int", Access::ReadWrite))
            .collect();
        p.push(PropInfo::new("limits", "ThrottleLimits", Access::ReadWrite));
        p
    }

    fn get(&self, name: &str) -> Result<Value, Error> {
        Ok(match name.strip_prefix("x-") {
            Some(limit) => Value::from(self.value(limit)),
            None => self.limits(),
        })
    }

    fn set(&mut self, input: &PropInput, _tree: &Tree) -> Result<(), Error> {
        let Some(limit) = input.name.strip_prefix("x-") else {
            return self.set_limits(input);
        };
        if self.initialized {
            return Err(Error::generic(
                "Property cannot be set after initialization",
            ));
        }
        let value = input.int()?;
        if value < 0 {
            return Err(Error::generic("Property values cannot be negative"));
        }
        self.apply(limit, value)
    }

    fn complete(&mut self, _id: &str, _tree: &Tree) -> Result<(), Error> {
        self.check()?;
        self.initialized = true;
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
