//! `-smbios file=BINARY` or `-smbios type=N,field=value,...`: the
//! fields each SMBIOS type accepts, as QEMU 2.11 checks them.

use super::opts::{validate_item, Opts};
use super::parse::parse_uuid;
use super::table::{GroupDef, ParamDef, ParamKind};
use super::CmdlineError;

/// The highest SMBIOS type number.
const SMBIOS_MAX_TYPE: u64 = 127;

const fn f(name: &'static str, kind: ParamKind) -> ParamDef {
    ParamDef {
        name,
        kind,
        help: None,
        default: None,
    }
}

use ParamKind::{Bool, Num, Str};

const FILE_FIELDS: &[ParamDef] = &[f("file", Str)];
const TYPE0_FIELDS: &[ParamDef] = &[
    f("type", Num),
    f("vendor", Str),
    f("version", Str),
    f("date", Str),
    f("release", Str),
    f("uefi", Bool),
];
const TYPE1_FIELDS: &[ParamDef] = &[
    f("type", Num),
    f("manufacturer", Str),
    f("product", Str),
    f("version", Str),
    f("serial", Str),
    f("uuid", Str),
    f("sku", Str),
    f("family", Str),
];
const TYPE2_FIELDS: &[ParamDef] = &[
    f("type", Num),
    f("manufacturer", Str),
    f("product", Str),
    f("version", Str),
    f("serial", Str),
    f("asset", Str),
    f("location", Str),
];
const TYPE3_FIELDS: &[ParamDef] = &[
    f("type", Num),
    f("manufacturer", Str),
    f("version", Str),
    f("serial", Str),
    f("asset", Str),
    f("sku", Str),
];
const TYPE4_FIELDS: &[ParamDef] = &[
    f("type", Num),
    f("sock_pfx", Str),
    f("manufacturer", Str),
    f("version", Str),
    f("serial", Str),
    f("asset", Str),
    f("part", Str),
];
const TYPE17_FIELDS: &[ParamDef] = &[
    f("type", Num),
    f("loc_pfx", Str),
    f("bank", Str),
    f("manufacturer", Str),
    f("serial", Str),
    f("asset", Str),
    f("part", Str),
    f("speed", Num),
];

/// Checks every parameter of `opts` against `fields`.
fn validate(opts: &Opts, fields: &'static [ParamDef]) -> Result<(), CmdlineError> {
    let group = GroupDef {
        name: "smbios",
        implied: None,
        merge: false,
        accepts_any: false,
        params: fields,
    };
    opts.items
        .iter()
        .try_for_each(|(k, v)| validate_item(&group, k, v))
}

/// Like C's `strtoul(s, NULL, 0)`: the leading number, 0 if none.
fn leading_number(s: &str) -> u64 {
    let t = s.trim_start();
    let (radix, digits) = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        (16, h)
    } else if t.starts_with('0') {
        (8, t)
    } else {
        (10, t)
    };
    let end = digits
        .char_indices()
        .find(|(_, c)| !c.is_digit(radix))
        .map_or(digits.len(), |(i, _)| i);
    u64::from_str_radix(&digits[..end], radix).unwrap_or(if end == 0 { 0 } else { u64::MAX })
}

/// Checks one `-smbios`; returns the UUID a type 1 entry sets.
pub fn check_smbios(opts: &Opts) -> Result<Option<[u8; 16]>, CmdlineError> {
    if opts.get("file").is_some() {
        validate(opts, FILE_FIELDS)?;
        return Ok(None);
    }
    let Some(type_str) = opts.get("type") else {
        return Err(CmdlineError::new("Must specify type= or file="));
    };
    let ty = leading_number(type_str);
    if ty > SMBIOS_MAX_TYPE {
        return Err(CmdlineError::new("out of range!"));
    }
    let fields = match ty {
        0 => TYPE0_FIELDS,
        1 => TYPE1_FIELDS,
        2 => TYPE2_FIELDS,
        3 => TYPE3_FIELDS,
        4 => TYPE4_FIELDS,
        17 => TYPE17_FIELDS,
        _ => {
            return Err(CmdlineError::new(format!(
                "Don't know how to build fields for SMBIOS type {ty}"
            )))
        }
    };
    validate(opts, fields)?;
    if ty == 0 {
        check_release(opts)?;
    }
    if ty == 1 {
        if let Some(u) = opts.get("uuid") {
            return parse_uuid(u)
                .map(Some)
                .ok_or_else(|| CmdlineError::new("Invalid UUID"));
        }
    }
    Ok(None)
}

/// Type 0 `release=MAJOR.MINOR`, each a byte.
fn check_release(opts: &Opts) -> Result<(), CmdlineError> {
    let Some(r) = opts.get("release") else {
        return Ok(());
    };
    let ok = r.split_once('.').is_some_and(|(a, b)| {
        is_byte(a) && is_byte(b.split(|c: char| !c.is_ascii_digit()).next().unwrap_or(""))
    });
    if ok {
        Ok(())
    } else {
        Err(CmdlineError::new("Invalid release"))
    }
}

fn is_byte(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())
}
