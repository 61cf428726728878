//! `detect`: the detectors the text policies share, so no rule is written
//! twice.
//!
//! - [`normalize`]: the Unicode normalization of `normalize-text`
//!   ([`clean`]) and the matching key of every text comparison ([`fold`]:
//!   zero-width characters removed, NFKC, look-alike letters folded to
//!   ASCII, lower case, whitespace collapsed), with a map back to the
//!   original byte offsets.
//! - [`secrets`]: provider API keys, bearer tokens, PEM private keys,
//!   high-entropy strings near `key`/`token`/`secret`/`password`
//!   ([`find_secrets`]).
//! - [`pii`]: e-mail addresses, phone numbers, Luhn-valid card numbers,
//!   mod-97-valid IBANs ([`find_pii`]).
//! - [`doc`]: the string leaves of a validator's output, whether it is a
//!   JSON document or (text pipelines) one JSON string.
//! - `patterns` (feature `regex`): operator-written regexes, compiled with
//!   limits and cached per instance, and folded to run over folded text.
//! - [`redact`]: placeholders in, and messages that name a finding's kind
//!   and character span but never its value.
//!
//! Every detector returns [`Match`]es: a kind and a byte span of the text it
//! was given, in text order and without overlaps. A plain library (no
//! component, no SDK): the plugins link it, and so can a host-side checker.

pub mod doc;
pub mod normalize;
#[cfg(feature = "regex")]
pub mod patterns;
pub mod pii;
pub mod redact;
pub mod secrets;

pub use normalize::{Cleaned, Folded, clean, fold, fold_str, occurrences};
pub use pii::{PiiKind, find_pii, partial_card_at_end};
pub use secrets::{
    SECRET_KINDS, SecretOptions, describe_secret, find_secrets, find_secrets_with, open_private_key,
};

use std::collections::BTreeMap;

/// One finding: what it is and where, as a byte range of the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub kind: &'static str,
    pub start: usize,
    pub end: usize,
}

/// Something with a byte span, for [`resolve_overlaps`].
pub trait Spanned {
    fn span(&self) -> (usize, usize);
}

impl Spanned for Match {
    fn span(&self) -> (usize, usize) {
        (self.start, self.end)
    }
}

/// Keeps each item that does not overlap one kept before it (so callers
/// list them by priority) and is not empty, and returns them in text order.
pub fn resolve_overlaps<T: Spanned>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    // start -> (end, item); kept spans are disjoint, so the one starting
    // last before a candidate's end is the only one that can overlap it.
    let mut kept: BTreeMap<usize, (usize, T)> = BTreeMap::new();
    for item in items {
        let (start, end) = item.span();
        if end <= start {
            continue;
        }
        let overlaps = kept
            .range(..end)
            .next_back()
            .is_some_and(|(_, (e, _))| *e > start);
        if !overlaps {
            kept.insert(start, (end, item));
        }
    }
    kept.into_values().map(|(_, item)| item).collect()
}

/// Shannon entropy in bits per symbol of a byte string (0 for empty).
pub fn shannon_entropy(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Byte offsets to character positions, for messages ("characters 13–28").
/// Fast for offsets that come in increasing order (as matches do).
pub struct CharPositions<'a> {
    text: &'a str,
    byte: usize,
    chars: usize,
}

impl<'a> CharPositions<'a> {
    pub fn new(text: &'a str) -> Self {
        CharPositions {
            text,
            byte: 0,
            chars: 0,
        }
    }

    /// How many characters precede byte offset `at` (clamped to the text,
    /// rounded down to a character boundary).
    pub fn chars_before(&mut self, at: usize) -> usize {
        let mut at = at.min(self.text.len());
        while !self.text.is_char_boundary(at) {
            at -= 1;
        }
        if at < self.byte {
            self.byte = 0;
            self.chars = 0;
        }
        self.chars += self.text[self.byte..at].chars().count();
        self.byte = at;
        self.chars
    }

    /// `characters 13–28` (1-based, inclusive) or `character 5`.
    pub fn describe(&mut self, start: usize, end: usize) -> String {
        let first = self.chars_before(start) + 1;
        let last = self.chars_before(end).max(first);
        if first == last {
            format!("character {first}")
        } else {
            format!("characters {first}–{last}")
        }
    }
}

/// `characters 13–28` for one span of `text` (see [`CharPositions`]).
pub fn describe_span(text: &str, start: usize, end: usize) -> String {
    CharPositions::new(text).describe(start, end)
}

/// `text` with each `(start, end, replacement)` applied. The spans must be
/// sorted and disjoint (as [`resolve_overlaps`] returns them); one that is
/// not (or is out of range) is skipped rather than garbling the text.
pub fn replace_spans(text: &str, replacements: &[(usize, usize, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, with) in replacements {
        let (start, end) = (*start, *end);
        if start < at
            || end < start
            || end > text.len()
            || !text.is_char_boundary(start)
            || !text.is_char_boundary(end)
        {
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(with);
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: &'static str, start: usize, end: usize) -> Match {
        Match { kind, start, end }
    }

    #[test]
    fn overlaps_go_to_the_first_listed() {
        let kept = resolve_overlaps([
            m("a", 10, 20),
            m("b", 5, 12),
            m("c", 20, 25),
            m("d", 0, 3),
            m("e", 2, 4),
        ]);
        assert_eq!(kept, [m("d", 0, 3), m("a", 10, 20), m("c", 20, 25)]);
    }

    #[test]
    fn entropy() {
        assert_eq!(shannon_entropy(b""), 0.0);
        assert_eq!(shannon_entropy(b"aaaa"), 0.0);
        assert!((shannon_entropy(b"abab") - 1.0).abs() < 1e-9);
        assert!((shannon_entropy(b"abcdefgh") - 3.0).abs() < 1e-9);
    }

    #[test]
    fn spans_in_characters() {
        let text = "héllo wörld";
        let start = text.find("wörld").unwrap();
        assert_eq!(describe_span(text, start, text.len()), "characters 7–11");
        assert_eq!(describe_span(text, 0, 1), "character 1");
        let mut pos = CharPositions::new(text);
        assert_eq!(pos.chars_before(start), 6);
        assert_eq!(pos.chars_before(2), 1);
        assert_eq!(pos.chars_before(999), 11);
    }

    #[test]
    fn replaces() {
        let text = "a b c";
        assert_eq!(
            replace_spans(text, &[(0, 1, "[X]".into()), (4, 5, "[Y]".into())]),
            "[X] b [Y]"
        );
        assert_eq!(
            replace_spans(text, &[(2, 3, "Z".into()), (0, 4, "bad".into())]),
            "a Z c"
        );
        assert_eq!(replace_spans(text, &[]), text);
    }
}
