//! Unicode normalization, in two strengths.
//!
//! - [`clean`] is what `normalize-text` does to every message before a model
//!   sees it: NFKC, HTML entities decoded, invisible and control characters
//!   removed, whitespace collapsed. The text stays readable and keeps its
//!   case and its scripts.
//! - [`fold`] is the *matching key*: the same steps, plus look-alike letters
//!   of other scripts folded to ASCII (Cyrillic `а`, Greek `ο`, ...), lower
//!   case, and every run of whitespace made one space. Two texts that a
//!   reader cannot tell apart fold to the same string, so a blocked phrase
//!   cannot hide behind a zero-width space, a full-width letter, a Cyrillic
//!   `е` or a capital. It is never shown to anyone: [`Folded`] maps every
//!   byte of it back to the original text, so a match can be reported (and
//!   redacted) where it really is.
//!
//! Everything that compares text in the text policies (`normalize-text`'s
//! injection patterns, `blocklist`, `grounded`) goes through [`fold`], on
//! both sides: a pattern is folded exactly like the text it is looked for in.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::canonical_combining_class;

/// A text after [`clean`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleaned {
    pub text: String,
    /// Control and invisible characters removed (not counting whitespace
    /// changes), so an operator can see that someone tried to hide text.
    pub invisible: usize,
}

/// The readable normalization: NFKC, entities, NFKC again (an entity may
/// decode to a compatibility character), line breaks as `\n`, invisible and
/// control characters (but `\n`, `\t`) removed, whitespace collapsed (see
/// [`collapse_whitespace`]).
pub fn clean(input: &str) -> Cleaned {
    let text: String = input.nfkc().collect();
    let decoded = decode_entities(&text);
    let text = if decoded != text { decoded.nfkc().collect() } else { text };
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut invisible = 0;
    let visible: String = text
        .chars()
        .filter(|&c| {
            let drop = is_invisible(c) || (c.is_control() && c != '\n' && c != '\t');
            invisible += drop as usize;
            !drop
        })
        .collect();
    Cleaned { text: collapse_whitespace(&visible), invisible }
}

/// Zero-width and formatting characters that render as nothing but split
/// words for a pattern matcher (and bidi overrides, which reorder text).
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' // zero-width space/non-joiner/joiner, LRM, RLM
        | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
        | '\u{FEFF}' // BOM / zero-width no-break space
        | '\u{00AD}' // soft hyphen
        | '\u{034F}' // combining grapheme joiner
        | '\u{180E}' // Mongolian vowel separator
        | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
        | '\u{2066}'..='\u{2069}' // bidi isolates
    )
}

/// Runs of spaces and tabs become one space, spaces at line ends go, three
/// or more newlines become two (one blank line), and the ends are trimmed.
pub fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    let mut newlines = 0;
    for c in text.chars() {
        match c {
            ' ' | '\t' => pending_space = true,
            '\n' => {
                pending_space = false;
                newlines += 1;
            }
            _ => {
                if !out.is_empty() {
                    if newlines > 0 {
                        out.push_str(if newlines >= 2 { "\n\n" } else { "\n" });
                    } else if pending_space {
                        out.push(' ');
                    }
                }
                pending_space = false;
                newlines = 0;
                out.push(c);
            }
        }
    }
    out
}

/// Every whitespace run becomes one space and the ends are trimmed.
pub fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Decode `&name;`, `&#123;` and `&#x7B;`. Unknown names and invalid code
/// points are left as written.
pub fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        // An entity is short; look for its ';' in the next few characters only.
        let end = rest.char_indices().take(ENTITY_WINDOW).find(|&(_, c)| c == ';').map(|(i, _)| i);
        let decoded = end.and_then(|end| entity(&rest[1..end]).map(|c| (c, end)));
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// How many characters (from the `&`) an entity's `;` is looked for in.
const ENTITY_WINDOW: usize = 12;

/// The character an entity name (without `&` and `;`) stands for.
pub fn entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse::<u32>().ok()?,
        };
        return char::from_u32(code).filter(|&c| c != '\0');
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{A0}',
        "shy" => '\u{AD}',
        "zwsp" => '\u{200B}',
        "zwnj" => '\u{200C}',
        "zwj" => '\u{200D}',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "bull" => '•',
        "middot" => '·',
        "deg" => '°',
        "plusmn" => '±',
        "times" => '×',
        "divide" => '÷',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "sect" => '§',
        "para" => '¶',
        _ => return None,
    })
}

/// Letters of other scripts that look like an ASCII letter, folded to it.
/// NFKC already takes care of full-width, mathematical and circled forms;
/// these are the ones it leaves alone (Cyrillic, Greek, a few Latin
/// extensions and Armenian). Upper and lower case are listed separately
/// because they look like different ASCII letters (Greek `Η` is an `H`, `η`
/// an `n`).
pub fn homoglyph(c: char) -> char {
    match c {
        // Cyrillic capitals
        'А' => 'A',
        'В' => 'B',
        'С' => 'C',
        'Е' | 'Ё' => 'E',
        'Н' => 'H',
        'І' | 'Ӏ' => 'I',
        'Ј' => 'J',
        'К' => 'K',
        'М' => 'M',
        'О' => 'O',
        'Р' => 'P',
        'Ѕ' => 'S',
        'Т' => 'T',
        'Х' => 'X',
        'У' | 'Ү' => 'Y',
        'Ԁ' => 'D',
        'Ԛ' => 'Q',
        'Ԝ' => 'W',
        // Cyrillic small letters
        'а' => 'a',
        'в' => 'b',
        'с' => 'c',
        'ԁ' => 'd',
        'е' | 'ё' => 'e',
        'һ' | 'н' => 'h',
        'і' | 'ї' => 'i',
        'ј' => 'j',
        'к' => 'k',
        'ӏ' => 'l',
        'м' => 'm',
        'о' => 'o',
        'р' => 'p',
        'ԛ' => 'q',
        'ѕ' => 's',
        'т' => 't',
        'ц' => 'u',
        'ѵ' => 'v',
        'ԝ' => 'w',
        'х' => 'x',
        'у' | 'ү' => 'y',
        // Greek capitals
        'Α' => 'A',
        'Β' => 'B',
        'Ε' => 'E',
        'Ζ' => 'Z',
        'Η' => 'H',
        'Ι' => 'I',
        'Κ' => 'K',
        'Μ' => 'M',
        'Ν' => 'N',
        'Ο' => 'O',
        'Ρ' => 'P',
        'Τ' => 'T',
        'Υ' => 'Y',
        'Χ' => 'X',
        // Greek small letters
        'α' => 'a',
        'β' => 'b',
        'γ' => 'y',
        'ε' => 'e',
        'η' => 'n',
        'ι' => 'i',
        'κ' => 'k',
        'ν' => 'v',
        'ο' => 'o',
        'ρ' => 'p',
        'τ' => 't',
        'υ' => 'u',
        'χ' => 'x',
        'ω' => 'w',
        // Latin look-alikes NFKC keeps
        'ı' => 'i',
        'ȷ' => 'j',
        'ɑ' => 'a',
        'ɡ' => 'g',
        'ɩ' => 'i',
        'ʟ' => 'l',
        'ɴ' => 'n',
        'ʀ' => 'r',
        'ʏ' => 'y',
        'ᴀ' => 'a',
        'ᴄ' => 'c',
        'ᴅ' => 'd',
        'ᴇ' => 'e',
        'ᴋ' => 'k',
        'ᴍ' => 'm',
        'ᴏ' => 'o',
        'ᴘ' => 'p',
        'ᴛ' => 't',
        'ᴜ' => 'u',
        'ᴠ' => 'v',
        'ᴡ' => 'w',
        'ᴢ' => 'z',
        // Armenian
        'օ' => 'o',
        'ս' => 'u',
        'հ' => 'h',
        'ո' => 'n',
        'ց' => 'g',
        'զ' => 'q',
        other => other,
    }
}

/// A text after [`fold`]: the matching key, and where each of its bytes came
/// from in the original.
#[derive(Debug, Clone)]
pub struct Folded {
    /// The folded text: lower case, ASCII look-alikes, single spaces.
    pub text: String,
    /// For each byte of `text`, the original byte range it came from.
    starts: Vec<usize>,
    ends: Vec<usize>,
    original_len: usize,
}

impl Folded {
    /// The byte range of the original text that `start..end` (byte offsets
    /// on character boundaries of [`Folded::text`]) came from. An empty range
    /// maps to an empty range.
    pub fn original_span(&self, start: usize, end: usize) -> (usize, usize) {
        let from = self.starts.get(start).copied().unwrap_or(self.original_len);
        if end <= start {
            return (from, from);
        }
        let to = self.ends.get(end - 1).copied().unwrap_or(self.original_len);
        (from, to.max(from))
    }
}

/// The matching key of `input` (see the module docs), with offsets back to
/// `input`.
///
/// Steps, in order: NFKC (per base character and its combining marks),
/// HTML entities, NFKC of what they decode to, invisible and control
/// characters dropped, [`homoglyph`], lower case, every whitespace run one
/// space, no space at either end.
pub fn fold(input: &str) -> Folded {
    if input.is_ascii() && !input.contains('&') {
        return fold_ascii(input);
    }
    fold_general(input)
}

/// [`fold`] of ASCII text without entities: the same result, without the
/// Unicode machinery (most answers and requests are such text).
fn fold_ascii(input: &str) -> Folded {
    let bytes = input.as_bytes();
    let mut text: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut starts: Vec<usize> = Vec::with_capacity(bytes.len());
    let mut pending_space: Option<usize> = None;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            // `char::is_whitespace` in ASCII.
            b'\t'..=b'\r' | b' ' => {
                pending_space.get_or_insert(i);
            }
            0..=0x1F | 0x7F => {}
            _ => {
                if let Some(p) = pending_space.take()
                    && !text.is_empty()
                {
                    text.push(b' ');
                    starts.push(p);
                }
                text.push(b.to_ascii_lowercase());
                starts.push(i);
            }
        }
    }
    // Every byte kept is one ASCII character of the input.
    let ends = starts.iter().map(|&s| s + 1).collect();
    Folded {
        text: String::from_utf8(text).unwrap_or_default(),
        starts,
        ends,
        original_len: input.len(),
    }
}

fn fold_general(input: &str) -> Folded {
    let units = nfkc_units(input);
    let units = decode_entity_units(units);
    let mut out = Folded {
        text: String::with_capacity(input.len()),
        starts: Vec::with_capacity(input.len()),
        ends: Vec::with_capacity(input.len()),
        original_len: input.len(),
    };
    let mut pending_space: Option<(usize, usize)> = None;
    for (c, s, e) in units {
        if c.is_whitespace() {
            pending_space.get_or_insert((s, e));
            continue;
        }
        if is_invisible(c) || c.is_control() {
            continue;
        }
        if let Some((ps, pe)) = pending_space.take()
            && !out.text.is_empty()
        {
            out.push(' ', ps, pe);
        }
        let c = homoglyph(c);
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase(), s, e);
        } else {
            for l in c.to_lowercase() {
                out.push(homoglyph(l), s, e);
            }
        }
    }
    out
}

/// Byte ranges where `needle` occurs in `haystack` (both folded), left to
/// right, not overlapping. With `whole_words`, an occurrence whose first
/// (last) character is a letter or digit must not have a letter or digit
/// just before (after) it: `ass` is not in `class`, `v2` is not in `v21`.
pub fn occurrences(haystack: &str, needle: &str, whole_words: bool) -> Vec<(usize, usize)> {
    if needle.is_empty() {
        return Vec::new();
    }
    let starts_word = needle.chars().next().is_some_and(char::is_alphanumeric);
    let ends_word = needle.chars().next_back().is_some_and(char::is_alphanumeric);
    haystack
        .match_indices(needle)
        .map(|(at, m)| (at, at + m.len()))
        .filter(|&(s, e)| {
            !whole_words
                || ((!starts_word || !haystack[..s].chars().next_back().is_some_and(char::is_alphanumeric))
                    && (!ends_word || !haystack[e..].chars().next().is_some_and(char::is_alphanumeric)))
        })
        .collect()
}

/// Just the folded text, for a pattern or a phrase.
pub fn fold_str(input: &str) -> String {
    fold(input).text
}

impl Folded {
    fn push(&mut self, c: char, start: usize, end: usize) {
        self.text.push(c);
        for _ in 0..c.len_utf8() {
            self.starts.push(start);
            self.ends.push(end);
        }
    }
}

/// NFKC of each base character with the combining marks that follow it; every
/// resulting character carries the byte range of its source cluster.
fn nfkc_units(input: &str) -> Vec<(char, usize, usize)> {
    let mut out = Vec::with_capacity(input.len());
    let mut rest = input.char_indices().peekable();
    while let Some((start, c)) = rest.next() {
        let mut end = start + c.len_utf8();
        while let Some(&(i, next)) = rest.peek() {
            if canonical_combining_class(next) == 0 {
                break;
            }
            end = i + next.len_utf8();
            rest.next();
        }
        let cluster = &input[start..end];
        if cluster.len() == 1 {
            // ASCII without combining marks: already NFKC.
            out.push((c, start, end));
        } else {
            out.extend(cluster.nfkc().map(|n| (n, start, end)));
        }
    }
    out
}

/// [`decode_entities`] over positioned characters: an entity becomes the
/// NFKC of its character, spanning the whole `&...;`.
fn decode_entity_units(units: Vec<(char, usize, usize)>) -> Vec<(char, usize, usize)> {
    if !units.iter().any(|&(c, _, _)| c == '&') {
        return units;
    }
    let mut out = Vec::with_capacity(units.len());
    let mut i = 0;
    while i < units.len() {
        let (c, s, e) = units[i];
        if c == '&' {
            let window = &units[i..units.len().min(i + ENTITY_WINDOW)];
            if let Some(semi) = window.iter().position(|&(c, _, _)| c == ';') {
                let name: String = window[1..semi].iter().map(|&(c, _, _)| c).collect();
                if let Some(decoded) = entity(&name) {
                    let end = window[semi].2;
                    let mut buf = [0u8; 4];
                    out.extend(decoded.encode_utf8(&mut buf).nfkc().map(|n| (n, s, end)));
                    i += semi + 1;
                    continue;
                }
            }
        }
        out.push((c, s, e));
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans() {
        assert_eq!(clean("a&amp;b &lt;x&gt; &#65;&#x42;").text, "a&b <x> AB");
        assert_eq!(clean("ｉｇｎｏｒｅ").text, "ignore");
        let c = clean("ig\u{200B}nore\u{0007} me");
        assert_eq!((c.text.as_str(), c.invisible), ("ignore me", 2));
        assert_eq!(clean("  a \t b  \n\n\n\n c \r\n d  ").text, "a b\n\nc\nd");
        assert_eq!(clean("&bogus; & &#xZZ;").text, "&bogus; & &#xZZ;");
        assert_eq!(clean("zero&#8203;width").text, "zerowidth");
    }

    #[test]
    fn folds_what_a_reader_cannot_tell_apart() {
        assert_eq!(fold_str("Ｆｒｅｅ  MONEY\n\tnow"), "free money now");
        assert_eq!(fold_str("fr\u{200B}ee m\u{2060}oney"), "free money");
        // Cyrillic е, о and Greek Ο, ν in "free money now"
        assert_eq!(fold_str("fr\u{0435}e m\u{043E}ney \u{039D}\u{03BF}w"), "free money now");
        assert_eq!(fold_str("IG&#8203;NORE&nbsp;me"), "ignore me");
        assert_eq!(fold_str("  a  "), "a");
        assert_eq!(fold_str("café"), fold_str("cafe\u{0301}"));
        assert_eq!(fold_str(""), "");
    }

    #[test]
    fn the_ascii_fast_path_agrees() {
        for text in ["", "  Hello,\t\tWORLD \r\n\x0b x\x07y\x7f  ", "a", " \n", "MiXeD 123 !?"] {
            let (fast, slow) = (fold_ascii(text), fold_general(text));
            assert_eq!(fast.text, slow.text, "{text:?}");
            assert_eq!((fast.starts, fast.ends), (slow.starts, slow.ends), "{text:?}");
        }
    }

    #[test]
    fn whole_word_occurrences() {
        assert_eq!(occurrences("a class ass, ass", "ass", true), [(8, 11), (13, 16)]);
        assert_eq!(occurrences("a class ass", "ass", false), [(4, 7), (8, 11)]);
        assert_eq!(occurrences("v21 v2.", "v2", true), [(4, 6)]);
        assert_eq!(occurrences("(x) y", "(x)", true), [(0, 3)]);
        assert!(occurrences("abc", "", true).is_empty());
    }

    #[test]
    fn maps_back_to_the_original() {
        let original = "Say fr\u{200B}\u{0415}E money, now";
        let f = fold(original);
        assert_eq!(f.text, "say free money, now");
        let at = f.text.find("free money").unwrap();
        let (s, e) = f.original_span(at, at + "free money".len());
        assert_eq!(&original[s..e], "fr\u{200B}\u{0415}E money");
        // Entities span their whole source.
        let original = "a &amp; b";
        let f = fold(original);
        assert_eq!(f.text, "a & b");
        let (s, e) = f.original_span(2, 3);
        assert_eq!(&original[s..e], "&amp;");
        // Ligatures expand; each part maps to the whole ligature.
        let f = fold("ﬁne");
        assert_eq!(f.text, "fine");
        assert_eq!(f.original_span(1, 2), (0, 3));
        assert_eq!(f.original_span(4, 4), (5, 5));
    }
}
