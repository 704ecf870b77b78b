//! YAML errors of credential files in the operator's words, quoting
//! nothing of the file.

/// A YAML error of a credential file as `(":LINE:COLUMN", sentence)`.
///
/// Never the parser's default text: that carries a snippet of the lines
/// around the error, and in a kubeconfig those lines hold tokens and keys.
/// The sentence says what to change in the file, not which library call to
/// make.
pub(super) fn yaml_error(e: &serde_saphyr::Error) -> (String, String) {
    let e = e.without_snippet();
    let at = e
        .location()
        .filter(|l| l.line() > 0)
        .map(|l| format!(":{}:{}", l.line(), l.column().max(1)))
        .unwrap_or_default();
    if matches!(e, serde_saphyr::Error::MultipleDocuments { .. }) {
        return (
            at,
            "a second YAML document (after a --- line) starts here; expected one kubeconfig document: remove the --- line and what follows, or split the file".into(),
        );
    }
    let raw = e.to_string();
    let first = raw.lines().next().unwrap_or("invalid YAML");
    let msg = first.find(" at line ").map_or(first, |i| &first[..i]);
    let msg = if let Some(rest) = msg.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest).trim();
        format!(
            "{key} is set twice in the same section; expected each key once: delete one of them"
        )
    } else if msg.contains("mapping start") && at == ":1:1" {
        "the file is not a YAML mapping of keys; expected a kubeconfig as kubectl writes it (apiVersion: v1, kind: Config, clusters, contexts, users)".into()
    } else {
        format!(
            "{msg}; expected a kubeconfig as kubectl writes it (apiVersion: v1, kind: Config, clusters, contexts, users)"
        )
    };
    (at, redact_quoted(&msg))
}

/// Replaces every double-quoted part of a parser message: serde quotes the
/// offending value (`invalid type: string "..."`), which may be a secret.
pub(crate) fn redact_quoted(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut parts = msg.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (i, part) in parts.enumerate() {
        if i % 2 == 0 {
            out.push_str("\"<value withheld>\"");
        } else {
            out.push_str(part);
        }
    }
    out
}
