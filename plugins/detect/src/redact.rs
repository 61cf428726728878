//! What a redacting validator does with its findings in one string: replace
//! the ones it may fix with a placeholder, and describe every one of them —
//! by kind and character span, never by value, so a secret never travels
//! on in a violation, a log or a repair prompt.
//!
//! `pii` and `redact-secrets` share this, so their messages read alike.

use crate::{CharPositions, Spanned, replace_spans, resolve_overlaps};

/// What an operator asks for one kind of finding in a sidecar: the three
/// [`Action`]s, or `off` (not looked for).
#[derive(serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum KindAction {
    #[default]
    Redact,
    Repair,
    Fail,
    Off,
}

impl KindAction {
    /// The action, or `None` for `off`.
    pub fn action(self) -> Option<Action> {
        match self {
            KindAction::Redact => Some(Action::Redact),
            KindAction::Repair => Some(Action::Repair),
            KindAction::Fail => Some(Action::Fail),
            KindAction::Off => None,
        }
    }
}

/// What to do with one finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Replace it with the placeholder (the validator's `fixed` output) and
    /// note that (`info`, code `redacted`).
    Redact,
    /// Report it (`error`) with a message that tells the model to remove it.
    Repair,
    /// Report it (`error`) as something an answer must never contain. The
    /// pipeline's `on_fail` decides whether that fails the run.
    Fail,
}

impl Action {
    /// `redact`, `repair`, `fail`; anything else is `None`.
    pub fn parse(name: &str) -> Option<Action> {
        match name {
            "redact" => Some(Action::Redact),
            "repair" => Some(Action::Repair),
            "fail" => Some(Action::Fail),
            _ => None,
        }
    }
}

/// One thing found in a string.
#[derive(Debug, Clone)]
pub struct Finding {
    pub start: usize,
    pub end: usize,
    /// How it reads in a message: `an e-mail address`.
    pub what: String,
    pub action: Action,
    /// What it is replaced with (and what a repair may write instead).
    pub placeholder: String,
}

impl Spanned for Finding {
    fn span(&self) -> (usize, usize) {
        (self.start, self.end)
    }
}

/// One note for the validator to turn into a violation at the string's
/// pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Severity `error` (else `info`).
    pub error: bool,
    /// `redacted` for a redaction, else the validator's error code.
    pub code: String,
    pub message: String,
}

/// Applies `findings` (listed by priority; overlapping later ones are
/// dropped) to `text`: redactions replace their span, and every finding
/// gets a [`Note`] in text order. Spans in the notes are those of the text
/// as it was given. Returns whether `text` changed.
pub fn apply(text: &mut String, findings: Vec<Finding>, error_code: &str, notes: &mut Vec<Note>) -> bool {
    let findings = resolve_overlaps(findings);
    if findings.is_empty() {
        return false;
    }
    let mut positions = CharPositions::new(text);
    let mut replacements = Vec::new();
    for f in &findings {
        let at = positions.describe(f.start, f.end);
        let (error, code, message) = match f.action {
            Action::Redact => {
                replacements.push((f.start, f.end, f.placeholder.clone()));
                (false, "redacted", format!("redacted {} at {at}; it now reads {}", f.what, f.placeholder))
            }
            Action::Repair => (
                true,
                error_code,
                format!("contains {} at {at}; remove it (or write {} in its place)", f.what, f.placeholder),
            ),
            Action::Fail => (true, error_code, format!("contains {} at {at}, which an answer must never contain", f.what)),
        };
        notes.push(Note { error, code: code.to_string(), message });
    }
    if replacements.is_empty() {
        return false;
    }
    *text = replace_spans(text, &replacements);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(start: usize, end: usize, action: Action) -> Finding {
        Finding { start, end, what: "an e-mail address".into(), action, placeholder: "[EMAIL]".into() }
    }

    #[test]
    fn redacts_and_describes() {
        let mut text = "to a@b.io or c@d.io".to_string();
        let mut notes = Vec::new();
        let changed = apply(&mut text, vec![finding(3, 9, Action::Redact), finding(13, 19, Action::Repair)], "pii", &mut notes);
        assert!(changed);
        assert_eq!(text, "to [EMAIL] or c@d.io");
        assert_eq!(
            notes,
            [
                Note {
                    error: false,
                    code: "redacted".into(),
                    message: "redacted an e-mail address at characters 4–9; it now reads [EMAIL]".into()
                },
                Note {
                    error: true,
                    code: "pii".into(),
                    message: "contains an e-mail address at characters 14–19; remove it (or write [EMAIL] in its place)"
                        .into()
                },
            ]
        );
        // Nothing to redact: unchanged, but still reported.
        let mut text = "c@d.io".to_string();
        let mut notes = Vec::new();
        assert!(!apply(&mut text, vec![finding(0, 6, Action::Fail)], "pii", &mut notes));
        assert_eq!(notes[0].message, "contains an e-mail address at characters 1–6, which an answer must never contain");
        assert_eq!(Action::parse("fail"), Some(Action::Fail));
        assert_eq!(Action::parse("delete"), None);
    }
}
