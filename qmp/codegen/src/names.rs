//! Rust names for QAPI names.

/// `BlockdevOptionsFile` stays; `q_obj_SHUTDOWN-arg` and friends are named
/// by the caller; dashes and underscores start a new capitalised word.
pub fn type_name(qapi: &str) -> String {
    let mut out = String::new();
    for part in qapi.split(['-', '_', '.']) {
        let mut chars = part.chars();
        if let Some(c) = chars.next() {
            out.extend(c.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

/// A QAPI name in all capitals (`BLOCK_JOB_READY`) as one Rust word.
pub fn shout_to_camel(qapi: &str) -> String {
    let mut out = String::new();
    for part in qapi.split(['-', '_']) {
        let mut chars = part.chars();
        if let Some(c) = chars.next() {
            out.extend(c.to_uppercase());
            out.push_str(&chars.as_str().to_lowercase());
        }
    }
    out
}

const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern", "false",
    "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
    "return", "static", "struct", "trait", "true", "type", "unsafe", "use", "where", "while",
    "abstract", "become", "box", "do", "final", "macro", "override", "priv", "typeof", "unsized",
    "virtual", "yield", "try", "gen",
];

/// A member or command name as a Rust identifier: lower case, dashes and
/// dots become underscores, keywords are written raw.
pub fn field_name(qapi: &str) -> String {
    let mut s: String = qapi
        .chars()
        .map(|c| {
            if c == '-' || c == '.' {
                '_'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    match s.as_str() {
        "self" | "super" | "crate" => format!("{s}_"),
        _ if KEYWORDS.contains(&s.as_str()) => format!("r#{s}"),
        _ => s,
    }
}

/// An enum value or union case as a Rust variant name.
pub fn variant_name(qapi: &str) -> String {
    let mut s = String::new();
    for part in qapi.split(['-', '_', '.', '+']) {
        let mut chars = part.chars();
        if let Some(c) = chars.next() {
            s.extend(c.to_uppercase());
            s.push_str(chars.as_str());
        }
    }
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, 'V');
    }
    if s == "Self" {
        s.push('_');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(type_name("BlockdevOptionsFile"), "BlockdevOptionsFile");
        assert_eq!(type_name("q_obj_SHUTDOWN-arg"), "QObjSHUTDOWNArg");
        assert_eq!(shout_to_camel("BLOCK_JOB_READY"), "BlockJobReady");
        assert_eq!(field_name("node-name"), "node_name");
        assert_eq!(field_name("type"), "r#type");
        assert_eq!(field_name("self"), "self_");
        assert_eq!(variant_name("null-co"), "NullCo");
        assert_eq!(variant_name("3des"), "V3des");
        assert_eq!(variant_name("kp_add"), "KpAdd");
    }
}
