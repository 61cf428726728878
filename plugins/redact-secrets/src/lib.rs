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
//! It is also a stream checker: while the answer streams, each piece is
//! checked before the client sees it, for the same kinds of secrets and
//! for Luhn-valid payment card numbers. A piece that ends with what may be
//! the start of one (digit groups of a card, a PEM block without its END
//! line) is held back until the next piece shows the rest; a secret is
//! masked with the placeholder (`stream_action = "mask"`, the default) or
//! the stream is cut with a reason that names its kind
//! (`stream_action = "cut"`).
//!
//! The detectors are `detect::secrets` and `detect::pii` (shared with the
//! other text policies).

use detect::redact::{self, Action, Finding, KindAction, Note};
use detect::{Match, PiiKind, SECRET_KINDS, SecretOptions};
use reins_sdk::stream_checker::{Guest as StreamGuest, Verdict as StreamVerdict};
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
    /// While the answer streams: mask each secret in a piece, or cut the
    /// stream.
    stream_action: StreamAction,
    /// While the answer streams, also look for payment card numbers (which
    /// pass the Luhn check).
    stream_cards: bool,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Default, Debug)]
#[serde(rename_all = "lowercase")]
enum StreamAction {
    /// Replace each secret in the piece with the placeholder.
    #[default]
    Mask,
    /// Stop the stream, with a reason naming the kind.
    Cut,
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
            stream_action: StreamAction::Mask,
            stream_cards: true,
        }
    }
}

fn known_kind(field: &str, kind: &str) -> Result<(), String> {
    if SECRET_KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(format!(
            "{field}: unknown kind {kind:?}, expected one of {}",
            SECRET_KINDS.join(", ")
        ))
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
            let action = self
                .actions
                .get(kind)
                .copied()
                .unwrap_or(self.action)
                .action();
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
    Ok(Prepared {
        config,
        options,
        actions,
    })
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
            let findings: Vec<Finding> = detect::find_secrets_with(text, options)
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
        Ok(if changed {
            Verdict::fixed(violations, &doc)
        } else {
            Verdict::new(violations)
        })
    }
}

impl reins_sdk::init::Guest for RedactSecrets {
    fn init(config: String) -> Result<(), String> {
        SETUP.init(&config, prepare)
    }
}

impl StreamGuest for RedactSecrets {
    fn check(
        ctx: CallContext,
        released: String,
        pending: String,
        last: bool,
    ) -> Result<StreamVerdict, String> {
        let prepared = SETUP.get(&ctx.config, prepare)?;
        Ok(check_piece(&prepared, &released, &pending, last))
    }
}

reins_sdk::export_validator!(RedactSecrets);
reins_sdk::export_stream_checker!(RedactSecrets);
reins_sdk::export_init!(RedactSecrets);

/// How much of the text already sent is scanned with a piece (a keyword
/// before a random string, `Bearer` before a token): at least
/// `detect::secrets::KEYWORD_WINDOW`.
const CONTEXT: usize = 64;

/// The shortest secret token: a Slack prefix and 10 characters.
const SHORTEST_TOKEN: usize = 15;

/// Whether `piece` may hold (part of) a secret or a card number: a digit
/// (cards, and every random string the entropy detector takes), dashes
/// (PEM), or a run of token characters as long as the shortest key. A
/// byte scan, without allocating: most pieces of prose stop here.
fn has_candidate(piece: &str) -> bool {
    let mut run = 0;
    let mut dashes = 0;
    for &b in piece.as_bytes() {
        if b.is_ascii_digit() {
            return true;
        }
        dashes = if b == b'-' { dashes + 1 } else { 0 };
        if dashes == 5 {
            return true;
        }
        let token = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~' | b'+' | b'/' | b'=');
        run = if token { run + 1 } else { 0 };
        if run == SHORTEST_TOKEN {
            return true;
        }
    }
    false
}

/// The stream checker's decision for one piece: `pending`, with the end of
/// `released` for context.
fn check_piece(prepared: &Prepared, released: &str, pending: &str, last: bool) -> StreamVerdict {
    let (config, actions) = (&prepared.config, &prepared.actions);
    let private_keys = actions.contains_key("private-key");
    if pending.is_empty() || (actions.is_empty() && !config.stream_cards) {
        return StreamVerdict::Pass;
    }
    // A private-key block already open in what was sent (only if something
    // released it unfinished): everything up to its END is key material.
    let open_in_released = if private_keys && released.contains("-----BEGIN") {
        detect::open_private_key(released)
    } else {
        None
    };
    if open_in_released.is_none() && !has_candidate(pending) {
        return StreamVerdict::Pass;
    }
    let mut from = released.floor_char_boundary(released.len().saturating_sub(CONTEXT));
    if let Some(open) = open_in_released {
        from = from.min(open);
    }
    let tail = &released[from..];
    let base = tail.len();
    let text = [tail, pending].concat();

    if !last
        && ((config.stream_cards && detect::partial_card_at_end(&text).is_some())
            || (private_keys && detect::open_private_key(&text).is_some()))
    {
        return StreamVerdict::Hold;
    }

    let mut found: Vec<Match> = if actions.is_empty() {
        Vec::new()
    } else {
        detect::find_secrets_with(&text, &prepared.options)
    };
    if config.stream_cards {
        // Secrets first: an overlap goes to the secret.
        found.extend(detect::find_pii(&text, &[PiiKind::Card]));
        found = detect::resolve_overlaps(found);
    }
    // What lies (partly) in the piece, as spans of the piece.
    let found: Vec<Match> = found
        .into_iter()
        .filter(|m| m.end > base)
        .map(|m| Match {
            kind: m.kind,
            start: m.start.max(base) - base,
            end: m.end - base,
        })
        .collect();
    if found.is_empty() {
        return StreamVerdict::Pass;
    }
    match config.stream_action {
        StreamAction::Mask => {
            let spans: Vec<(usize, usize, String)> = found
                .iter()
                .map(|m| (m.start, m.end, config.placeholder.replace("{kind}", m.kind)))
                .collect();
            StreamVerdict::Replace(detect::replace_spans(pending, &spans))
        }
        StreamAction::Cut => StreamVerdict::Cut(cut_reason(&found)),
    }
}

fn describe(kind: &str) -> &'static str {
    if kind == PiiKind::Card.as_str() {
        PiiKind::Card.describe()
    } else {
        detect::describe_secret(kind)
    }
}

/// `the answer was stopped: it contained an OpenAI API key and a payment
/// card number`: the kinds, never the values.
fn cut_reason(found: &[Match]) -> String {
    let mut kinds: Vec<&str> = Vec::new();
    for m in found {
        if !kinds.contains(&m.kind) {
            kinds.push(m.kind);
        }
    }
    let what: Vec<&str> = kinds.iter().map(|k| describe(k)).collect();
    let list = match what.as_slice() {
        [] => "a secret".to_string(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    };
    format!("the answer was stopped: it contained {list}")
}

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
        RedactSecrets::validate(
            CallContext::for_test(&config, &json!({})),
            output.to_string(),
        )
    }

    fn fixed(v: &Verdict) -> Value {
        serde_json::from_str(v.fixed.as_deref().expect("a fix")).unwrap()
    }

    #[test]
    fn redacts_keys_in_text() {
        let v = run(
            json!({}),
            &json!(format!("Use {OPENAI} with key id {AWS}.")),
        )
        .unwrap();
        assert_eq!(
            fixed(&v),
            json!("Use [SECRET:openai-api-key] with key id [SECRET:aws-access-key].")
        );
        assert_eq!(v.violations.len(), 2);
        let first = &v.violations[0];
        assert_eq!(
            (first.path.as_str(), first.code.as_str(), first.is_error()),
            ("", "redacted", false)
        );
        assert_eq!(
            first.message,
            "redacted an OpenAI API key at characters 5–49; it now reads [SECRET:openai-api-key]"
        );
        for x in &v.violations {
            assert!(
                !x.message.contains("Ab3dEf") && !x.message.contains("IOSFODNN"),
                "{}",
                x.message
            );
        }
    }

    #[test]
    fn repair_and_per_kind_actions() {
        let config = json!({"action": "repair", "actions": {"private-key": "fail", "aws-access-key": "off"}, "placeholder": "[REDACTED]"});
        let pem = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg\n-----END EC PRIVATE KEY-----";
        let doc = json!({"steps": [format!("export KEY={OPENAI}"), pem, AWS]});
        let v = run(config, &doc).unwrap();
        assert!(v.fixed.is_none());
        let got: Vec<(&str, &str, bool)> = v
            .violations
            .iter()
            .map(|x| (x.path.as_str(), x.code.as_str(), x.is_error()))
            .collect();
        assert_eq!(
            got,
            [("/steps/0", "secret", true), ("/steps/1", "secret", true)]
        );
        assert_eq!(
            v.violations[0].message,
            "contains an OpenAI API key at characters 12–56; remove it (or write [REDACTED] in its place)"
        );
        assert!(
            v.violations[1]
                .message
                .contains("a private key block at characters 1–")
        );
    }

    #[test]
    fn entropy_settings() {
        let text = json!("session: q8Xv2LmZr7TnW4pKs9Yd3Hf6");
        assert_eq!(
            fixed(&run(json!({}), &text).unwrap()),
            json!("session: [SECRET:high-entropy]")
        );
        assert!(
            run(json!({"keywords": ["password"]}), &text)
                .unwrap()
                .violations
                .is_empty()
        );
        assert!(
            run(json!({"entropy_min_length": 40}), &text)
                .unwrap()
                .violations
                .is_empty()
        );
        assert!(
            run(json!({"kinds": ["private-key"]}), &text)
                .unwrap()
                .violations
                .is_empty()
        );
    }

    #[test]
    fn clean_answers_pass() {
        let v = run(
            json!({}),
            &json!({"summary": "Rotate your API keys every 90 days.", "n": 3}),
        )
        .unwrap();
        assert!(v.violations.is_empty() && v.fixed.is_none());
    }

    /// The stream checker's verdict as (what, text), for comparing.
    fn stream(config: Value, released: &str, pending: &str, last: bool) -> (&'static str, String) {
        let ctx = CallContext::for_test(&config, &json!({}));
        match RedactSecrets::check(ctx, released.into(), pending.into(), last).unwrap() {
            StreamVerdict::Pass => ("pass", String::new()),
            StreamVerdict::Hold => ("hold", String::new()),
            StreamVerdict::Cut(reason) => ("cut", reason),
            StreamVerdict::Replace(text) => ("replace", text),
        }
    }

    fn replaced(text: &str) -> (&'static str, String) {
        ("replace", text.to_string())
    }

    const PASS: (&str, String) = ("pass", String::new());
    const HOLD: (&str, String) = ("hold", String::new());

    #[test]
    fn stream_masks_a_key_in_a_piece() {
        let piece = format!("Use {OPENAI} and {AWS} now. ");
        assert_eq!(
            stream(json!({}), "Here you go. ", &piece, false),
            replaced("Use [SECRET:openai-api-key] and [SECRET:aws-access-key] now. ")
        );
        let config = json!({"placeholder": "[REDACTED]"});
        assert_eq!(
            stream(config, "", &format!("key={OPENAI}"), true),
            replaced("key=[REDACTED]")
        );
        // Prose, and numbers that are no card, pass.
        assert_eq!(
            stream(
                json!({}),
                "Rotate ",
                "your API keys every ninety days. ",
                false
            ),
            PASS
        );
        assert_eq!(
            stream(json!({}), "", "In 1999, 42 of 120 keys leaked. ", false),
            PASS
        );
    }

    #[test]
    fn stream_uses_the_released_text_for_context() {
        // The keyword (or `Bearer`) was sent with the previous piece.
        let secret = "q8Xv2LmZr7TnW4pKs9Yd3Hf6";
        assert_eq!(
            stream(
                json!({}),
                "Your session token is ",
                &format!("{secret}. "),
                false
            ),
            replaced("[SECRET:high-entropy]. ")
        );
        assert_eq!(
            stream(
                json!({}),
                "The order reference is ",
                &format!("{secret}. "),
                false
            ),
            PASS
        );
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc123XYZ";
        assert_eq!(
            stream(
                json!({}),
                "Send Authorization: Bearer ",
                &format!("{jwt} with it"),
                false
            ),
            replaced("[SECRET:bearer-token] with it")
        );
        // Something found in the released text alone is not this piece's.
        assert_eq!(
            stream(json!({}), &format!("key {OPENAI} "), "and more text", false),
            PASS
        );
    }

    #[test]
    fn stream_holds_a_card_split_across_pieces_then_masks_it() {
        assert_eq!(
            stream(json!({}), "Sure. ", "My card is 4111 1111 ", false),
            HOLD
        );
        assert_eq!(
            stream(json!({}), "Sure. ", "My card is 4111 1111 1111", false),
            HOLD
        );
        assert_eq!(
            stream(
                json!({}),
                "Sure. ",
                "My card is 4111 1111 1111 1111 and it expires soon. ",
                false
            ),
            replaced("My card is [SECRET:card] and it expires soon. ")
        );
        // At the end of the stream there is nothing to wait for.
        assert_eq!(
            stream(json!({}), "", "card 4111-1111-1111-1111", true),
            replaced("card [SECRET:card]")
        );
        assert_eq!(stream(json!({}), "", "card 4111 1111", true), PASS);
        // Cards can be left to the validator (or a pii plugin).
        assert_eq!(
            stream(json!({"stream_cards": false}), "", "card 4111 1111 ", false),
            PASS
        );
        assert_eq!(
            stream(
                json!({"stream_cards": false}),
                "",
                "card 4111 1111 1111 1111.",
                false
            ),
            PASS
        );
    }

    #[test]
    fn stream_passes_numbers_that_fail_luhn() {
        assert_eq!(
            stream(
                json!({}),
                "",
                "ref 4111 1111 1111 1112 is your order. ",
                false
            ),
            PASS
        );
        assert_eq!(
            stream(json!({}), "", "ref 4111111111111112 is your order. ", false),
            PASS
        );
        // At the end of a piece it may still grow, so it waits, once.
        assert_eq!(
            stream(json!({}), "", "ref 4111 1111 1111 1112 ", false),
            HOLD
        );
        assert_eq!(stream(json!({}), "", "ref 4111 1111 1111 1112", true), PASS);
    }

    #[test]
    fn stream_cut_names_the_kind_never_the_secret() {
        let config = json!({"stream_action": "cut"});
        let (what, reason) = stream(
            config.clone(),
            "",
            &format!("token: {OPENAI} and 5555 5555 5555 4444 "),
            true,
        );
        assert_eq!(what, "cut");
        assert_eq!(
            reason,
            "the answer was stopped: it contained an OpenAI API key and a payment card number"
        );
        assert!(
            !reason.contains("Ab3dEf") && !reason.contains("5555"),
            "{reason}"
        );
        assert_eq!(
            stream(config.clone(), "", "nothing to see here", false),
            PASS
        );
        let e = RedactSecrets::check(
            CallContext::for_test(&json!({"stream_action": "drop"}), &json!({})),
            String::new(),
            "x".into(),
            false,
        )
        .err()
        .unwrap();
        assert!(e.starts_with("config.stream_action"), "{e}");
    }

    #[test]
    fn stream_holds_a_pem_block_until_its_end() {
        let head = "Here it is:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\n";
        assert_eq!(
            stream(json!({}), "", "Here it is:\n-----BEGIN RSA", false),
            HOLD
        );
        assert_eq!(stream(json!({}), "", head, false), HOLD);
        assert_eq!(
            stream(json!({}), "", &format!("{head}abc==\n-----END RSA"), false),
            HOLD
        );
        assert_eq!(
            stream(
                json!({}),
                "",
                &format!("{head}abc==\n-----END RSA PRIVATE KEY-----\nKeep it safe."),
                false
            ),
            replaced("Here it is:\n[SECRET:private-key]\nKeep it safe.")
        );
        // Cut off by the end of the stream: masked from BEGIN to the end.
        assert_eq!(
            stream(json!({}), "", head, true),
            replaced("Here it is:\n[SECRET:private-key]")
        );
        // Public keys are not held; a kind switched off is not looked for.
        assert_eq!(
            stream(
                json!({}),
                "",
                "-----BEGIN PUBLIC KEY-----\nMIIBIjAN\n",
                false
            ),
            PASS
        );
        assert_eq!(
            stream(json!({"actions": {"private-key": "off"}}), "", head, false),
            PASS
        );
        // A block that something sent unfinished: the rest of it is masked.
        let sent = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg\n";
        assert_eq!(
            stream(
                json!({}),
                sent,
                "abc==\n-----END EC PRIVATE KEY-----\nDone.",
                false
            ),
            replaced("[SECRET:private-key]\nDone.")
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let e = run(
            json!({"kinds": ["openai-api-key", "passport"]}),
            &json!("x"),
        )
        .err()
        .unwrap();
        assert!(
            e.starts_with("config.kinds[1]: unknown kind \"passport\""),
            "{e}"
        );
        let e = run(json!({"actions": {"github-token": "shred"}}), &json!("x"))
            .err()
            .unwrap();
        assert!(e.starts_with("config.actions"), "{e}");
        let e = run(json!({"entropy_threshold": 12}), &json!("x"))
            .err()
            .unwrap();
        assert!(e.starts_with("config.entropy_threshold"), "{e}");
    }
}
