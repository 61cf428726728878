//! `blocklist`: an answer must not contain the operator's blocked phrases
//! or match the operator's blocked patterns.
//!
//! Matching is done on `detect::fold` of both sides — NFKC, zero-width and
//! other invisible characters removed, HTML entities decoded, Cyrillic and
//! Greek look-alike letters folded to ASCII, lower case, whitespace runs
//! made one space — so `Ｆｒｅｅ  Ｍｏｎｅｙ`, `fr\u{200B}ee money` and
//! `frее money` (Cyrillic `е`s) are all `free money`. It is the same
//! normalization `normalize-text` applies to its injection patterns.
//!
//! Phrases match whole words by default (`class` does not contain `ass`).
//! Patterns are regexes (linear-time; no backtracking blow-up) run over the
//! folded text; their letters are folded the same way (`ACME` matches
//! `Acme` and `аcme`), so they match case-insensitively without the cost of
//! `(?i)`. A pattern that does not compile is a configuration error naming
//! it.
//!
//! Accepts any output: a text answer (one JSON string) or every string leaf
//! of a JSON document. One `error` violation (code `blocked`) per leaf and
//! phrase or pattern, at the leaf's pointer, naming the phrase or pattern
//! (operator data) and where the first occurrence is (the span of the
//! original text, in characters).

use detect::CharPositions;
use reins_sdk::validator::{Guest, Verdict};
use reins_sdk::{CallContext, Violation};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    phrases: Vec<String>,
    patterns: Vec<String>,
    action: Action,
    /// Phrases match only as whole words (a phrase's first and last
    /// characters, when letters or digits, must not touch other letters or
    /// digits).
    whole_words: bool,
    /// Appended to every message: why these are blocked, what to write
    /// instead.
    hint: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config { phrases: Vec::new(), patterns: Vec::new(), action: Action::Repair, whole_words: true, hint: None }
    }
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Action {
    /// Tell the model to rephrase without it.
    Repair,
    /// Report it as something an answer must never contain (the pipeline's
    /// `on_fail` decides whether the run fails).
    Fail,
}

struct Phrase {
    /// As the operator wrote it (for messages).
    written: String,
    folded: String,
}

struct Pattern {
    written: String,
    regex: regex::Regex,
}

fn compile(config: &Config) -> Result<(Vec<Phrase>, Vec<Pattern>), String> {
    let mut phrases = Vec::with_capacity(config.phrases.len());
    for (i, written) in config.phrases.iter().enumerate() {
        let folded = detect::fold_str(written);
        if folded.is_empty() {
            return Err(format!("config.phrases[{i}]: {written:?} is empty once normalized"));
        }
        phrases.push(Phrase { written: written.clone(), folded });
    }
    let mut patterns = Vec::with_capacity(config.patterns.len());
    for (i, written) in config.patterns.iter().enumerate() {
        // The text is folded (lower case, ASCII look-alikes), so the pattern's
        // letters are folded the same way instead of matching with `(?i)`.
        let regex = detect::patterns::compile(&detect::patterns::fold_pattern(written))
            .map_err(|e| format!("config.patterns[{i}] ({written:?}): the regex does not compile: {e}"))?;
        patterns.push(Pattern { written: written.clone(), regex });
    }
    Ok((phrases, patterns))
}

struct Blocklist;

/// The set-up: the config's phrases folded and its patterns compiled, once
/// (in `init`, or on the first call with this config).
struct Prepared {
    config: Config,
    phrases: Vec<Phrase>,
    patterns: Vec<Pattern>,
}

static SETUP: reins_sdk::Setup<Prepared> = reins_sdk::Setup::new();

fn prepare(config_text: &str) -> Result<Prepared, String> {
    let config: Config = reins_sdk::parse_config_text(config_text)?;
    let (phrases, patterns) = compile(&config)?;
    for p in &patterns {
        detect::patterns::warm(&p.regex);
    }
    Ok(Prepared { config, phrases, patterns })
}

impl Guest for Blocklist {
    fn validate(ctx: CallContext, output: String) -> Result<Verdict, String> {
        let prepared = SETUP.get(&ctx.config, prepare)?;
        let (config, phrases, patterns) = (&prepared.config, &prepared.phrases, &prepared.patterns);
        let doc = detect::doc::read_output(&output);
        let mut violations = Vec::new();
        if phrases.is_empty() && patterns.is_empty() {
            return Ok(Verdict::ok());
        }
        let finish = |what: String, at: String, count: usize| {
            let more = match count {
                0 | 1 => String::new(),
                2 => " (and once more)".to_string(),
                n => format!(" (and {} more times)", n - 1),
            };
            let mut message = match config.action {
                Action::Repair => format!("contains {what} at {at}{more}; rephrase without it"),
                Action::Fail => format!("contains {what} at {at}{more}, which an answer must never contain"),
            };
            if let Some(hint) = &config.hint {
                message.push_str(&format!(" ({hint})"));
            }
            message
        };
        detect::doc::for_each_string(&doc, &mut |path, text| {
            let folded = detect::fold(text);
            let mut positions = CharPositions::new(text);
            // (first occurrence in the original, message) in text order.
            let mut found: Vec<(usize, String)> = Vec::new();
            for phrase in phrases {
                let hits = detect::occurrences(&folded.text, &phrase.folded, config.whole_words);
                if let Some(&(s, e)) = hits.first() {
                    let (os, oe) = folded.original_span(s, e);
                    let what = format!("the blocked phrase {:?}", phrase.written);
                    found.push((os, finish(what, positions.describe(os, oe), hits.len())));
                }
            }
            for pattern in patterns {
                let mut hits = pattern.regex.find_iter(&folded.text).filter(|m| !m.is_empty());
                if let Some(first) = hits.next() {
                    let (os, oe) = folded.original_span(first.start(), first.end());
                    let what = format!("text matching the blocked pattern `{}`", pattern.written);
                    found.push((os, finish(what, positions.describe(os, oe), 1 + hits.count())));
                }
            }
            found.sort_by_key(|(at, _)| *at);
            violations.extend(found.into_iter().map(|(_, message)| Violation::error(path, "blocked", message)));
        });
        Ok(Verdict::new(violations))
    }
}

impl reins_sdk::init::Guest for Blocklist {
    fn init(config: String) -> Result<(), String> {
        SETUP.init(&config, prepare)
    }
}

reins_sdk::export_validator!(Blocklist);
reins_sdk::export_init!(Blocklist);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn run(config: Value, output: &Value) -> Result<Verdict, String> {
        Blocklist::validate(CallContext::for_test(&config, &json!({})), output.to_string())
    }

    fn messages(v: &Verdict) -> Vec<(String, String)> {
        v.violations.iter().map(|x| (x.path.clone(), x.message.clone())).collect()
    }

    #[test]
    fn hidden_phrases_are_caught() {
        let config = json!({"phrases": ["free money", "Project Falcon"]});
        for text in [
            "Get FREE   MONEY now",
            "Get fr\u{200B}ee mo\u{2060}ney now",
            "Get fr\u{0435}\u{0435} m\u{043E}ney now",
            "Get Ｆｒｅｅ Ｍｏｎｅｙ now",
            "Get free&nbsp;money now",
            "Get free\nmoney now",
        ] {
            let v = run(config.clone(), &json!(text)).unwrap();
            assert_eq!(v.violations.len(), 1, "{text:?}");
            let x = &v.violations[0];
            assert!(x.is_error() && x.code == "blocked" && x.path.is_empty());
            assert!(x.message.starts_with("contains the blocked phrase \"free money\" at characters 5–"), "{}", x.message);
        }
    }

    #[test]
    fn whole_words_by_default() {
        let config = json!({"phrases": ["ass"]});
        assert!(run(config.clone(), &json!("a classic assessment")).unwrap().violations.is_empty());
        assert_eq!(run(config.clone(), &json!("you ass.")).unwrap().violations.len(), 1);
        let loose = json!({"phrases": ["ass"], "whole_words": false});
        assert_eq!(run(loose, &json!("a classic")).unwrap().violations.len(), 1);
    }

    #[test]
    fn spans_count_and_paths() {
        let config = json!({"phrases": ["falcon"], "action": "fail", "hint": "codenames are internal"});
        let doc = json!({"a": "ok", "b": ["Falcon, falcon and FALCON", "x"]});
        let v = run(config, &doc).unwrap();
        assert_eq!(
            messages(&v),
            [(
                "/b/0".to_string(),
                "contains the blocked phrase \"falcon\" at characters 1–6 (and 2 more times), \
                 which an answer must never contain (codenames are internal)"
                    .to_string()
            )]
        );
    }

    #[test]
    fn patterns_run_on_the_folded_text() {
        let config = json!({"patterns": ["acme\\s+v\\d+", "ZZZ"]});
        let v = run(config, &json!("The new ACME  V2 (аcme v3) ships.")).unwrap();
        assert_eq!(
            messages(&v),
            [("".to_string(), "contains text matching the blocked pattern `acme\\s+v\\d+` at characters 9–16 (and once more); rephrase without it".to_string())]
        );
    }

    #[test]
    fn config_errors() {
        let e = run(json!({"patterns": ["ok", "(unclosed"]}), &json!("x")).err().unwrap();
        assert!(e.starts_with("config.patterns[1] (\"(unclosed\"): the regex does not compile"), "{e}");
        let e = run(json!({"phrases": ["\u{200B} "]}), &json!("x")).err().unwrap();
        assert!(e.starts_with("config.phrases[0]"), "{e}");
        let e = run(json!({"action": "redact"}), &json!("x")).err().unwrap();
        assert!(e.starts_with("config.action"), "{e}");
    }
}
