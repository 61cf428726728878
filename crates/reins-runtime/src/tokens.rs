//! Token counts in the tokenizer family of a pipeline's model: what the
//! `count-tokens` import answers, and what the pipeline's own budgets use.
//!
//! Budgets are in the model's tokens, so a context builder that packs them
//! must count the way the model is charged. OpenAI's BPEs are known exactly
//! (`o200k_base`, `cl100k_base`); every other model gets an estimate (one
//! token per four characters). The BPE tables are built once per process,
//! on first use.
//!
//! Texts are tokenized in pieces cut where a BPE pretoken must start (before
//! a space that precedes a letter), which gives the count of the whole text
//! exactly: BPE merges never cross a pretoken. Two things follow. A plugin
//! handing the host a huge text cannot keep a host call busy past its
//! deadline ([`Tokenizer::count_within`] estimates what is left once the
//! deadline has passed), and a long run with no such place (a base64 blob,
//! `aaaa…`), whose BPE merge costs grow with the square of its length, is
//! cut every [`MAX_PIECE`] bytes, which may shift its count by a token at
//! each cut.

use std::time::Instant;

/// A tokenizer family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Tokenizer {
    /// `o200k_base`: GPT-4o, GPT-4.1, GPT-5, o-series (and the default: the
    /// tokenizer of current OpenAI models, within a few percent of others).
    #[default]
    O200k,
    /// `cl100k_base`: GPT-4, GPT-3.5, OpenAI's older embeddings.
    Cl100k,
    /// No known tokenizer: one token per four characters.
    Heuristic,
}

/// Longest piece tokenized at once when the text offers no exact cut.
pub(crate) const MAX_PIECE: usize = 2048;
/// Pieces are cut at the last exact place at or after this many bytes.
const MIN_PIECE: usize = 1024;

impl Tokenizer {
    /// The tokenizer of `model` (an OpenAI model name, a fine-tune `ft:…`);
    /// [`Tokenizer::Heuristic`] for any model the BPE tables do not name.
    pub fn for_model(model: &str) -> Tokenizer {
        use tiktoken_rs::tokenizer::{Tokenizer as T, get_tokenizer};
        match get_tokenizer(model) {
            // gpt-oss's `o200k_harmony` is `o200k_base` plus special tokens,
            // which ordinary text never produces.
            Some(T::O200kBase | T::O200kHarmony) => Tokenizer::O200k,
            Some(T::Cl100kBase) => Tokenizer::Cl100k,
            _ => Tokenizer::Heuristic,
        }
    }

    /// The tokenizer's name, as traces and `count-tokens` callers see it.
    pub fn name(&self) -> &'static str {
        match self {
            Tokenizer::O200k => "o200k_base",
            Tokenizer::Cl100k => "cl100k_base",
            Tokenizer::Heuristic => "heuristic",
        }
    }

    /// Builds the tokenizer's tables now (once per process, about a tenth
    /// of a second for a BPE), so that the first count, inside a plugin's
    /// deadline, does not pay for it.
    pub fn warm(&self) {
        let _ = self.bpe();
    }

    fn bpe(&self) -> Option<&'static tiktoken_rs::CoreBPE> {
        match self {
            Tokenizer::O200k => Some(tiktoken_rs::o200k_base_singleton()),
            Tokenizer::Cl100k => Some(tiktoken_rs::cl100k_base_singleton()),
            Tokenizer::Heuristic => None,
        }
    }

    /// Tokens of `text`. The heuristic is ceil(characters / 4): English
    /// prose runs about four characters a token in every BPE of the major
    /// model families, and over- rather than under-counting other scripts
    /// keeps a budget packed with it on the safe side for most of them.
    pub fn count(&self, text: &str) -> usize {
        self.count_within(text, None)
    }

    /// [`count`](Self::count), but once `deadline` passes the rest of the
    /// text is estimated (as the heuristic does) instead of tokenized: the
    /// host's answer to a plugin that is about to be stopped anyway need
    /// not be exact, and a host call cannot be interrupted.
    pub fn count_within(&self, text: &str, deadline: Option<Instant>) -> usize {
        let Some(bpe) = self.bpe() else {
            return heuristic(text);
        };
        let mut total = 0;
        for (start, piece) in pieces(text) {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return total + heuristic(&text[start..]);
            }
            total += bpe.encode_ordinary(piece).len();
        }
        total
    }

    /// The longest prefix of `text` of at most `max` tokens, cut on a token
    /// boundary (a token that ends inside a multi-byte character is left
    /// out with it). The heuristic cuts at a character, at the last word
    /// boundary when the prefix has one.
    pub fn truncate(&self, text: &str, max: usize) -> String {
        let Some(bpe) = self.bpe() else {
            return truncate_heuristic(text, max);
        };
        let mut used = 0;
        for (start, piece) in pieces(text) {
            let tokens = bpe.encode_ordinary(piece);
            if used + tokens.len() <= max {
                used += tokens.len();
                continue;
            }
            let room = max - used;
            let mut keep = room.min(tokens.len());
            loop {
                if let Ok(s) = bpe.decode(&tokens[..keep])
                    && bpe.encode_ordinary(&s).len() <= room
                {
                    return format!("{}{s}", &text[..start]);
                }
                if keep == 0 {
                    return text[..start].to_owned();
                }
                keep -= 1;
            }
        }
        text.to_owned()
    }
}

/// ceil(characters / 4).
fn heuristic(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

fn truncate_heuristic(text: &str, max: usize) -> String {
    let chars = max.saturating_mul(4);
    let Some((end, _)) = text.char_indices().nth(chars) else {
        return text.to_owned();
    };
    let prefix = &text[..end];
    // A word cut in half helps no reader; a prefix with no word boundary
    // (one long token) is cut where it must be.
    let at_space = text[end..].starts_with(char::is_whitespace);
    if at_space {
        return prefix.trim_end().to_owned();
    }
    match prefix.rfind(char::is_whitespace) {
        Some(i) if !prefix[..i].trim_end().is_empty() => prefix[..i].trim_end().to_owned(),
        _ => prefix.to_owned(),
    }
}

/// `text` as consecutive pieces `(start, piece)` of about [`MIN_PIECE`] to
/// [`MAX_PIECE`] bytes, cut just before a space that follows a non-space and
/// precedes an ASCII letter: in both BPEs' pretokenizers such a space always
/// starts a pretoken (" word"), so counting the pieces counts the text.
fn pieces(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= text.len() {
            return None;
        }
        let rest = &text[start..];
        let len = if rest.len() <= MAX_PIECE {
            rest.len()
        } else {
            cut(rest)
        };
        let piece = (start, &rest[..len]);
        start += len;
        Some(piece)
    })
}

/// Where to cut `rest` (longer than [`MAX_PIECE`]): the last exact place in
/// `MIN_PIECE..=MAX_PIECE`, else the last character boundary within
/// `MAX_PIECE`.
fn cut(rest: &str) -> usize {
    let b = rest.as_bytes();
    let exact = (MIN_PIECE..=MAX_PIECE).rev().find(|&i| {
        b[i] == b' '
            && b.get(i + 1).is_some_and(u8::is_ascii_alphabetic)
            && !b[i - 1].is_ascii_whitespace()
            // Not the second byte of something: `b[i - 1]` is a whole char
            // or the last byte of one, which is no whitespace either way
            // for the pretokenizers (their `\s` is ASCII or multi-byte).
            && !is_unicode_space_end(b, i)
    });
    if let Some(i) = exact {
        return i;
    }
    let mut i = MAX_PIECE;
    while !rest.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Whether the character ending at byte `i` is a non-ASCII whitespace
/// (NBSP, the ideographic space…): the pretokenizers' `\s` covers those,
/// and a space after one joins it.
fn is_unicode_space_end(b: &[u8], i: usize) -> bool {
    if b[i - 1] < 0x80 {
        return false;
    }
    let mut s = i - 1;
    while s > 0 && (b[s] & 0xC0) == 0x80 {
        s -= 1;
    }
    std::str::from_utf8(&b[s..i])
        .ok()
        .and_then(|c| c.chars().next())
        .is_some_and(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long_text() -> String {
        let mut s = String::new();
        for i in 0..400 {
            s.push_str(&format!(
                "Clause {i}: the supplier's total liability is capped at $1,{i:03}.50 (see §{i}).\n\
                 Ünïcödé wörds, 日本語のテキスト, emojis 🎉 and\u{a0}odd  spacing\tmixed in.  "
            ));
        }
        s
    }

    #[test]
    fn counts_in_pieces_equal_whole_text_counts() {
        let text = long_text();
        assert!(text.len() > 10 * MAX_PIECE);
        for (t, bpe) in [
            (Tokenizer::O200k, tiktoken_rs::o200k_base_singleton()),
            (Tokenizer::Cl100k, tiktoken_rs::cl100k_base_singleton()),
        ] {
            assert_eq!(
                t.count(&text),
                bpe.encode_ordinary(&text).len(),
                "{}",
                t.name()
            );
        }
        assert_eq!(Tokenizer::O200k.count(""), 0);
        assert_eq!(Tokenizer::O200k.count("hello world"), 2);
    }

    #[test]
    fn models_map_to_their_tokenizer() {
        assert_eq!(Tokenizer::for_model("gpt-4o-mini"), Tokenizer::O200k);
        assert_eq!(Tokenizer::for_model("gpt-4"), Tokenizer::Cl100k);
        assert_eq!(
            Tokenizer::for_model("claude-sonnet-4"),
            Tokenizer::Heuristic
        );
        assert_eq!(Tokenizer::for_model(""), Tokenizer::Heuristic);
        assert_eq!(Tokenizer::default().name(), "o200k_base");
    }

    #[test]
    fn the_heuristic_is_a_quarter_of_the_characters() {
        let h = Tokenizer::Heuristic;
        assert_eq!(h.count(""), 0);
        assert_eq!(h.count("abcde"), 2);
        assert_eq!(h.count("ééé"), 1);
        assert_eq!(h.truncate("the quick brown fox", 3), "the quick");
        assert_eq!(h.truncate("the quick brown fox", 2), "the");
        assert_eq!(h.truncate("supercalifragilistic", 2), "supercal");
        assert_eq!(h.truncate("short", 5), "short");
        assert_eq!(h.truncate("héllo wörld", 0), "");
    }

    #[test]
    fn truncation_keeps_a_prefix_within_the_budget() {
        let text = long_text();
        for t in [Tokenizer::O200k, Tokenizer::Cl100k, Tokenizer::Heuristic] {
            for max in [0, 1, 7, 500, 1500] {
                let cut = t.truncate(&text, max);
                assert!(t.count(&cut) <= max, "{} {max}", t.name());
                assert!(text.starts_with(&cut));
                if max > 0 {
                    assert!(!cut.is_empty());
                }
            }
            assert_eq!(t.truncate("short", 10), "short");
        }
        // As long as the budget allows, but for a token or two that would
        // end inside a multi-byte character.
        let cut = Tokenizer::O200k.truncate(&text, 1500);
        assert!(Tokenizer::O200k.count(&cut) >= 1497);
    }

    #[test]
    fn a_long_run_without_spaces_is_cut_and_a_passed_deadline_estimates() {
        let blob = "a".repeat(200_000);
        let started = Instant::now();
        let n = Tokenizer::O200k.count(&blob);
        assert!(n > 0 && started.elapsed().as_secs() < 5);
        let past = Some(Instant::now());
        assert_eq!(Tokenizer::O200k.count_within(&blob, past), 50_000);
    }
}
