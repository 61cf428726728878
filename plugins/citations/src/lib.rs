//! `citations`: every passage an answer cites must exist and must have been
//! in the context the model was given.
//!
//! The host labels each context chunk in the prompt with its id
//! (`[guide/install.md#3] ...`) and tells validators what the run's context
//! was (`reins_sdk::context_chunks()`: every chunk retrieved or sent by the
//! caller, and whether the context builder kept it). Citations are found
//! with `pattern` (its first capture group is the id) in a text answer, or
//! in every string leaf of a JSON one. A cited id that is
//!
//! - no chunk of the run → `unknown-citation` (the model made it up, or
//!   mangled a real one);
//! - a chunk the context builder left out → `not-in-context` (the model
//!   cannot have read it: it came from memory, or from an earlier turn);
//!
//! and with `require = true`, an answer citing nothing while the context had
//! passages → `no-citation`. Messages name what may be cited, written the
//! way the answer writes citations, so a repair can fix the answer:
//!
//! ```text
//! cites [a.md#9], which is not in the context; cite only these: [a.md#1], [b.md#2]
//! ```

use regex::Regex;
use reins_sdk::validator::{Guest, Verdict};
use reins_sdk::{CallContext, Severity, Violation};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};

/// Matches `[PATH#N]`, the ids the host gives chunks (`guide/install.md#3`).
const DEFAULT_PATTERN: &str = r"\[([^\[\]\s]+#\d+)\]";
/// Most ids listed in one message; the rest are counted.
const MAX_LISTED: usize = 20;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// A citation; its first capture group is the chunk id.
    pattern: String,
    /// An answer citing nothing while the context had passages is a violation.
    require: bool,
    severity: Level,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pattern: DEFAULT_PATTERN.to_string(),
            require: false,
            severity: Level::Error,
        }
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Level {
    Error,
    Warning,
}

impl Level {
    fn severity(self) -> Severity {
        match self {
            Level::Error => Severity::Error,
            Level::Warning => Severity::Warning,
        }
    }
}

/// The config, checked, and its pattern compiled.
struct Prepared {
    config: Config,
    pattern: Regex,
}

static SETUP: reins_sdk::Setup<Prepared> = reins_sdk::Setup::new();

fn prepare(config_text: &str) -> Result<Prepared, String> {
    let config: Config = reins_sdk::parse_config_text(config_text)?;
    let pattern = detect::patterns::compile(&config.pattern).map_err(|e| {
        format!(
            "config.pattern ({:?}): the regex does not compile: {e}",
            config.pattern
        )
    })?;
    if pattern.captures_len() < 2 {
        return Err(format!(
            "config.pattern ({:?}): needs a capture group around the chunk id, e.g. \\[([^\\]]+)\\]",
            config.pattern
        ));
    }
    detect::patterns::warm(&pattern);
    Ok(Prepared { config, pattern })
}

/// One chunk of the run's context, as `context-chunks` tells it.
#[derive(Deserialize)]
struct ContextChunk {
    id: String,
    #[serde(default)]
    kept: bool,
}

struct Citations;

impl Guest for Citations {
    fn validate(ctx: CallContext, output: String) -> Result<Verdict, String> {
        let prepared = SETUP.get(&ctx.config, prepare)?;
        let chunks: Vec<ContextChunk> = serde_json::from_str(&reins_sdk::context_chunks())
            .map_err(|e| format!("the host's context-chunks is not a JSON array of chunks: {e}"))?;
        let doc = detect::doc::read_output(&output);
        Ok(Verdict::new(check(
            &prepared.config,
            &prepared.pattern,
            &chunks,
            &doc,
        )))
    }
}

impl reins_sdk::init::Guest for Citations {
    fn init(config: String) -> Result<(), String> {
        SETUP.init(&config, prepare)
    }
}

reins_sdk::export_validator!(Citations);
reins_sdk::export_init!(Citations);

/// How the answer writes a citation around an id (`[` and `]` by default),
/// learnt from its first citation, so messages list ids the same way.
struct Style {
    before: String,
    after: String,
}

impl Style {
    fn cite(&self, id: &str) -> String {
        format!("{}{id}{}", self.before, self.after)
    }

    fn list(&self, ids: &[&str]) -> String {
        let mut out: Vec<String> = ids
            .iter()
            .take(MAX_LISTED)
            .map(|id| self.cite(id))
            .collect();
        if ids.len() > MAX_LISTED {
            out.push(format!("and {} more", ids.len() - MAX_LISTED));
        }
        out.join(", ")
    }
}

fn check(
    config: &Config,
    pattern: &Regex,
    chunks: &[ContextChunk],
    doc: &serde_json::Value,
) -> Vec<Violation> {
    let known: HashMap<&str, bool> = chunks.iter().map(|c| (c.id.as_str(), c.kept)).collect();
    let mut citable: Vec<&str> = Vec::new();
    let mut seen_citable = HashSet::new();
    for c in chunks.iter().filter(|c| c.kept) {
        if seen_citable.insert(c.id.as_str()) {
            citable.push(c.id.as_str());
        }
    }

    // (leaf pointer, cited id), each once, in document order.
    let mut cited: Vec<(String, String)> = Vec::new();
    let mut seen = HashSet::new();
    let mut style: Option<Style> = None;
    detect::doc::for_each_string(doc, &mut |path, text| {
        for caps in pattern.captures_iter(text) {
            let (Some(whole), Some(id)) = (caps.get(0), caps.get(1)) else {
                continue;
            };
            if id.as_str().is_empty() {
                continue;
            }
            style.get_or_insert_with(|| Style {
                before: text[whole.start()..id.start()].to_string(),
                after: text[id.end()..whole.end()].to_string(),
            });
            if seen.insert((path.to_string(), id.as_str().to_string())) {
                cited.push((path.to_string(), id.as_str().to_string()));
            }
        }
    });
    let style = style.unwrap_or(Style {
        before: "[".to_string(),
        after: "]".to_string(),
    });
    let severity = config.severity.severity();
    let may_cite = if citable.is_empty() {
        "the context had no passages, so cite none".to_string()
    } else {
        format!("cite only these: {}", style.list(&citable))
    };

    let mut violations = Vec::new();
    if cited.is_empty() {
        if config.require && !citable.is_empty() {
            violations.push(Violation::new(
                severity,
                "",
                "no-citation",
                format!(
                    "cites no passage of the context; cite the passages the answer rests on, from these: {}",
                    style.list(&citable)
                ),
            ));
        }
        return violations;
    }
    for (path, id) in cited {
        let (code, problem) = match known.get(id.as_str()) {
            Some(true) => continue,
            Some(false) => (
                "not-in-context",
                "which was left out of the context the answer was written from",
            ),
            None => ("unknown-citation", "which is not in the context"),
        };
        violations.push(Violation::new(
            severity,
            path,
            code,
            format!("cites {}, {problem}; {may_cite}", style.cite(&id)),
        ));
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const CONTEXT: &str = r#"[
        {"id": "a.md#1", "source": "a.md", "score": 0.9, "kept": true},
        {"id": "b.md#2", "source": "b.md", "score": 0.8, "kept": true},
        {"id": "c.md#3", "source": "c.md", "score": 0.2, "kept": false}
    ]"#;

    fn run(config: Value, context: &str, output: &str) -> Vec<Violation> {
        reins_sdk::set_context_chunks(context);
        Citations::validate(
            CallContext::for_test(&config, &json!({})),
            output.to_string(),
        )
        .unwrap()
        .violations
    }

    fn found(v: &[Violation]) -> Vec<(&str, &str, &str)> {
        v.iter()
            .map(|x| (x.path.as_str(), x.code.as_str(), x.message.as_str()))
            .collect()
    }

    #[test]
    fn citations_of_kept_chunks_pass() {
        let v = run(
            json!({}),
            CONTEXT,
            "\"Install it first [a.md#1], then configure it [b.md#2] [a.md#1].\"",
        );
        assert!(v.is_empty(), "{:?}", found(&v));
        // Brackets that are no chunk id are no citation.
        assert!(run(json!({}), CONTEXT, "\"See [1] and [the guide].\"").is_empty());
    }

    #[test]
    fn an_unknown_citation_lists_what_may_be_cited() {
        let v = run(json!({}), CONTEXT, "\"Install it [a.md#9].\"");
        assert_eq!(
            found(&v),
            [(
                "",
                "unknown-citation",
                "cites [a.md#9], which is not in the context; cite only these: [a.md#1], [b.md#2]"
            )]
        );
        assert!(v[0].is_error());
    }

    #[test]
    fn a_chunk_left_out_of_the_context_cannot_be_cited() {
        let v = run(json!({}), CONTEXT, "\"Per [c.md#3], restart.\"");
        assert_eq!(
            found(&v),
            [(
                "",
                "not-in-context",
                "cites [c.md#3], which was left out of the context the answer was written from; cite only these: \
                 [a.md#1], [b.md#2]"
            )]
        );
    }

    #[test]
    fn without_context_every_citation_is_unknown() {
        let v = run(
            json!({}),
            "[]",
            "Plain text, not JSON, citing [guide/install.md#3].",
        );
        assert_eq!(
            found(&v),
            [(
                "",
                "unknown-citation",
                "cites [guide/install.md#3], which is not in the context; the context had no passages, so cite none"
            )]
        );
        assert!(run(json!({}), "[]", "\"No citations here.\"").is_empty());
    }

    #[test]
    fn json_answers_are_checked_leaf_by_leaf() {
        let doc = json!({"steps": [{"text": "Unpack [a.md#1]"}, {"text": "Run [x.md#4] and [x.md#4]"}], "n": 3});
        let v = run(json!({}), CONTEXT, &doc.to_string());
        assert_eq!(v.len(), 1);
        assert_eq!(
            (v[0].path.as_str(), v[0].code.as_str()),
            ("/steps/1/text", "unknown-citation")
        );
    }

    #[test]
    fn require_flags_an_answer_citing_nothing() {
        let v = run(json!({"require": true}), CONTEXT, "\"Just restart it.\"");
        assert_eq!(
            found(&v),
            [(
                "",
                "no-citation",
                "cites no passage of the context; cite the passages the answer rests on, from these: [a.md#1], [b.md#2]"
            )]
        );
        // Nothing to cite: nothing required.
        assert!(run(json!({"require": true}), "[]", "\"Just restart it.\"").is_empty());
        assert!(run(json!({"require": true}), CONTEXT, "\"Restart [b.md#2].\"").is_empty());
    }

    #[test]
    fn a_custom_pattern_sets_how_ids_are_listed() {
        let config = json!({"pattern": r"\(source: ([^)]+)\)", "severity": "warning"});
        let v = run(config, CONTEXT, "\"Restart it (source: z.md#1).\"");
        assert_eq!(
            found(&v),
            [(
                "",
                "unknown-citation",
                "cites (source: z.md#1), which is not in the context; cite only these: (source: a.md#1), (source: b.md#2)"
            )]
        );
        assert!(!v[0].is_error());
    }

    #[test]
    fn long_lists_are_cut() {
        let chunks: Vec<Value> = (0..30)
            .map(|i| json!({"id": format!("d.md#{i}"), "kept": true}))
            .collect();
        let v = run(json!({}), &Value::Array(chunks).to_string(), "\"[e.md#1]\"");
        assert!(
            v[0].message.ends_with("[d.md#19], and 10 more"),
            "{}",
            v[0].message
        );
    }

    #[test]
    fn bad_patterns_are_refused_with_the_key() {
        assert!(
            prepare(r#"{"pattern": "(unclosed"}"#)
                .err()
                .unwrap()
                .contains("config.pattern")
        );
        assert!(
            prepare(r#"{"pattern": "\\[\\w+\\]"}"#)
                .err()
                .unwrap()
                .contains("capture group")
        );
        assert!(
            prepare(r#"{"severity": "fatal"}"#)
                .err()
                .unwrap()
                .contains("severity")
        );
        assert!(prepare("{}").is_ok());
    }
}
