//! YAML syntax and type errors, reworded to name the key and what it expects.
//!
//! serde-saphyr reports where a value went wrong but not under which key, and
//! in terse words ("invalid u32"). The key path is recovered from the text:
//! the key on the error's line and the keys of the less indented lines above.

use serde_saphyr::Error;

use super::{Resolver, TOP, pos_of};
use crate::config::ConfigError;

impl Resolver<'_> {
    pub(super) fn syntax(&self, text: &str, e: &Error) -> ConfigError {
        let e = e.without_snippet();
        let pos = e.location().map_or(TOP, |l| pos_of(&l));
        let raw = e.to_string();
        let first = raw.lines().next().unwrap_or("invalid YAML").trim();
        let msg = crate::kube::redact_quoted(strip_location_suffix(first));
        let msg = msg.as_str();
        if matches!(e, Error::MultipleDocuments { .. }) {
            return self.err(
                pos,
                "a second YAML document (after a --- line) starts here; expected one document: remove the --- line and what follows",
            );
        }
        let is_parse_error = matches!(
            e,
            Error::ExternalMessage { .. } | Error::Eof { .. } | Error::MultipleDocuments { .. }
        );
        let message = if is_parse_error {
            format!(
                "{msg}; expected valid YAML (indent with spaces, not tabs; close every bracket and quote)"
            )
        } else {
            explain(msg, &key_path(text, pos.line, pos.column))
        };
        self.err(pos, message)
    }
}

/// serde-saphyr appends " at line X column Y"; the location goes first here.
fn strip_location_suffix(msg: &str) -> &str {
    msg.find(" at line ").map_or(msg, |i| &msg[..i])
}

/// Turns a type or structure error under `path` into a sentence that names
/// the key and says what is expected.
fn explain(msg: &str, path: &[String]) -> String {
    let key = path.join(".");
    let lead = |k: &str| {
        if k.is_empty() {
            String::new()
        } else {
            format!("{k}: ")
        }
    };
    if msg.starts_with("unknown field") {
        return format!(
            "{}{msg}; check the spelling against config/config.yaml",
            lead(&key)
        );
    }
    if let Some(rest) = msg.strip_prefix("duplicate mapping key") {
        let name = rest
            .trim_start_matches(':')
            .split(',')
            .next()
            .unwrap_or_default()
            .trim();
        let name = if name.is_empty() { key.as_str() } else { name };
        return format!("{}{name} is set twice; expected each key once", lead(&key));
    }
    let expected = if msg.contains("boolean") {
        "expected true or false".to_string()
    } else if msg.starts_with("invalid u") || msg.starts_with("invalid i") {
        "expected a whole number".to_string()
    } else if msg.contains("mapping start") && key.is_empty() {
        return "the file is not a mapping; expected key: value lines, e.g. interface: eth0"
            .to_string();
    } else if msg.contains("mapping start") {
        "expected a section of indented key: value lines".to_string()
    } else if msg.contains("string scalar") {
        "expected a single value, not a list or a section".to_string()
    } else if msg.contains("sequence start") {
        "expected a list, e.g. [10.0.0.100]".to_string()
    } else if msg.contains("expected") {
        return format!(
            "{}{msg}; check the value against config/config.yaml",
            lead(&key)
        );
    } else {
        "expected the type config/config.yaml shows for it".to_string()
    };
    format!("{}{msg}; {expected}", lead(&key))
}

/// The keys leading to `line`:`column` (1-based) in block-style YAML: the
/// key written on that line left of the column, preceded by the key of each
/// enclosing, less indented line. An error that points at a key itself (an
/// unknown or repeated key) thus gets the path of its section.
fn key_path(text: &str, line: u64, column: u64) -> Vec<String> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let wanted = usize::try_from(line).unwrap_or(usize::MAX);
    for (i, raw) in text.lines().enumerate() {
        if i + 1 > wanted {
            break;
        }
        let trimmed = raw.trim_start_matches(' ');
        if trimmed.trim().is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut indent = raw.len() - trimmed.len();
        let mut content = trimmed;
        // A list item's key sits deeper than its dash.
        while let Some(rest) = content.strip_prefix("- ") {
            indent += 2;
            content = rest.trim_start_matches(' ');
        }
        let on_error_line = i + 1 == wanted;
        let key = key_of(content).filter(|_| !on_error_line || (indent as u64) + 1 < column);
        if key.is_some() || on_error_line {
            while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
                stack.pop();
            }
        }
        if let Some(k) = key {
            stack.push((indent, k.to_string()));
        }
    }
    stack.into_iter().map(|(_, k)| k).collect()
}

/// The key of a `key: value` line, if it is one.
fn key_of(content: &str) -> Option<&str> {
    let end = content.find(':')?;
    let key = &content[..end];
    let after = &content[end + 1..];
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (plain && (after.is_empty() || after.starts_with([' ', '\t']))).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::key_path;

    #[test]
    fn key_path_follows_indentation() {
        let text = "a: 1\nb:\n  c: 2\n  d:\n    - e: 3\n      f: x\ng: 4\n";
        assert_eq!(key_path(text, 1, 4), ["a"]);
        assert_eq!(key_path(text, 3, 6), ["b", "c"]);
        assert_eq!(key_path(text, 6, 10), ["b", "d", "f"]);
        assert_eq!(key_path(text, 7, 4), ["g"]);
        // Pointing at the key itself: the path of its section.
        assert_eq!(key_path(text, 3, 3), ["b"]);
        assert_eq!(key_path(text, 7, 1), Vec::<String>::new());
    }

    #[test]
    fn key_path_of_a_list_item_is_its_list() {
        let text = "vips:\n  - 10.0.0.1\n  - x\n";
        assert_eq!(key_path(text, 3, 5), ["vips"]);
    }
}
