//! `normalize-text`: make every message plain, visible text before any model
//! or pattern sees it, then look for prompt-injection phrases.
//!
//! Order matters: entities are decoded before NFKC and invisible characters
//! are stripped before matching, so `ig&#8203;nore previous instructions` or
//! a full-width `ｉｇｎｏｒｅ` cannot hide a pattern.

use reins_sdk::normalizer::{Guest, Normalized};
use reins_sdk::{CallContext, Message, Violation};
use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

/// Phrases that try to override the system prompt or the model's role.
const DEFAULT_PATTERNS: &[&str] = &[
    "ignore all previous instructions",
    "ignore previous instructions",
    "disregard the above",
    "you are now",
    "<|im_start|>system",
    "### system:",
    "system prompt:",
];

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Longest message kept, in characters (after normalization).
    max_chars: usize,
    /// Replaces the default injection patterns when given.
    patterns: Option<Vec<String>>,
    /// Added to the patterns (default or `patterns`).
    extra_patterns: Vec<String>,
    /// Roles whose messages are checked for injection; `"*"` = every role.
    /// Every message is normalized whatever its role.
    roles: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_chars: 20_000,
            patterns: None,
            extra_patterns: Vec::new(),
            roles: vec!["user".to_string()],
        }
    }
}

struct NormalizeText;

impl Guest for NormalizeText {
    fn normalize(ctx: CallContext, messages: Vec<Message>) -> Result<Normalized, String> {
        let config: Config = reins_sdk::parse_config(&ctx)?;
        let patterns: Vec<String> = config
            .patterns
            .clone()
            .unwrap_or_else(|| DEFAULT_PATTERNS.iter().map(|p| p.to_string()).collect())
            .into_iter()
            .chain(config.extra_patterns.iter().cloned())
            .map(|p| squash(&clean(&p).text.to_lowercase()))
            .filter(|p| !p.is_empty())
            .collect();

        let mut findings = Vec::new();
        let mut out = Vec::with_capacity(messages.len());
        for (i, message) in messages.into_iter().enumerate() {
            let path = format!("/{i}/content");
            let cleaned = clean(&message.content);
            let mut text = cleaned.text;
            if cleaned.invisible > 0 {
                findings.push(Violation::info(
                    &path,
                    "stripped",
                    format!("removed {} invisible or control characters", cleaned.invisible),
                ));
            }
            let chars = text.chars().count();
            if chars > config.max_chars {
                text = text.chars().take(config.max_chars).collect();
                findings.push(Violation::warning(
                    &path,
                    "truncated",
                    format!("truncated from {chars} to {} characters", config.max_chars),
                ));
            }
            let checked = config.roles.iter().any(|r| r == "*" || *r == message.role);
            if checked {
                let haystack = squash(&text.to_lowercase());
                for pattern in &patterns {
                    if haystack.contains(pattern.as_str()) {
                        findings.push(Violation::error(
                            &path,
                            "injection",
                            format!(
                                "message {i} ({}) contains the prompt-injection pattern {pattern:?}; \
                                 the request is refused",
                                message.role
                            ),
                        ));
                    }
                }
            }
            out.push(Message { role: message.role, content: text });
        }
        Ok(Normalized::new(out, findings))
    }
}

reins_sdk::export_normalizer!(NormalizeText);

struct Cleaned {
    text: String,
    /// Control and invisible characters removed (not counting whitespace
    /// changes), so an operator can see that someone tried to hide text.
    invisible: usize,
}

/// The whole pipeline for one text: NFKC, entities, NFKC again (an entity
/// may decode to a compatibility character), invisible/control characters,
/// whitespace.
fn clean(input: &str) -> Cleaned {
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
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' // zero-width space/non-joiner/joiner, LRM, RLM
        | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
        | '\u{FEFF}' // BOM / zero-width no-break space
        | '\u{00AD}' // soft hyphen
        | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
        | '\u{2066}'..='\u{2069}' // bidi isolates
    )
}

/// Runs of spaces and tabs become one space, spaces at line ends go, three
/// or more newlines become two (one blank line), and the ends are trimmed.
fn collapse_whitespace(text: &str) -> String {
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

/// For matching only: every whitespace run becomes one space, so a pattern
/// split over lines still matches.
fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Decode `&name;`, `&#123;` and `&#x7B;`. Unknown names and invalid code
/// points are left as written.
fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        // An entity is short; look for its ';' in the next few bytes only.
        let end = rest.char_indices().take(12).find(|&(_, c)| c == ';').map(|(i, _)| i);
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

fn entity(name: &str) -> Option<char> {
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
}
