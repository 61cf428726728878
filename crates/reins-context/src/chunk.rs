//! Cutting documents into passages small enough to put in a prompt.
//!
//! Markdown is cut at its headings first, because a section is the unit an
//! author wrote about one thing; the heading trail travels with every
//! passage so a passage still says what it is about once it is out of its
//! document. Inside a section, whole paragraphs are packed up to the token
//! budget; only a paragraph that cannot fit alone is cut, at the gentlest
//! boundary that works (sentences, then lines, then words, then characters).
//! Consecutive passages of a section overlap a little so a sentence that
//! straddles a cut is still whole in one of them.

use crate::Passage;
use std::sync::Arc;

/// How big passages are, in the caller's tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkOptions {
    /// A passage's budget. Every passage stays within it, except one made of
    /// a single character the counter alone rates above it.
    pub max_tokens: usize,
    /// About how many tokens of the previous passage of the same section a
    /// passage starts with. Capped at half of `max_tokens`, so overlap never
    /// crowds out new text.
    pub overlap_tokens: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions {
            max_tokens: 200,
            overlap_tokens: 30,
        }
    }
}

/// Token counter supplied by the caller (the host uses the pipeline model's tokenizer).
pub type Counter = Arc<dyn Fn(&str) -> usize + Send + Sync>;

/// A counter of whitespace-separated words: for tests, and for hosts that
/// have no tokenizer at hand (a word is about 1.3 tokens of an English BPE
/// vocabulary, so budget accordingly).
pub fn whitespace_counter() -> Counter {
    Arc::new(|s: &str| s.split_whitespace().count())
}

/// Cuts one document into passages. Markdown (`.md`, `.markdown`) is cut at
/// its ATX headings; anything else is plain text with no headings. Passage
/// ids are `{path}#{n}`, `n` counting from 1 over the whole document.
pub fn chunk_document(
    path: &str,
    text: &str,
    opts: &ChunkOptions,
    count: &dyn Fn(&str) -> usize,
) -> Vec<Passage> {
    let text = normalize(text);
    let sections = if is_markdown(path) {
        markdown_sections(&text)
    } else {
        vec![Section {
            heading: String::new(),
            paragraphs: plain_paragraphs(&text),
        }]
    };
    let max = opts.max_tokens.max(1);
    let overlap = opts.overlap_tokens.min(max / 2);
    let mut passages = Vec::new();
    for section in sections {
        for text in pack(&section.paragraphs, max, overlap, count) {
            passages.push(Passage {
                id: format!("{path}#{}", passages.len() + 1),
                path: path.to_owned(),
                heading: section.heading.clone(),
                text,
            });
        }
    }
    passages
}

fn is_markdown(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".md") || lower.ends_with(".markdown")
}

/// One line ending, no byte-order mark: editors on other systems must not
/// change where a document is cut or what its passages say.
fn normalize(text: &str) -> String {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.replace("\r\n", "\n").replace('\r', "\n")
}

struct Section {
    /// The trail of headings, outermost first, joined by " > ".
    heading: String,
    paragraphs: Vec<Paragraph>,
}

struct Paragraph {
    text: String,
    /// A fenced code block: cut at lines rather than sentences when too big.
    code: bool,
}

fn markdown_sections(text: &str) -> Vec<Section> {
    let mut sections = Vec::new();
    let mut trail: Vec<(usize, String)> = Vec::new();
    let mut current = Section {
        heading: String::new(),
        paragraphs: Vec::new(),
    };
    let mut lines: Vec<&str> = Vec::new();
    // The open fence's character and length, while inside a code block.
    let mut fence: Option<(char, usize)> = None;
    for line in text.split('\n') {
        if let Some((ch, len)) = fence {
            lines.push(line);
            if closes_fence(line, ch, len) {
                fence = None;
                flush(&mut lines, true, &mut current.paragraphs);
            }
            continue;
        }
        if let Some(open) = opens_fence(line) {
            flush(&mut lines, false, &mut current.paragraphs);
            fence = Some(open);
            lines.push(line);
            continue;
        }
        if let Some((level, title)) = atx_heading(line) {
            flush(&mut lines, false, &mut current.paragraphs);
            while trail.last().is_some_and(|(l, _)| *l >= level) {
                trail.pop();
            }
            trail.push((level, title));
            let heading = trail
                .iter()
                .map(|(_, t)| t.as_str())
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join(" > ");
            sections.push(std::mem::replace(
                &mut current,
                Section {
                    heading,
                    paragraphs: Vec::new(),
                },
            ));
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut lines, false, &mut current.paragraphs);
        } else {
            lines.push(line);
        }
    }
    // An unclosed fence runs to the end of the document, as in CommonMark.
    flush(&mut lines, fence.is_some(), &mut current.paragraphs);
    sections.push(current);
    sections.retain(|s| !s.paragraphs.is_empty());
    sections
}

fn plain_paragraphs(text: &str) -> Vec<Paragraph> {
    let mut paragraphs = Vec::new();
    let mut lines = Vec::new();
    for line in text.split('\n') {
        if line.trim().is_empty() {
            flush(&mut lines, false, &mut paragraphs);
        } else {
            lines.push(line);
        }
    }
    flush(&mut lines, false, &mut paragraphs);
    paragraphs
}

fn flush(lines: &mut Vec<&str>, code: bool, out: &mut Vec<Paragraph>) {
    if lines.is_empty() {
        return;
    }
    let text = lines.join("\n");
    lines.clear();
    // Leading spaces of the first line are kept in code (indentation is
    // meaning there); prose loses only the blank edges.
    let text = if code { text.trim_end() } else { text.trim() };
    if !text.trim().is_empty() {
        out.push(Paragraph {
            text: text.to_owned(),
            code,
        });
    }
}

/// Up to three spaces of indentation, as CommonMark allows before a block
/// marker (four make an indented code block).
fn unindent(line: &str) -> Option<&str> {
    let rest = line.trim_start_matches(' ');
    (line.len() - rest.len() <= 3).then_some(rest)
}

fn opens_fence(line: &str) -> Option<(char, usize)> {
    let rest = unindent(line)?;
    let ch = rest.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = rest.len() - rest.trim_start_matches(ch).len();
    if len < 3 {
        return None;
    }
    // A backtick fence's info string cannot hold a backtick (that line is
    // inline code, not a fence).
    if ch == '`' && rest[len..].contains('`') {
        return None;
    }
    Some((ch, len))
}

fn closes_fence(line: &str, ch: char, open_len: usize) -> bool {
    let Some(rest) = unindent(line) else {
        return false;
    };
    let after = rest.trim_start_matches(ch);
    rest.len() - after.len() >= open_len && after.trim().is_empty()
}

fn atx_heading(line: &str) -> Option<(usize, String)> {
    let rest = unindent(line)?;
    let after = rest.trim_start_matches('#');
    let level = rest.len() - after.len();
    if !(1..=6).contains(&level) {
        return None;
    }
    if !(after.is_empty() || after.starts_with(' ') || after.starts_with('\t')) {
        return None;
    }
    let mut title = after.trim();
    // An optional closing run of `#`, when set off by a space (or alone).
    let stripped = title.trim_end_matches('#');
    if stripped.len() < title.len() && (stripped.is_empty() || stripped.ends_with([' ', '\t'])) {
        title = stripped.trim_end();
    }
    Some((level, title.to_owned()))
}

/// A piece of a section to pack, no bigger than the budget on its own.
struct Unit {
    text: String,
    /// What joins it to the unit before it in the same passage.
    sep: &'static str,
}

/// Boundaries to cut at, gentlest first.
#[derive(Clone, Copy)]
enum Level {
    Sentences,
    Lines,
    Words,
    Chars,
}

fn pack(
    paragraphs: &[Paragraph],
    max: usize,
    overlap: usize,
    count: &dyn Fn(&str) -> usize,
) -> Vec<String> {
    let mut units = Vec::new();
    for p in paragraphs {
        let level = if p.code {
            Level::Lines
        } else {
            Level::Sentences
        };
        explode(&p.text, level, "\n\n", max, count, &mut units);
    }
    let mut chunks: Vec<String> = Vec::new();
    let mut current = String::new();
    for unit in units {
        if !current.is_empty() {
            let candidate = format!("{current}{}{}", unit.sep, unit.text);
            if count(&candidate) <= max {
                current = candidate;
                continue;
            }
            chunks.push(std::mem::take(&mut current));
        }
        current = match chunks.last() {
            Some(previous) if overlap > 0 => with_overlap(previous, &unit, overlap, max, count),
            _ => unit.text,
        };
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// The unit, preceded by the tail of the previous passage: as much of the
/// wanted overlap as still lets the unit fit.
fn with_overlap(
    previous: &str,
    unit: &Unit,
    overlap: usize,
    max: usize,
    count: &dyn Fn(&str) -> usize,
) -> String {
    let starts = word_starts(previous);
    // The longest tail within the overlap budget...
    let mut first = starts.len();
    for (i, &start) in starts.iter().enumerate().rev() {
        if count(&previous[start..]) > overlap {
            break;
        }
        first = i;
    }
    // ...shortened from its front until the unit fits after it.
    for &start in &starts[first.min(starts.len())..] {
        let candidate = format!("{}{}{}", &previous[start..], unit.sep, unit.text);
        if count(&candidate) <= max {
            return candidate;
        }
    }
    unit.text.clone()
}

/// Byte offsets where words start (always char boundaries).
fn word_starts(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut in_space = true;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            in_space = true;
        } else if in_space {
            starts.push(i);
            in_space = false;
        }
    }
    starts
}

/// `text` as units within `max`: whole if it fits, else cut at `level` and
/// each piece treated the same way with the next finer level.
fn explode(
    text: &str,
    level: Level,
    sep: &'static str,
    max: usize,
    count: &dyn Fn(&str) -> usize,
    out: &mut Vec<Unit>,
) {
    if count(text) <= max {
        out.push(Unit {
            text: text.to_owned(),
            sep,
        });
        return;
    }
    let (pieces, joiner, next) = match level {
        Level::Sentences => (sentences(text), " ", Level::Lines),
        Level::Lines => (
            text.split('\n')
                .map(str::trim_end)
                .filter(|l| !l.trim().is_empty())
                .collect(),
            "\n",
            Level::Words,
        ),
        Level::Words => (text.split_whitespace().collect(), " ", Level::Chars),
        Level::Chars => {
            for (i, piece) in char_pieces(text, max, count).into_iter().enumerate() {
                out.push(Unit {
                    text: piece.to_owned(),
                    sep: if i == 0 { sep } else { "" },
                });
            }
            return;
        }
    };
    if pieces.len() <= 1 {
        explode(text, next, sep, max, count, out);
        return;
    }
    for (i, piece) in pieces.into_iter().enumerate() {
        explode(
            piece,
            next,
            if i == 0 { sep } else { joiner },
            max,
            count,
            out,
        );
    }
}

/// Sentences: cut after `.`, `!` or `?` (and any closing quotes or
/// brackets) followed by whitespace, and after CJK full stops.
fn sentences(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        let cjk = matches!(c, '。' | '！' | '？');
        if !(cjk || matches!(c, '.' | '!' | '?')) {
            continue;
        }
        while let Some(&(_, next)) = chars.peek() {
            if matches!(next, '"' | '\'' | ')' | ']' | '”' | '’' | '»' | '」') {
                chars.next();
            } else {
                break;
            }
        }
        let end = chars.peek().map_or(text.len(), |&(i, _)| i);
        let at_space = chars.peek().is_none_or(|&(_, n)| n.is_whitespace());
        if cjk || at_space {
            let piece = text[start..end].trim();
            if !piece.is_empty() {
                pieces.push(piece);
            }
            start = end;
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        pieces.push(rest);
    }
    pieces
}

/// The longest prefixes within `max`, found by doubling then bisecting over
/// char boundaries, so a huge run without spaces costs O(n log n) counting
/// rather than a count per character.
fn char_pieces<'a>(text: &'a str, max: usize, count: &dyn Fn(&str) -> usize) -> Vec<&'a str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let bounds: Vec<usize> = rest
            .char_indices()
            .map(|(i, _)| i)
            .skip(1)
            .chain(std::iter::once(rest.len()))
            .collect();
        // bounds[i] is the end of the prefix of i + 1 chars.
        let fits = |i: usize| count(&rest[..bounds[i]]) <= max;
        let mut good = 0usize; // one char always goes, to make progress
        let mut step = 1usize;
        let mut bad = loop {
            let probe = good + step;
            if probe >= bounds.len() {
                break bounds.len();
            }
            if !fits(probe) {
                break probe;
            }
            good = probe;
            step *= 2;
        };
        while bad - good > 1 {
            let mid = good + (bad - good) / 2;
            if fits(mid) {
                good = mid;
            } else {
                bad = mid;
            }
        }
        let end = bounds[good];
        pieces.push(&rest[..end]);
        rest = &rest[end..];
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    #[test]
    fn headings_trail_and_closing_hashes() {
        let doc = "intro text\n\n# Install ##\n\nfirst\n\n## Linux\n\napt\n\n### \n\nbare\n\n## macOS\n\nbrew\n";
        let p = chunk_document("a.md", doc, &ChunkOptions::default(), &words);
        let got: Vec<(&str, &str)> = p
            .iter()
            .map(|p| (p.heading.as_str(), p.text.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("", "intro text"),
                ("Install", "first"),
                ("Install > Linux", "apt"),
                ("Install > Linux", "bare"),
                ("Install > macOS", "brew"),
            ]
        );
        assert_eq!(p[4].id, "a.md#5");
    }

    #[test]
    fn not_headings() {
        assert_eq!(atx_heading("#hashtag"), None);
        assert_eq!(atx_heading("    # indented code"), None);
        assert_eq!(atx_heading("####### seven"), None);
        assert_eq!(atx_heading("# C#"), Some((1, "C#".into())));
        assert_eq!(atx_heading("## a ## "), Some((2, "a".into())));
    }

    #[test]
    fn char_pieces_respect_utf8_and_max() {
        let text = "é".repeat(50);
        let per_char = |s: &str| s.chars().count();
        let pieces = char_pieces(&text, 7, &per_char);
        assert!(pieces.iter().all(|p| p.chars().count() <= 7));
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn sentence_cut() {
        assert_eq!(
            sentences("One. Two?\" Three! 3.5 stays. 終わり。次"),
            ["One.", "Two?\"", "Three!", "3.5 stays.", "終わり。", "次"]
        );
    }
}
