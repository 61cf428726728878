//! `redact-secrets`: credentials in a model's answer — provider API keys
//! (OpenAI, Anthropic, AWS, GitHub, Slack, Stripe, Google), bearer tokens,
//! PEM private-key blocks, and random-looking strings next to a word like
//! `key`, `token`, `secret` or `password` — are replaced by a placeholder
//! (the default), or reported so that the model removes them.
//!
//! Accepts any output: a text answer (one JSON string) or every string leaf
//! of a JSON document; a fix returns the same shape with the secrets
//! replaced. Messages name the kind and the character span, never any part
//! of the secret.
//!
//! The detectors are `detect::secrets` (shared with the other text
//! policies and a streaming checker).

use detect::redact::{self, Action, Finding, KindAction, Note};
use detect::{SECRET_KINDS, SecretOptions};
use reins_sdk::validator::{Guest, Verdict};
use reins_sdk::{CallContext, Violation};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// What to do with every secret (unless `actions` says otherwise).
    action: KindAction,
    /// Per kind: overrides `action` (`off` = do not look for it).
    actions: BTreeMap<String, KindAction>,
    /// `{kind}` becomes the kind's name.
    placeholder: String,
    /// Kinds to look for; empty = all.
    kinds: Vec<String>,
    entropy_threshold: f64,
    entropy_min_length: usize,
    /// Replaces the built-in list of words that make a random string nearby
    /// a secret.
    keywords: Option<Vec<String>>,
}

impl Default for Config {
    fn default() -> Self {
        let defaults = SecretOptions::default();
        Config {
            action: KindAction::Redact,
            actions: BTreeMap::new(),
            placeholder: "[SECRET:{kind}]".into(),
            kinds: Vec::new(),
            entropy_threshold: defaults.entropy_threshold,
            entropy_min_length: defaults.entropy_min_length,
            keywords: None,
        }
    }
}

fn known_kind(field: &str, kind: &str) -> Result<(), String> {
    if SECRET_KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(format!("{field}: unknown kind {kind:?}, expected one of {}", SECRET_KINDS.join(", ")))
    }
}

impl Config {
    /// The detector options and the action of each kind, or an error naming
    /// the field at fault.
    fn resolve(&self) -> Result<(SecretOptions, BTreeMap<&'static str, Action>), String> {
        for (i, kind) in self.kinds.iter().enumerate() {
            known_kind(&format!("config.kinds[{i}]"), kind)?;
        }
        for kind in self.actions.keys() {
            known_kind(&format!("config.actions.{kind}"), kind)?;
        }
        if !(0.0..=8.0).contains(&self.entropy_threshold) {
            return Err(format!(
                "config.entropy_threshold: must be between 0 and 8 bits per character, got {}",
                self.entropy_threshold
            ));
        }
        let mut actions = BTreeMap::new();
        for &kind in SECRET_KINDS {
            let wanted = self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind);
            let action = self.actions.get(kind).copied().unwrap_or(self.action).action();
            if let (true, Some(action)) = (wanted, action) {
                actions.insert(kind, action);
            }
        }
        let mut options = SecretOptions {
            kinds: actions.keys().map(|k| k.to_string()).collect(),
            entropy_threshold: self.entropy_threshold,
            entropy_min_length: self.entropy_min_length.max(8),
            ..SecretOptions::default()
        };
        if let Some(keywords) = &self.keywords {
            options.keywords = keywords.iter().map(|k| k.to_lowercase()).collect();
        }
        Ok((options, actions))
    }
}

struct RedactSecrets;

/// The set-up: the config and the secret kinds it enables, resolved once
/// (in `init`, or on the first call with this config).
struct Prepared {
    config: Config,
    options: SecretOptions,
    actions: BTreeMap<&'static str, Action>,
}

static SETUP: reins_sdk::Setup<Prepared> = reins_sdk::Setup::new();

fn prepare(config_text: &str) -> Result<Prepared, String> {
    let config: Config = reins_sdk::parse_config_text(config_text)?;
    let (options, actions) = config.resolve()?;
    Ok(Prepared { config, options, actions })
}

impl Guest for RedactSecrets {
    fn validate(ctx: CallContext, output: String) -> Result<Verdict, String> {
        let prepared = SETUP.get(&ctx.config, prepare)?;
        let (config, options, actions) = (&prepared.config, &prepared.options, &prepared.actions);
        let mut doc = detect::doc::read_output(&output);
        let mut violations = Vec::new();
        let mut changed = false;
        if actions.is_empty() {
            return Ok(Verdict::ok());
        }
        detect::doc::for_each_string_mut(&mut doc, &mut |path, text| {
            let findings: Vec<Finding> = detect::find_secrets_with(text, &options)
                .into_iter()
                .filter_map(|m| {
                    let action = *actions.get(m.kind)?;
                    Some(Finding {
                        start: m.start,
                        end: m.end,
                        what: detect::describe_secret(m.kind).to_string(),
                        action,
                        placeholder: config.placeholder.replace("{kind}", m.kind),
                    })
                })
                .collect();
            let mut notes = Vec::new();
            changed |= redact::apply(text, findings, "secret", &mut notes);
            violations.extend(notes.into_iter().map(|n| violation(path, n)));
        });
        Ok(if changed { Verdict::fixed(violations, &doc) } else { Verdict::new(violations) })
    }
}

impl reins_sdk::init::Guest for RedactSecrets {
    fn init(config: String) -> Result<(), String> {
        SETUP.init(&config, prepare)
    }
}

reins_sdk::export_validator!(RedactSecrets);
reins_sdk::export_init!(RedactSecrets);

fn violation(path: &str, note: Note) -> Violation {
    if note.error {
        Violation::error(path, note.code, note.message)
    } else {
        Violation::info(path, note.code, note.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const OPENAI: &str = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z_A-bC";
    const AWS: &str = "AKIAIOSFODNN7EXAMPLE";

    fn run(config: Value, output: &Value) -> Result<Verdict, String> {
        RedactSecrets::validate(CallContext::for_test(&config, &json!({})), output.to_string())
    }

    fn fixed(v: &Verdict) -> Value {
        serde_json::from_str(v.fixed.as_deref().expect("a fix")).unwrap()
    }

    #[test]
    fn redacts_keys_in_text() {
        let v = run(json!({}), &json!(format!("Use {OPENAI} with key id {AWS}."))).unwrap();
        assert_eq!(fixed(&v), json!("Use [SECRET:openai-api-key] with key id [SECRET:aws-access-key]."));
        assert_eq!(v.violations.len(), 2);
        let first = &v.violations[0];
        assert_eq!((first.path.as_str(), first.code.as_str(), first.is_error()), ("", "redacted", false));
        assert_eq!(first.message, "redacted an OpenAI API key at characters 5–49; it now reads [SECRET:openai-api-key]");
        for x in &v.violations {
            assert!(!x.message.contains("Ab3dEf") && !x.message.contains("IOSFODNN"), "{}", x.message);
        }
    }

    #[test]
    fn repair_and_per_kind_actions() {
        let config = json!({"action": "repair", "actions": {"private-key": "fail", "aws-access-key": "off"}, "placeholder": "[REDACTED]"});
        let pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg\n-----END EC PRIVATE KEY-----";
        let doc = json!({"steps": [format!("export KEY={OPENAI}"), pem, AWS]});
        let v = run(config, &doc).unwrap();
        assert!(v.fixed.is_none());
        let got: Vec<(&str, &str, bool)> =
            v.violations.iter().map(|x| (x.path.as_str(), x.code.as_str(), x.is_error())).collect();
        assert_eq!(got, [("/steps/0", "secret", true), ("/steps/1", "secret", true)]);
        assert_eq!(v.violations[0].message, "contains an OpenAI API key at characters 12–56; remove it (or write [REDACTED] in its place)");
        assert!(v.violations[1].message.contains("a private key block at characters 1–"));
    }

    #[test]
    fn entropy_settings() {
        let text = json!("session: q8Xv2LmZr7TnW4pKs9Yd3Hf6");
        assert_eq!(fixed(&run(json!({}), &text).unwrap()), json!("session: [SECRET:high-entropy]"));
        assert!(run(json!({"keywords": ["password"]}), &text).unwrap().violations.is_empty());
        assert!(run(json!({"entropy_min_length": 40}), &text).unwrap().violations.is_empty());
        assert!(run(json!({"kinds": ["private-key"]}), &text).unwrap().violations.is_empty());
    }

    #[test]
    fn clean_answers_pass() {
        let v = run(json!({}), &json!({"summary": "Rotate your API keys every 90 days.", "n": 3})).unwrap();
        assert!(v.violations.is_empty() && v.fixed.is_none());
    }

    #[test]
    fn config_errors_name_the_field() {
        let e = run(json!({"kinds": ["openai-api-key", "passport"]}), &json!("x")).err().unwrap();
        assert!(e.starts_with("config.kinds[1]: unknown kind \"passport\""), "{e}");
        let e = run(json!({"actions": {"github-token": "shred"}}), &json!("x")).err().unwrap();
        assert!(e.starts_with("config.actions"), "{e}");
        let e = run(json!({"entropy_threshold": 12}), &json!("x")).err().unwrap();
        assert!(e.starts_with("config.entropy_threshold"), "{e}");
    }
}
