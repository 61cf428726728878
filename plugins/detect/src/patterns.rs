//! Operator-written regexes (feature `regex`): compiled with size limits,
//! cached per instance, and — for patterns run over [`fold`](crate::fold)ed
//! text — folded themselves.
//!
//! The `regex` crate matches in linear time whatever the pattern, so an
//! operator's pattern cannot hang a call; its cost is compiling, which is
//! paid on every call of a `per-call` plugin (tens of µs for ASCII
//! patterns, hundreds for Unicode classes such as `\w`, `\d` or
//! case-insensitive matching). Compiled regexes are kept in a per-instance
//! cache keyed by their source, so a `pooled` plugin compiles each pattern
//! once per instance. The cache is only a cache: every call compiles what
//! it does not find, and the result is the same either way.

use regex::{Regex, RegexBuilder};
use std::cell::RefCell;
use std::collections::HashMap;

/// Cap on one compiled regex (and on its lazy DFA's cache), so a pattern
/// cannot exhaust a plugin's memory.
pub const SIZE_LIMIT: usize = 1 << 20;

/// Patterns kept per instance; past this the cache starts over.
const CACHE_ENTRIES: usize = 256;

thread_local! {
    static CACHE: RefCell<HashMap<String, Regex>> = RefCell::new(HashMap::new());
}

/// Compiles `pattern` (through the per-instance cache). The error is the
/// regex crate's, which points at the problem in the pattern.
pub fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    if let Some(r) = CACHE.with(|c| c.borrow().get(pattern).cloned()) {
        return Ok(r);
    }
    let regex = RegexBuilder::new(pattern).size_limit(SIZE_LIMIT).dfa_size_limit(SIZE_LIMIT).build()?;
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= CACHE_ENTRIES {
            c.clear();
        }
        c.insert(pattern.to_string(), regex.clone());
    });
    Ok(regex)
}

/// Runs `regex` once over ordinary text, so the lazy DFA states most
/// answers need are built during a plugin's set-up (and so are in the
/// snapshot its `init` leaves) rather than on every fresh instance's first
/// search.
pub fn warm(regex: &Regex) {
    const SAMPLE: &str = "The quick brown fox, 42 jumps over the lazy dog. Ask support@example.com: +1 (555) 010-9999!\n\
                          {\"name\": \"Widget 7\", \"price\": 12.50, \"tags\": [\"a-b\", \"c_d\"]}";
    let _ = regex.find_iter(SAMPLE).count();
}

/// `pattern` made to match folded text: every literal letter outside an
/// escape (`\S`, `\p{Lu}`, `\x{41}`) or a flag group (`(?U)`, `(?i:`)
/// goes through the same look-alike folding and lower-casing as the text.
/// So `ACME` and `аcme` (Cyrillic `а`) both become `acme`, and the pattern
/// needs no case-insensitive flag (whose Unicode tables make compiling
/// about twenty times slower).
pub fn fold_pattern(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push(c);
                let Some(e) = chars.next() else { break };
                out.push(e);
                // `\p{...}`, `\x{...}`, `\u{...}`: copy the braces verbatim.
                if matches!(e, 'p' | 'P' | 'x' | 'u' | 'U') && chars.peek() == Some(&'{') {
                    for b in chars.by_ref() {
                        out.push(b);
                        if b == '}' {
                            break;
                        }
                    }
                }
            }
            '(' if chars.peek() == Some(&'?') => {
                // `(?flags)`, `(?flags:`, `(?P<name>`, `(?<name>`: verbatim
                // up to the end of the group's head.
                out.push(c);
                for b in chars.by_ref() {
                    out.push(b);
                    if matches!(b, ')' | ':' | '>') {
                        break;
                    }
                }
            }
            c if c.is_ascii() => out.push(c.to_ascii_lowercase()),
            c => {
                let c = crate::normalize::homoglyph(c);
                let mut lower = c.to_lowercase();
                match (lower.next(), lower.next()) {
                    (Some(l), None) => out.push(crate::normalize::homoglyph(l)),
                    _ => out.push(c),
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_literals_only() {
        assert_eq!(fold_pattern(r"ACME\s+V\d+"), r"acme\s+v\d+");
        assert_eq!(fold_pattern(r"\bProject (Falcon|OSPREY)\b"), r"\bproject (falcon|osprey)\b");
        assert_eq!(fold_pattern(r"\S\W\D\B\p{Lu}\P{Greek}\x{41}"), r"\S\W\D\B\p{Lu}\P{Greek}\x{41}");
        assert_eq!(fold_pattern(r"(?U)A+(?P<Name>B)(?i:C)"), r"(?U)a+(?P<Name>b)(?i:c)");
        assert_eq!(fold_pattern("[A-Z]\u{0410}\u{0395}"), "[a-z]ae");
        assert_eq!(fold_pattern("trailing\\"), "trailing\\");
    }

    #[test]
    fn compiles_and_caches() {
        let a = compile("ab+c").unwrap();
        let b = compile("ab+c").unwrap();
        assert_eq!(a.as_str(), b.as_str());
        assert!(a.is_match("xabbc"));
        let e = compile("(unclosed").unwrap_err().to_string();
        assert!(e.contains("unclosed group"), "{e}");
    }
}
