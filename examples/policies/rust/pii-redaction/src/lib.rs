//! `pii-redaction` (Rust): masks email addresses, phone numbers and payment
//! card numbers (Luhn-checked) in every message, with one finding per mask.
//!
//! The Python (`../../python/pii-redaction/app.py`) and JavaScript
//! (`../../js/pii-redaction/app.js`) versions implement the same scan step
//! for step and pass the same case file (`../../cases/pii-redaction.json`).

use reins_sdk::normalizer::{Guest, Normalized};
use reins_sdk::{CallContext, Message, Severity, Violation};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Which kinds to mask: "email", "phone", "card".
    kinds: Vec<String>,
    /// Severity of the findings; "error" rejects the request instead.
    severity: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kinds: ["email", "phone", "card"].map(String::from).to_vec(),
            severity: "warning".into(),
        }
    }
}

struct PiiRedaction;

impl Guest for PiiRedaction {
    fn normalize(ctx: CallContext, messages: Vec<Message>) -> Result<Normalized, String> {
        let config: Config = reins_sdk::parse_config(&ctx)?;
        for kind in &config.kinds {
            if !["email", "phone", "card"].contains(&kind.as_str()) {
                return Err(format!("config.kinds: unknown kind \"{kind}\", expected email, phone or card"));
            }
        }
        let severity = match config.severity.as_str() {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "error" => Severity::Error,
            other => return Err(format!("config.severity: unknown severity \"{other}\", expected info, warning or error")),
        };
        let wants = |k: &str| config.kinds.iter().any(|x| x == k);
        let mut findings = Vec::new();
        let mut out = Vec::with_capacity(messages.len());
        for (i, m) in messages.into_iter().enumerate() {
            let mut found = Vec::new();
            let mut text: Vec<char> = m.content.chars().collect();
            if wants("email") {
                text = mask_emails(&text, &mut found);
            }
            if wants("phone") || wants("card") {
                text = mask_numbers(&text, wants("phone"), wants("card"), &mut found);
            }
            let path = format!("/{i}/content");
            findings.extend(found.into_iter().map(|(code, message)| Violation::new(severity, path.clone(), code, message)));
            out.push(Message {
                role: m.role,
                content: text.into_iter().collect(),
            });
        }
        Ok(Normalized::new(out, findings))
    }
}

/// Local-part characters: ASCII letters, digits and `._%+-`, and any
/// non-ASCII letter with case (`müller@...` is masked whole). "Has case"
/// is a test all three languages agree on.
fn is_local(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._%+-".contains(c) || (!c.is_ascii() && !c.to_lowercase().eq(c.to_uppercase()))
}

fn is_domain(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '-'
}

fn valid_domain(d: &[char]) -> bool {
    let s: String = d.iter().collect();
    let Some(last) = s.rsplit('.').next() else { return false };
    s.contains('.')
        && !s.starts_with('.')
        && !s.starts_with('-')
        && !s.contains("..")
        && last.len() >= 2
        && last.chars().all(|c| c.is_ascii_alphabetic())
}

/// `local@domain.tld` → `[EMAIL]`.
fn mask_emails(c: &[char], found: &mut Vec<(&'static str, String)>) -> Vec<char> {
    let n = c.len();
    let mut out = Vec::with_capacity(n);
    let (mut prev, mut i) = (0, 0);
    while i < n {
        if c[i] == '@' {
            let mut l = i;
            while l > prev && is_local(c[l - 1]) {
                l -= 1;
            }
            let mut r = i + 1;
            while r < n && is_domain(c[r]) {
                r += 1;
            }
            while r > i + 1 && (c[r - 1] == '.' || c[r - 1] == '-') {
                r -= 1;
            }
            if l < i && valid_domain(&c[i + 1..r]) {
                out.extend_from_slice(&c[prev..l]);
                out.extend("[EMAIL]".chars());
                found.push(("pii-email", "masked an email address".to_string()));
                prev = r;
                i = r;
                continue;
            }
        }
        i += 1;
    }
    out.extend_from_slice(&c[prev..]);
    out
}

fn is_sep(c: char) -> bool {
    " -.()".contains(c)
}

/// Characters that glue a digit run to a preceding word (`ORD-123`, `v1.2`).
fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-/.".contains(c)
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(k, &d)| if k % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d })
        .sum();
    sum % 10 == 0
}

/// Runs of digits with single (or `) `-style double) separators: Luhn-valid
/// 13–19 digit runs → `[CARD ending NNNN]`; 10–12 digits, or 8–15 after a
/// `+` → `[PHONE]`; anything else (dates, amounts, ids) is left alone.
fn mask_numbers(c: &[char], phone: bool, card: bool, found: &mut Vec<(&'static str, String)>) -> Vec<char> {
    let n = c.len();
    let mut out = Vec::with_capacity(n);
    let (mut prev, mut i) = (0, 0);
    while i < n {
        let ch = c[i];
        let opener = (ch == '+' || ch == '(') && i + 1 < n && c[i + 1].is_ascii_digit();
        if !(ch.is_ascii_digit() || opener) || (i > 0 && is_word(c[i - 1])) {
            i += 1;
            continue;
        }
        let mut digits: Vec<u32> = ch.to_digit(10).into_iter().collect();
        let mut card_seps = true;
        let mut end = if ch.is_ascii_digit() { i + 1 } else { i };
        let mut j = i + 1;
        loop {
            if j < n && c[j].is_ascii_digit() {
                digits.push(c[j].to_digit(10).unwrap_or(0));
                j += 1;
                end = j;
            } else if j < n && is_sep(c[j]) {
                let mut k = j;
                while k < n && is_sep(c[k]) && k - j < 2 {
                    k += 1;
                }
                if k < n && c[k].is_ascii_digit() {
                    card_seps &= c[j..k].iter().all(|&s| s == ' ' || s == '-');
                    j = k;
                } else {
                    break;
                }
            } else {
                break;
            }
        }
        let d = digits.len();
        let glued = end < n && (c[end].is_ascii_alphanumeric() || c[end] == '_');
        let mask = if glued {
            None
        } else if card && !opener && (13..=19).contains(&d) && card_seps && luhn(&digits) {
            let last4: String = digits[d - 4..].iter().map(|x| char::from(b'0' + *x as u8)).collect();
            found.push(("pii-card", format!("masked a card number ending {last4}")));
            Some(format!("[CARD ending {last4}]"))
        } else if phone && ((ch == '+' && (8..=15).contains(&d)) || (10..=12).contains(&d)) {
            found.push(("pii-phone", "masked a phone number".to_string()));
            Some("[PHONE]".to_string())
        } else {
            None
        };
        if let Some(mask) = mask {
            out.extend_from_slice(&c[prev..i]);
            out.extend(mask.chars());
            prev = end;
        }
        i = end.max(i + 1);
    }
    out.extend_from_slice(&c[prev..]);
    out
}

reins_sdk::export_normalizer!(PiiRedaction);
