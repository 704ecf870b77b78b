//! Text from other machines on its way to a terminal or a log.

/// Whether `c` could steer a terminal or hide what is shown: C0/C1
/// controls (escape sequences, carriage returns, forged newlines),
/// zero-width characters and the bidirectional marks and overrides that
/// reorder text. Lease holders and probe answers come from other machines.
pub fn steers_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}
