//! Manifest names as Rust identifiers. Event and prop names are
//! `[a-z][a-z0-9_]*` (the manifest parser checks), so they are identifiers
//! already unless they are keywords; enum values are tokens of
//! `[A-Za-z0-9._+<>=-]`, turned into `UpperCamelCase` variants.

use proc_macro2::{Ident, Span};

/// `name` as a function, module or field identifier: raw (`r#type`) for a
/// keyword, with a trailing `_` for the few that cannot be raw.
pub(crate) fn snake(name: &str) -> Ident {
    match name {
        "self" | "super" | "crate" => Ident::new(&format!("{name}_"), Span::call_site()),
        _ if syn::parse_str::<Ident>(name).is_ok() => Ident::new(name, Span::call_site()),
        _ => Ident::new_raw(name, Span::call_site()),
    }
}

/// `UpperCamelCase` for a prop name (`duration_ms` → `DurationMs`) or an
/// enum value (`dry-run` → `DryRun`, `x86_64` → `X86_64`, `1.2` → `V1_2`,
/// `<7` → `Lt7`).
pub(crate) fn camel(name: &str) -> String {
    let mut out = String::new();
    let mut word_start = true;
    for c in name.chars() {
        let symbol = match c {
            '<' => Some("Lt"),
            '>' => Some("Gt"),
            '=' => Some("Eq"),
            '+' => Some("Plus"),
            _ => None,
        };
        if let Some(symbol) = symbol {
            out.push_str(symbol);
            word_start = true;
        } else if c.is_ascii_alphanumeric() {
            // Digits on both sides of a separator stay apart: `1.2` is not `12`.
            if word_start && c.is_ascii_digit() && out.ends_with(|p: char| p.is_ascii_digit()) {
                out.push('_');
            }
            if word_start {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
            word_start = false;
        } else {
            word_start = true;
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'V');
    }
    if out.is_empty() || out == "Self" {
        out.push('_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_identifiers() {
        for (name, expected) in [
            ("duration_ms", "DurationMs"),
            ("greet", "Greet"),
            ("dry-run", "DryRun"),
            ("x86_64", "X86_64"),
            ("1.2", "V1_2"),
            ("<7", "Lt7"),
            (">=365", "GtEq365"),
            ("c++", "CPlusPlus"),
            ("macOS", "MacOS"),
            ("self", "Self_"),
        ] {
            assert_eq!(camel(name), expected, "{name}");
        }
        assert_eq!(snake("command").to_string(), "command");
        assert_eq!(snake("type").to_string(), "r#type");
        assert_eq!(snake("self").to_string(), "self_");
    }
}
