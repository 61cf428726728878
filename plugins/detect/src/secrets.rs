//! Secret detectors: provider API keys by their documented prefixes, bearer
//! tokens, PEM private-key blocks, and high-entropy strings next to a word
//! like `key`, `token`, `secret` or `password`.
//!
//! Hand-written scanners over bytes, linear in the text: every detector
//! looks for an ASCII anchor (a prefix, `-----BEGIN`, `bearer`) and reads
//! the token after it, so there is no regex to compile per call and no
//! pathological input.

use crate::{Match, resolve_overlaps, shannon_entropy};

/// Every kind [`find_secrets`] can report.
pub const SECRET_KINDS: &[&str] = &[
    "openai-api-key",
    "anthropic-api-key",
    "aws-access-key",
    "github-token",
    "slack-token",
    "stripe-key",
    "google-api-key",
    "bearer-token",
    "private-key",
    "high-entropy",
];

/// How a kind reads in a message: `an OpenAI API key`.
pub fn describe_secret(kind: &str) -> &'static str {
    match kind {
        "openai-api-key" => "an OpenAI API key",
        "anthropic-api-key" => "an Anthropic API key",
        "aws-access-key" => "an AWS access key id",
        "github-token" => "a GitHub token",
        "slack-token" => "a Slack token",
        "stripe-key" => "a Stripe secret key",
        "google-api-key" => "a Google API key",
        "bearer-token" => "a bearer token",
        "private-key" => "a private key block",
        "high-entropy" => "a secret-looking random string",
        _ => "a secret",
    }
}

/// Words that make a random-looking string nearby (in the same line and
/// sentence, at most [`KEYWORD_WINDOW`] bytes before it) a probable secret.
pub const DEFAULT_KEYWORDS: &[&str] = &[
    "key",
    "token",
    "secret",
    "passw",
    "pwd",
    "credential",
    "auth",
    "private",
    "signature",
    "session",
];

/// Tuning for [`find_secrets_with`].
#[derive(Debug, Clone)]
pub struct SecretOptions {
    /// Kinds to report (see [`SECRET_KINDS`]); empty = all.
    pub kinds: Vec<String>,
    /// Bits per character a string needs to count as random.
    pub entropy_threshold: f64,
    /// Shortest string the entropy detector looks at.
    pub entropy_min_length: usize,
    /// Lower-case words, one of which must occur in the
    /// [`KEYWORD_WINDOW`] bytes before a high-entropy string.
    pub keywords: Vec<String>,
}

/// How far before a random-looking string (in bytes) a keyword counts.
pub const KEYWORD_WINDOW: usize = 48;

impl Default for SecretOptions {
    fn default() -> Self {
        SecretOptions {
            kinds: Vec::new(),
            entropy_threshold: 3.5,
            entropy_min_length: 20,
            keywords: DEFAULT_KEYWORDS.iter().map(|k| k.to_string()).collect(),
        }
    }
}

impl SecretOptions {
    fn wants(&self, kind: &str) -> bool {
        self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind)
    }
}

/// Every secret in `text` with the default options, in text order, without
/// overlaps.
pub fn find_secrets(text: &str) -> Vec<Match> {
    find_secrets_with(text, &SecretOptions::default())
}

/// Every secret in `text`, in text order, without overlaps (a specific
/// detector wins over the entropy one, then the earlier and longer match).
pub fn find_secrets_with(text: &str, options: &SecretOptions) -> Vec<Match> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    if options.wants("private-key") {
        private_keys(text, &mut found);
    }
    prefixed_keys(bytes, options, &mut found);
    if options.wants("bearer-token") {
        bearer_tokens(bytes, &mut found);
    }
    let mut found = resolve_overlaps(found);
    if options.wants("high-entropy") {
        let mut extra = Vec::new();
        high_entropy(text, options, &found, &mut extra);
        found.extend(extra);
        found.sort_by_key(|m| m.start);
    }
    found
}

/// A provider key: a documented prefix, then a body of `chars`.
struct Prefix {
    prefix: &'static str,
    kind: &'static str,
    chars: fn(u8) -> bool,
    min: usize,
    /// Exact body length, for formats that have one.
    exact: Option<usize>,
    /// The body must mix upper case, lower case and digits (for prefixes
    /// short enough to appear in prose, like `sk-`).
    mixed: bool,
}

fn key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn upper_or_digit(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

fn word_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Longest prefixes first: `sk-ant-` and `sk-proj-` before `sk-`.
const PREFIXES: &[Prefix] = &[
    Prefix {
        prefix: "sk-ant-",
        kind: "anthropic-api-key",
        chars: key_char,
        min: 20,
        exact: None,
        mixed: false,
    },
    Prefix {
        prefix: "sk-proj-",
        kind: "openai-api-key",
        chars: key_char,
        min: 20,
        exact: None,
        mixed: false,
    },
    Prefix {
        prefix: "sk-svcacct-",
        kind: "openai-api-key",
        chars: key_char,
        min: 20,
        exact: None,
        mixed: false,
    },
    Prefix {
        prefix: "sk-admin-",
        kind: "openai-api-key",
        chars: key_char,
        min: 20,
        exact: None,
        mixed: false,
    },
    Prefix {
        prefix: "sk-",
        kind: "openai-api-key",
        chars: key_char,
        min: 20,
        exact: None,
        mixed: true,
    },
    Prefix {
        prefix: "AKIA",
        kind: "aws-access-key",
        chars: upper_or_digit,
        min: 16,
        exact: Some(16),
        mixed: false,
    },
    Prefix {
        prefix: "ASIA",
        kind: "aws-access-key",
        chars: upper_or_digit,
        min: 16,
        exact: Some(16),
        mixed: false,
    },
    Prefix {
        prefix: "github_pat_",
        kind: "github-token",
        chars: key_char,
        min: 22,
        exact: None,
        mixed: false,
    },
    Prefix {
        prefix: "ghp_",
        kind: "github-token",
        chars: alnum,
        min: 30,
        exact: None,
        mixed: false,
    },
    Prefix {
        prefix: "gho_",
        kind: "github-token",
        chars: alnum,
        min: 30,
        exact: None,
        mixed: false,
    },
    Prefix {
        prefix: "ghu_",
        kind: "github-token",
        chars: alnum,
        min: 30,
        exact: None,
        mixed: false,
    },
    Prefix {
        prefix: "ghs_",
        kind: "github-token",
        chars: alnum,
        min: 30,
        exact: None,
        mixed: false,
    },
    Prefix {
        prefix: "ghr_",
        kind: "github-token",
        chars: alnum,
        min: 30,
        exact: None,
        mixed: false,
    },
    Prefix {
        prefix: "xoxb-",
        kind: "slack-token",
        chars: key_char,
        min: 10,
        exact: None,
        mixed: false,
    },
    Prefix {
        prefix: "xoxp-",
        kind: "slack-token",
        chars: key_char,
        min: 10,
        exact: None,
        mixed: false,
    },
    Prefix {
        prefix: "xoxa-",
        kind: "slack-token",
        chars: key_char,
        min: 10,
        exact: None,
        mixed: false,
    },
    Prefix {
        prefix: "xoxr-",
        kind: "slack-token",
        chars: key_char,
        min: 10,
        exact: None,
        mixed: false,
    },
    Prefix {
        prefix: "xoxs-",
        kind: "slack-token",
        chars: key_char,
        min: 10,
        exact: None,
        mixed: false,
    },
    Prefix {
        prefix: "xoxe-",
        kind: "slack-token",
        chars: key_char,
        min: 10,
        exact: None,
        mixed: false,
    },
    Prefix {
        prefix: "sk_live_",
        kind: "stripe-key",
        chars: alnum,
        min: 16,
        exact: None,
        mixed: false,
    },
    Prefix {
        prefix: "rk_live_",
        kind: "stripe-key",
        chars: alnum,
        min: 16,
        exact: None,
        mixed: false,
    },
    Prefix {
        prefix: "AIza",
        kind: "google-api-key",
        chars: key_char,
        min: 35,
        exact: Some(35),
        mixed: false,
    },
];

fn prefixed_keys(bytes: &[u8], options: &SecretOptions, out: &mut Vec<Match>) {
    let mut i = 0;
    while i < bytes.len() {
        // Every prefix starts with one of these bytes; skip the rest fast.
        if !matches!(bytes[i], b's' | b'A' | b'g' | b'x' | b'r')
            || (i > 0 && key_char(bytes[i - 1]))
        {
            i += 1;
            continue;
        }
        let mut advanced = false;
        for p in PREFIXES {
            if !bytes[i..].starts_with(p.prefix.as_bytes()) {
                continue;
            }
            if !options.wants(p.kind) {
                break;
            }
            let body_start = i + p.prefix.len();
            let body_len = bytes[body_start..]
                .iter()
                .take_while(|&&b| (p.chars)(b))
                .count();
            let end = body_start + body_len;
            let fits = match p.exact {
                // A fixed-length body must not run on into more token characters.
                Some(n) => body_len == n && !bytes.get(end).is_some_and(|&b| key_char(b)),
                None => body_len >= p.min,
            };
            if fits && (!p.mixed || mixed_classes(&bytes[body_start..end])) {
                out.push(Match {
                    kind: p.kind,
                    start: i,
                    end,
                });
                i = end;
                advanced = true;
            }
            // The longest matching prefix decides, match or not.
            break;
        }
        if !advanced {
            i += 1;
        }
    }
}

/// Upper case, lower case and digits all present: how random keys look, and
/// how `sk-learn-based-pipelines` does not.
fn mixed_classes(body: &[u8]) -> bool {
    body.iter().any(u8::is_ascii_uppercase)
        && body.iter().any(u8::is_ascii_lowercase)
        && body.iter().any(u8::is_ascii_digit)
}

fn token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'+' | b'/' | b'=')
}

/// `Bearer <token>` (any case): the token is reported, not the word.
fn bearer_tokens(bytes: &[u8], out: &mut Vec<Match>) {
    const WORD: &[u8] = b"bearer";
    let mut i = 0;
    while i + WORD.len() < bytes.len() {
        if !bytes[i..i + WORD.len()].eq_ignore_ascii_case(WORD)
            || (i > 0 && word_char(bytes[i - 1]))
        {
            i += 1;
            continue;
        }
        let mut j = i + WORD.len();
        let spaces = bytes[j..]
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        j += spaces;
        let len = bytes[j..].iter().take_while(|&&b| token_char(b)).count();
        let token = &bytes[j..j + len];
        let random = token.iter().any(u8::is_ascii_digit) || shannon_entropy(token) >= 3.5;
        if spaces > 0 && len >= 16 && random {
            out.push(Match {
                kind: "bearer-token",
                start: j,
                end: j + len,
            });
            i = j + len;
        } else {
            i += WORD.len();
        }
    }
}

/// `-----BEGIN ... PRIVATE KEY-----` through its `-----END ...-----` line (or
/// the end of the text, when the block is cut off: half a key is still a
/// secret).
fn private_keys(text: &str, out: &mut Vec<Match>) {
    const BEGIN: &str = "-----BEGIN ";
    let mut from = 0;
    while let Some(at) = text[from..].find(BEGIN) {
        let start = from + at;
        let header_from = start + BEGIN.len();
        // The label ends at the next dashes on the same line.
        let line_end = text[header_from..]
            .find('\n')
            .map_or(text.len(), |n| header_from + n);
        let Some(close) = text[header_from..line_end].find("-----") else {
            from = header_from;
            continue;
        };
        let label = &text[header_from..header_from + close];
        if !label.contains("PRIVATE KEY") {
            from = header_from;
            continue;
        }
        let after_header = header_from + close + 5;
        let end = match text[after_header..].find("-----END ") {
            Some(e) => {
                let end_label = after_header + e + "-----END ".len();
                match text[end_label..].find("-----") {
                    Some(d) => end_label + d + 5,
                    None => text.len(),
                }
            }
            None => text.len(),
        };
        out.push(Match {
            kind: "private-key",
            start,
            end,
        });
        from = end;
    }
}

/// Where a private-key block that is not finished yet starts in `text`: a
/// `-----BEGIN ... PRIVATE KEY-----` header without its `-----END ...-----`
/// line after it, or a `-----BEGIN` header still being written at the very
/// end of the text (`-----BEGIN RSA`), which may turn out to be one.
/// `None` when every private-key block is complete (or there is none).
///
/// For checkers of streamed text: a PEM block has spaces and line breaks,
/// so it comes in many pieces, and a piece with an open block must be held
/// back until its end arrives (then [`find_secrets`] reports the block).
pub fn open_private_key(text: &str) -> Option<usize> {
    const BEGIN: &str = "-----BEGIN";
    let mut from = 0;
    while let Some(at) = text[from..].find(BEGIN) {
        let start = from + at;
        let header_from = start + BEGIN.len();
        let line_end = text[header_from..].find('\n').map(|n| header_from + n);
        let line = &text[header_from..line_end.unwrap_or(text.len())];
        let Some(close) = line.find("-----") else {
            if line_end.is_none() {
                // The header is still being written.
                return Some(start);
            }
            from = header_from;
            continue;
        };
        let label = &line[..close];
        if !label.starts_with(' ') || !label.contains("PRIVATE KEY") {
            from = header_from;
            continue;
        }
        // As in `private_keys`: the block ends with the dashes after `-----END `.
        let after_header = header_from + close + 5;
        let Some(e) = text[after_header..].find("-----END ") else {
            return Some(start);
        };
        let end_label = after_header + e + "-----END ".len();
        let Some(d) = text[end_label..].find("-----") else {
            return Some(start);
        };
        from = end_label + d + 5;
    }
    None
}

fn entropy_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b'/')
}

/// Random-looking strings of at least `entropy_min_length` characters
/// (letters, digits, `-_.+/`, trailing `=` padding) that mix digits with
/// letters and reach `entropy_threshold` bits per character, with a keyword
/// in the [`KEYWORD_WINDOW`] bytes before them. Skips what `taken` covers.
fn high_entropy(text: &str, options: &SecretOptions, taken: &[Match], out: &mut Vec<Match>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !entropy_char(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && entropy_char(bytes[i]) {
            i += 1;
        }
        while i < bytes.len() && bytes[i] == b'=' {
            i += 1;
        }
        // Sentence punctuation and dashes at the edges are not part of a token.
        let mut s = start;
        let mut e = i;
        while s < e && matches!(bytes[s], b'.' | b'-' | b'/' | b'+') {
            s += 1;
        }
        while e > s && matches!(bytes[e - 1], b'.' | b'-' | b'/') {
            e -= 1;
        }
        let token = &bytes[s..e];
        if token.len() < options.entropy_min_length
            || taken.iter().any(|m| m.start < e && s < m.end)
        {
            continue;
        }
        let digits = token.iter().any(u8::is_ascii_digit);
        let letters = token.iter().any(u8::is_ascii_alphabetic);
        if !(digits && letters) || shannon_entropy(token) < options.entropy_threshold {
            continue;
        }
        if keyword_before(text, s, &options.keywords) {
            out.push(Match {
                kind: "high-entropy",
                start: s,
                end: e,
            });
        }
    }
}

fn keyword_before(text: &str, at: usize, keywords: &[String]) -> bool {
    let mut from = at.saturating_sub(KEYWORD_WINDOW);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    // Only the same line and sentence: "Rotate API keys. Order ref X" is no key.
    let mut window = &text[from..at];
    if let Some(cut) = ["\n", ". ", "; ", "! ", "? "]
        .iter()
        .filter_map(|b| window.rfind(b).map(|i| i + b.len()))
        .max()
    {
        window = &window[cut..];
    }
    let window = window.to_ascii_lowercase();
    keywords
        .iter()
        .any(|k| !k.is_empty() && window.contains(k.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(&'static str, &str)> {
        find_secrets(text)
            .into_iter()
            .map(|m| (m.kind, &text[m.start..m.end]))
            .collect()
    }

    #[test]
    fn provider_keys() {
        let openai = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z_A-bC";
        let legacy = "sk-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb3dEf6hIj9kLm2n";
        let anthropic = "sk-ant-api03-Zx9yW8vU7tS6rQ5pO4nM3lK2jI1hG0fE-dCbA_zz";
        let text = format!("a {openai} b {legacy} c {anthropic}.");
        assert_eq!(
            kinds(&text),
            [
                ("openai-api-key", openai),
                ("openai-api-key", legacy),
                ("anthropic-api-key", anthropic)
            ]
        );
        assert_eq!(
            kinds("id AKIAIOSFODNN7EXAMPLE end"),
            [("aws-access-key", "AKIAIOSFODNN7EXAMPLE")]
        );
        // One character too many: not an access key id.
        assert!(kinds("AKIAIOSFODNN7EXAMPLEX").is_empty());
        let gh = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
        assert_eq!(kinds(&format!("token={gh}")), [("github-token", gh)]);
        let pat = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz";
        assert_eq!(kinds(pat), [("github-token", pat)]);
        assert_eq!(
            kinds("xoxb-123456789012-abcdefABCDEF"),
            [("slack-token", "xoxb-123456789012-abcdefABCDEF")]
        );
        assert_eq!(
            kinds("sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
            [("stripe-key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc")]
        );
        assert_eq!(
            kinds("rk_live_4eC39HqLyjWDarjtT1zdp7dc"),
            [("stripe-key", "rk_live_4eC39HqLyjWDarjtT1zdp7dc")]
        );
        let google = "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI";
        assert_eq!(
            kinds(&format!("\"{google}\"")),
            [("google-api-key", google)]
        );
    }

    #[test]
    fn prose_is_not_a_key() {
        assert!(kinds("we use sk-learn-based-pipelines-for-everything here").is_empty());
        assert!(kinds("the task-force met; ask-me-anything-about-it-sessions").is_empty());
        assert!(kinds("use Bearer authentication for every request").is_empty());
        assert!(kinds("AKIA is the prefix of AWS access keys").is_empty());
        assert!(kinds("Our API key policy: keys rotate every ninety days.").is_empty());
    }

    #[test]
    fn bearer_tokens_are_the_token_only() {
        let text = "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc123XYZ";
        assert_eq!(
            kinds(text),
            [(
                "bearer-token",
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc123XYZ"
            )]
        );
    }

    #[test]
    fn private_key_blocks() {
        let block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\nabc==\n-----END RSA PRIVATE KEY-----";
        let text = format!("key:\n{block}\nthanks");
        assert_eq!(kinds(&text), [("private-key", block)]);
        // Cut off: to the end of the text.
        let cut = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA";
        assert_eq!(kinds(cut), [("private-key", cut)]);
        // Public keys and certificates are not secrets.
        assert!(kinds("-----BEGIN PUBLIC KEY-----\nMIIBIjAN\n-----END PUBLIC KEY-----").is_empty());
        assert!(kinds("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----").is_empty());
    }

    #[test]
    fn open_private_key_blocks() {
        let block =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----";
        assert_eq!(open_private_key(&format!("key:\n{block}\nthanks")), None);
        assert_eq!(open_private_key("no key here"), None);
        for open in [
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\n",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\n-----END RSA",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\n-----END",
            "-----BEGIN RSA",
            "-----BEGIN",
        ] {
            assert_eq!(
                open_private_key(&format!("key:\n{open}")),
                Some(5),
                "{open:?}"
            );
        }
        // A complete block, then an open one.
        assert_eq!(
            open_private_key(&format!("{block}\n-----BEGIN EC PRIVATE KEY-----\nMHc")),
            Some(block.len() + 1)
        );
        // Public keys and certificates are not secrets, open or not.
        assert_eq!(
            open_private_key("-----BEGIN PUBLIC KEY-----\nMIIBIjAN"),
            None
        );
        assert_eq!(
            open_private_key("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"),
            None
        );
    }

    #[test]
    fn high_entropy_needs_a_keyword_nearby() {
        let secret = "q8Xv2LmZr7TnW4pKs9Yd3Hf6";
        assert_eq!(
            kinds(&format!("the secret is {secret}.")),
            [("high-entropy", secret)]
        );
        assert_eq!(
            kinds(&format!("password: \"{secret}\"")),
            [("high-entropy", secret)]
        );
        assert!(kinds(&format!("the order reference is {secret}")).is_empty());
        // The keyword must be in the same sentence and line.
        assert!(kinds(&format!("Rotate keys often. Order ref {secret}")).is_empty());
        assert!(kinds(&format!("token:\nref {secret}")).is_empty());
        // Long words and identifiers are not random.
        assert!(kinds("the token is internationalization_configuration").is_empty());
        assert!(kinds("api key rotation: 2024-01-15T10:30:00Z").is_empty());
    }

    #[test]
    fn kinds_can_be_chosen() {
        let options = SecretOptions {
            kinds: vec!["aws-access-key".into()],
            ..SecretOptions::default()
        };
        let text = "AKIAIOSFODNN7EXAMPLE and sk_live_4eC39HqLyjWDarjtT1zdp7dc";
        let found = find_secrets_with(text, &options);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, "aws-access-key");
    }
}
