//! `pii`: personal data in a model's answer — e-mail addresses, phone
//! numbers, payment card numbers (Luhn-valid), IBANs (mod-97-valid) and
//! whatever the operator's own patterns describe — is redacted to a
//! placeholder (the default), or reported so that the model removes it.
//!
//! Accepts any output: in a text pipeline the answer is one JSON string; in
//! a JSON pipeline every string leaf of the document is checked, and a fix
//! returns the whole document with those leaves rewritten. A violation's
//! path is the leaf's JSON Pointer (`""` for a text answer) and its message
//! names the kind and the character span, never the value.
//!
//! A card number written as a JSON number cannot be redacted without
//! changing the value's type, so it is always reported (`error`) instead.
//!
//! The detectors are `detect::pii` (shared with the other text policies);
//! see that module for what each kind does and does not take (dates,
//! amounts, IP addresses and order ids are not phone numbers; a 16-digit
//! number that fails Luhn is not a card).

use detect::PiiKind;
use detect::redact::{self, Action, Finding, KindAction, Note};
use reins_sdk::validator::{Guest, Verdict};
use reins_sdk::{CallContext, Violation};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    email: KindAction,
    phone: KindAction,
    card: KindAction,
    iban: KindAction,
    placeholders: Placeholders,
    patterns: Vec<PatternConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            email: KindAction::Redact,
            phone: KindAction::Redact,
            card: KindAction::Redact,
            iban: KindAction::Redact,
            placeholders: Placeholders::default(),
            patterns: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Placeholders {
    email: String,
    phone: String,
    /// `{last4}` is replaced by the card's last four digits.
    card: String,
    iban: String,
}

impl Default for Placeholders {
    fn default() -> Self {
        Placeholders {
            email: "[EMAIL]".into(),
            phone: "[PHONE]".into(),
            card: "[CARD]".into(),
            iban: "[IBAN]".into(),
        }
    }
}

/// An operator's own kind of personal data.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternConfig {
    name: String,
    regex: String,
    #[serde(default)]
    action: KindAction,
    /// Default: the name in capitals and brackets (`[EMPLOYEE-ID]`).
    placeholder: Option<String>,
}

struct Pattern {
    name: String,
    regex: regex::Regex,
    action: Action,
    placeholder: String,
}

fn compile_patterns(configs: Vec<PatternConfig>) -> Result<Vec<Pattern>, String> {
    let mut out = Vec::new();
    for (i, p) in configs.into_iter().enumerate() {
        if p.name.trim().is_empty() {
            return Err(format!("config.patterns[{i}].name: must not be empty"));
        }
        let regex = detect::patterns::compile(&p.regex)
            .map_err(|e| format!("config.patterns[{i}] ({:?}): the regex does not compile: {e}", p.name))?;
        let Some(action) = p.action.action() else { continue };
        let placeholder = p.placeholder.unwrap_or_else(|| format!("[{}]", p.name.to_uppercase()));
        out.push(Pattern { name: p.name, regex, action, placeholder });
    }
    Ok(out)
}

struct Pii;

/// The set-up: the config's kinds and its own patterns, compiled once (in
/// `init`, or on the first call with this config).
struct Prepared {
    patterns: Vec<Pattern>,
    kinds: Vec<(PiiKind, Action)>,
    enabled: Vec<PiiKind>,
    placeholders: Placeholders,
}

static SETUP: reins_sdk::Setup<Prepared> = reins_sdk::Setup::new();

fn prepare(config_text: &str) -> Result<Prepared, String> {
    let config: Config = reins_sdk::parse_config_text(config_text)?;
    let patterns = compile_patterns(config.patterns)?;
    for p in &patterns {
        detect::patterns::warm(&p.regex);
    }
    let kinds: Vec<(PiiKind, Action)> = [
        (PiiKind::Email, config.email),
        (PiiKind::Phone, config.phone),
        (PiiKind::Card, config.card),
        (PiiKind::Iban, config.iban),
    ]
    .into_iter()
    .filter_map(|(kind, a)| a.action().map(|a| (kind, a)))
    .collect();
    let enabled: Vec<PiiKind> = kinds.iter().map(|&(k, _)| k).collect();
    Ok(Prepared { patterns, kinds, enabled, placeholders: config.placeholders })
}

impl Guest for Pii {
    fn validate(ctx: CallContext, output: String) -> Result<Verdict, String> {
        let prepared = SETUP.get(&ctx.config, prepare)?;
        let (patterns, kinds, enabled) = (&prepared.patterns, &prepared.kinds, &prepared.enabled);
        let placeholders = &prepared.placeholders;

        let mut doc = detect::doc::read_output(&output);
        let mut violations = Vec::new();
        let mut changed = false;
        detect::doc::for_each_string_mut(&mut doc, &mut |path, text| {
            let mut findings = Vec::new();
            for m in detect::find_pii(text, &enabled) {
                let Some(kind) = PiiKind::parse(m.kind) else { continue };
                let action = kinds.iter().find(|&&(k, _)| k == kind).map_or(Action::Redact, |&(_, a)| a);
                let placeholder = match kind {
                    PiiKind::Email => placeholders.email.clone(),
                    PiiKind::Phone => placeholders.phone.clone(),
                    PiiKind::Card => placeholders.card.replace("{last4}", &last4(&text[m.start..m.end])),
                    PiiKind::Iban => placeholders.iban.clone(),
                };
                findings.push(Finding { start: m.start, end: m.end, what: kind.describe().into(), action, placeholder });
            }
            for p in patterns {
                for m in p.regex.find_iter(text).filter(|m| !m.is_empty()) {
                    findings.push(Finding {
                        start: m.start(),
                        end: m.end(),
                        what: format!("text matching the pattern {:?}", p.name),
                        action: p.action,
                        placeholder: p.placeholder.clone(),
                    });
                }
            }
            let mut notes = Vec::new();
            changed |= redact::apply(text, findings, "pii", &mut notes);
            violations.extend(notes.into_iter().map(|n| violation(path, n)));
        });
        // A card number written as a JSON number cannot be redacted in place
        // (a placeholder would change the value's type), so it is reported.
        if let Some(&(_, card_action)) = kinds.iter().find(|&&(k, _)| k == PiiKind::Card) {
            detect::doc::for_each_leaf(&doc, &mut |path, value| {
                let Some(n) = value.as_u64() else { return };
                let digits = n.to_string();
                if detect::find_pii(&digits, &[PiiKind::Card]).first().is_some_and(|m| m.end - m.start == digits.len()) {
                    let message = match card_action {
                        Action::Fail => "is a payment card number, which an answer must never contain".to_string(),
                        _ => format!("is a payment card number; remove it (or write {:?} in its place)", placeholders.card),
                    };
                    violations.push(Violation::error(path, "pii", message));
                }
            });
        }
        Ok(if changed { Verdict::fixed(violations, &doc) } else { Verdict::new(violations) })
    }
}

impl reins_sdk::init::Guest for Pii {
    fn init(config: String) -> Result<(), String> {
        SETUP.init(&config, prepare)
    }
}

reins_sdk::export_validator!(Pii);
reins_sdk::export_init!(Pii);

fn violation(path: &str, note: Note) -> Violation {
    if note.error {
        Violation::error(path, note.code, note.message)
    } else {
        Violation::info(path, note.code, note.message)
    }
}

/// The last four digits of a card number as written.
fn last4(card: &str) -> String {
    let digits: Vec<char> = card.chars().filter(char::is_ascii_digit).collect();
    digits[digits.len().saturating_sub(4)..].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn run(config: Value, output: &str) -> Result<Verdict, String> {
        Pii::validate(CallContext::for_test(&config, &json!({})), output.to_string())
    }

    fn fixed(v: &Verdict) -> Value {
        serde_json::from_str(v.fixed.as_deref().expect("a fix")).unwrap()
    }

    #[test]
    fn text_answers_are_redacted() {
        let output = json!("Mail jane@example.com or pay with 4111 1111 1111 1111.").to_string();
        let v = run(json!({}), &output).unwrap();
        assert_eq!(fixed(&v), json!("Mail [EMAIL] or pay with [CARD]."));
        assert_eq!(v.violations.len(), 2);
        assert!(v.violations.iter().all(|x| !x.is_error() && x.code == "redacted" && x.path.is_empty()));
        assert!(v.violations[0].message.contains("an e-mail address at characters 6–21"), "{}", v.violations[0].message);
        // The value itself is never in a message.
        assert!(v.violations.iter().all(|x| !x.message.contains("jane") && !x.message.contains("1111")));
    }

    #[test]
    fn luhn_failures_and_clean_text_pass_untouched() {
        let v = run(json!({}), &json!("Reference 4111 1111 1111 1112, due 2024-01-15.").to_string()).unwrap();
        assert!(v.violations.is_empty() && v.fixed.is_none());
    }

    #[test]
    fn json_documents_are_checked_leaf_by_leaf() {
        let output = json!({"name": "Jane", "contact": {"phones": ["+44 20 7946 0958"]}, "iban": "DE89 3704 0044 0532 0130 00", "n": 4111111111111111u64});
        let v = run(json!({"iban": "repair"}), &output.to_string()).unwrap();
        assert_eq!(
            fixed(&v),
            json!({"name": "Jane", "contact": {"phones": ["[PHONE]"]}, "iban": "DE89 3704 0044 0532 0130 00", "n": 4111111111111111u64})
        );
        let paths: Vec<(&str, bool)> = v.violations.iter().map(|x| (x.path.as_str(), x.is_error())).collect();
        assert_eq!(paths, [("/contact/phones/0", false), ("/iban", true), ("/n", true)]);
        assert_eq!(v.violations[2].message, "is a payment card number; remove it (or write \"[CARD]\" in its place)");
        assert!(v.violations[1].message.contains("an IBAN at characters 1–27; remove it (or write [IBAN] in its place)"));
    }

    #[test]
    fn actions_placeholders_and_off() {
        let config = json!({"email": "fail", "phone": "off", "placeholders": {"card": "[CARD ending {last4}]"}});
        let output = json!("a@b.io, +1 415 555 2671, 5555-5555-5555-4444").to_string();
        let v = run(config, &output).unwrap();
        assert_eq!(fixed(&v), json!("a@b.io, +1 415 555 2671, [CARD ending 4444]"));
        assert_eq!(v.violations.len(), 2);
        assert!(v.violations[0].is_error() && v.violations[0].code == "pii");
        assert!(v.violations[0].message.contains("must never contain"));
    }

    #[test]
    fn operator_patterns() {
        let config = json!({"patterns": [
            {"name": "employee-id", "regex": "EMP-\\d{6}"},
            {"name": "codename", "regex": "(?i)project\\s+falcon", "action": "repair", "placeholder": "[PROJECT]"}
        ]});
        let v = run(config, &json!("EMP-123456 works on Project Falcon").to_string()).unwrap();
        assert_eq!(fixed(&v), json!("[EMPLOYEE-ID] works on Project Falcon"));
        assert!(v.violations[1].is_error());
        assert!(v.violations[1].message.contains("the pattern \"codename\" at characters 21–34"));
    }

    #[test]
    fn config_errors_name_the_field() {
        let e = run(json!({"patterns": [{"name": "bad", "regex": "(unclosed"}]}), "\"x\"").err().unwrap();
        assert!(e.starts_with("config.patterns[0] (\"bad\"): the regex does not compile"), "{e}");
        let e = run(json!({"email": "delete"}), "\"x\"").err().unwrap();
        assert!(e.starts_with("config.email"), "{e}");
    }

    #[test]
    fn plain_text_that_is_not_json_is_still_scanned() {
        let v = run(json!({}), "write to a@b.io").unwrap();
        assert_eq!(fixed(&v), json!("write to [EMAIL]"));
    }
}
