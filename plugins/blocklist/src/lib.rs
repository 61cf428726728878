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
//!
//! It is also a stream checker: while the answer streams, each piece is
//! matched (with the end of the text already sent, so that a phrase split
//! between two pieces is found) before the client sees it. A blocked
//! phrase or pattern cuts the stream with a reason naming it (the default,
//! `stream_action = "cut"`) or is replaced by `[BLOCKED]` in the piece
//! (`stream_action = "mask"`; a match that began in text already sent
//! still cuts). A piece that ends with the first words of a blocked phrase
//! (`guaranteed` of `guaranteed returns`) is held back until the next piece
//! shows whether the rest follows.

use detect::CharPositions;
use reins_sdk::stream_checker::{Guest as StreamGuest, Verdict as StreamVerdict};
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
    /// While the answer streams: cut the stream, or mask the match.
    stream_action: StreamAction,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            phrases: Vec::new(),
            patterns: Vec::new(),
            action: Action::Repair,
            whole_words: true,
            hint: None,
            stream_action: StreamAction::Cut,
        }
    }
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Default, Debug)]
#[serde(rename_all = "lowercase")]
enum StreamAction {
    /// Stop the stream, with a reason naming the phrase or pattern.
    #[default]
    Cut,
    /// Replace the match in the piece with [`MASK`] (cut if it began in
    /// text already sent).
    Mask,
}

/// What a masked match reads as.
const MASK: &str = "[BLOCKED]";

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
            return Err(format!(
                "config.phrases[{i}]: {written:?} is empty once normalized"
            ));
        }
        phrases.push(Phrase {
            written: written.clone(),
            folded,
        });
    }
    let mut patterns = Vec::with_capacity(config.patterns.len());
    for (i, written) in config.patterns.iter().enumerate() {
        // The text is folded (lower case, ASCII look-alikes), so the pattern's
        // letters are folded the same way instead of matching with `(?i)`.
        let regex =
            detect::patterns::compile(&detect::patterns::fold_pattern(written)).map_err(|e| {
                format!("config.patterns[{i}] ({written:?}): the regex does not compile: {e}")
            })?;
        patterns.push(Pattern {
            written: written.clone(),
            regex,
        });
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
    Ok(Prepared {
        config,
        phrases,
        patterns,
    })
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
                Action::Fail => {
                    format!("contains {what} at {at}{more}, which an answer must never contain")
                }
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
                let mut hits = pattern
                    .regex
                    .find_iter(&folded.text)
                    .filter(|m| !m.is_empty());
                if let Some(first) = hits.next() {
                    let (os, oe) = folded.original_span(first.start(), first.end());
                    let what = format!("text matching the blocked pattern `{}`", pattern.written);
                    found.push((
                        os,
                        finish(what, positions.describe(os, oe), 1 + hits.count()),
                    ));
                }
            }
            found.sort_by_key(|(at, _)| *at);
            violations.extend(
                found
                    .into_iter()
                    .map(|(_, message)| Violation::error(path, "blocked", message)),
            );
        });
        Ok(Verdict::new(violations))
    }
}

impl reins_sdk::init::Guest for Blocklist {
    fn init(config: String) -> Result<(), String> {
        SETUP.init(&config, prepare)
    }
}

impl StreamGuest for Blocklist {
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

reins_sdk::export_validator!(Blocklist);
reins_sdk::export_stream_checker!(Blocklist);
reins_sdk::export_init!(Blocklist);

/// The least of the text already sent that is matched with a piece (more
/// for long phrases: four bytes per byte of the longest, for the invisible
/// characters and entities folding removes). Patterns see no further back.
const CONTEXT: usize = 256;

/// Where the context taken from `released` starts: at most `len` bytes
/// back, moved forward to a word's start so that the cut does not make a
/// word boundary (`ass` at the start of `…class`).
fn context_start(released: &str, len: usize) -> usize {
    let mut from = released.floor_char_boundary(released.len().saturating_sub(len));
    if from > 0 && !released[..from].ends_with(char::is_whitespace) {
        from = released[from..]
            .find(char::is_whitespace)
            .map_or(released.len(), |i| from + i);
    }
    from
}

/// One match that reaches into the piece: its span in the context + piece
/// text, and what it is (for the reason).
struct Hit {
    start: usize,
    end: usize,
    what: String,
}

/// The stream checker's decision for one piece: `pending`, with the end of
/// `released` in front so that a phrase split between pieces is found.
fn check_piece(prepared: &Prepared, released: &str, pending: &str, last: bool) -> StreamVerdict {
    let (config, phrases, patterns) = (&prepared.config, &prepared.phrases, &prepared.patterns);
    if pending.is_empty() || (phrases.is_empty() && patterns.is_empty()) {
        return StreamVerdict::Pass;
    }
    let longest = phrases.iter().map(|p| p.folded.len()).max().unwrap_or(0);
    let tail = &released[context_start(released, CONTEXT.max(4 * longest))..];
    let base = tail.len();
    let text = [tail, pending].concat();
    let folded = detect::fold(&text);

    let mut hits: Vec<Hit> = Vec::new();
    for phrase in phrases {
        for (s, e) in detect::occurrences(&folded.text, &phrase.folded, config.whole_words) {
            let (start, end) = folded.original_span(s, e);
            if end > base {
                hits.push(Hit {
                    start,
                    end,
                    what: format!("the blocked phrase {:?}", phrase.written),
                });
            }
        }
    }
    for pattern in patterns {
        for m in pattern
            .regex
            .find_iter(&folded.text)
            .filter(|m| !m.is_empty())
        {
            let (start, end) = folded.original_span(m.start(), m.end());
            if end > base {
                hits.push(Hit {
                    start,
                    end,
                    what: format!("text matching the blocked pattern `{}`", pattern.written),
                });
            }
        }
    }
    hits.sort_by_key(|h| (h.start, h.end));

    let cut = match config.stream_action {
        StreamAction::Cut => hits.first(),
        // Text already sent cannot be masked.
        StreamAction::Mask => hits.iter().find(|h| h.start < base),
    };
    if let Some(hit) = cut {
        let mut reason = format!("the answer was stopped: it contained {}", hit.what);
        if let Some(hint) = &config.hint {
            reason.push_str(&format!(" ({hint})"));
        }
        return StreamVerdict::Cut(reason);
    }
    if !last && ends_with_phrase_start(&folded.text, phrases, config.whole_words) {
        return StreamVerdict::Hold;
    }
    if hits.is_empty() {
        return StreamVerdict::Pass;
    }
    // Mask: the hits as spans of the piece, overlapping ones merged.
    let mut spans: Vec<(usize, usize, String)> = Vec::new();
    for h in hits {
        let (start, end) = (h.start - base, h.end - base);
        match spans.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => spans.push((start, end, MASK.to_string())),
        }
    }
    StreamVerdict::Replace(detect::replace_spans(pending, &spans))
}

/// Whether `folded` ends with the first words of a blocked phrase (a
/// proper prefix that stops before one of its spaces), which the next
/// piece may complete. Pieces are split at whitespace, so a prefix that
/// stops inside a word cannot be continued. With `whole_words`, the prefix
/// must start a word, as the phrase would.
fn ends_with_phrase_start(folded: &str, phrases: &[Phrase], whole_words: bool) -> bool {
    phrases.iter().any(|phrase| {
        let p = phrase.folded.as_str();
        let starts_word = p.chars().next().is_some_and(char::is_alphanumeric);
        p.match_indices(' ').any(|(k, _)| {
            let prefix = &p[..k];
            !prefix.is_empty()
                && folded.ends_with(prefix)
                && !(whole_words
                    && starts_word
                    && folded[..folded.len() - prefix.len()]
                        .chars()
                        .next_back()
                        .is_some_and(char::is_alphanumeric))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn run(config: Value, output: &Value) -> Result<Verdict, String> {
        Blocklist::validate(
            CallContext::for_test(&config, &json!({})),
            output.to_string(),
        )
    }

    fn messages(v: &Verdict) -> Vec<(String, String)> {
        v.violations
            .iter()
            .map(|x| (x.path.clone(), x.message.clone()))
            .collect()
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
            assert!(
                x.message
                    .starts_with("contains the blocked phrase \"free money\" at characters 5–"),
                "{}",
                x.message
            );
        }
    }

    #[test]
    fn whole_words_by_default() {
        let config = json!({"phrases": ["ass"]});
        assert!(
            run(config.clone(), &json!("a classic assessment"))
                .unwrap()
                .violations
                .is_empty()
        );
        assert_eq!(
            run(config.clone(), &json!("you ass."))
                .unwrap()
                .violations
                .len(),
            1
        );
        let loose = json!({"phrases": ["ass"], "whole_words": false});
        assert_eq!(run(loose, &json!("a classic")).unwrap().violations.len(), 1);
    }

    #[test]
    fn spans_count_and_paths() {
        let config =
            json!({"phrases": ["falcon"], "action": "fail", "hint": "codenames are internal"});
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

    /// The stream checker's verdict as (what, text), for comparing.
    fn stream(config: &Value, released: &str, pending: &str, last: bool) -> (&'static str, String) {
        let ctx = CallContext::for_test(config, &json!({}));
        match Blocklist::check(ctx, released.into(), pending.into(), last).unwrap() {
            StreamVerdict::Pass => ("pass", String::new()),
            StreamVerdict::Hold => ("hold", String::new()),
            StreamVerdict::Cut(reason) => ("cut", reason),
            StreamVerdict::Replace(text) => ("replace", text),
        }
    }

    fn is(what: &'static str, text: &str) -> (&'static str, String) {
        (what, text.to_string())
    }

    const PASS: (&str, String) = ("pass", String::new());
    const HOLD: (&str, String) = ("hold", String::new());

    #[test]
    fn stream_cuts_a_blocked_phrase_by_default() {
        let config = json!({"phrases": ["guaranteed returns", "risk-free investment"], "hint": "no promises"});
        assert_eq!(
            stream(
                &config,
                "Our fund ",
                "offers Guaranteed  Returns every year. ",
                false
            ),
            is(
                "cut",
                "the answer was stopped: it contained the blocked phrase \"guaranteed returns\" (no promises)"
            )
        );
        // Hidden with zero-width characters and look-alike letters.
        let (what, _) = stream(
            &config,
            "",
            "A r\u{0456}sk-fr\u{0435}\u{0435} inv\u{200B}estment. ",
            false,
        );
        assert_eq!(what, "cut");
        assert_eq!(
            stream(&config, "Our fund ", "carries market risk. ", false),
            PASS
        );
        assert_eq!(stream(&json!({}), "", "guaranteed returns", false), PASS);
    }

    #[test]
    fn stream_holds_the_start_of_a_phrase() {
        let config = json!({"phrases": ["guaranteed returns", "free money"]});
        // "guaranteed" may be followed by "returns": wait for the next word.
        assert_eq!(stream(&config, "This fund is ", "guaranteed ", false), HOLD);
        assert_eq!(stream(&config, "This fund is ", "GUARANTEED", false), HOLD);
        assert_eq!(
            stream(&config, "This fund is ", "guaranteed returns. ", false),
            is(
                "cut",
                "the answer was stopped: it contained the blocked phrase \"guaranteed returns\""
            )
        );
        assert_eq!(
            stream(
                &config,
                "This fund is ",
                "guaranteed to be audited. ",
                false
            ),
            PASS
        );
        // Nothing follows the end of the stream.
        assert_eq!(stream(&config, "This fund is ", "guaranteed", true), PASS);
        // A whole word only: "unguaranteed" starts no phrase; "risk-free" ends with the word "free".
        assert_eq!(stream(&config, "", "it is unguaranteed ", false), PASS);
        assert_eq!(stream(&config, "", "risk-free ", false), HOLD);
        // One-word phrases need no hold (pieces never split a word).
        assert_eq!(
            stream(&json!({"phrases": ["falcon"]}), "", "project ", false),
            PASS
        );
    }

    #[test]
    fn stream_finds_a_phrase_split_between_pieces() {
        let config = json!({"phrases": ["guaranteed returns"]});
        // The first word was sent (by a checker that did not hold it).
        let (what, reason) = stream(
            &config,
            "This fund offers guaranteed ",
            "returns every year.",
            false,
        );
        assert_eq!(what, "cut");
        assert!(reason.contains("\"guaranteed returns\""), "{reason}");
        // Mask cannot unsend the first word: it cuts too.
        let mask = json!({"phrases": ["guaranteed returns"], "stream_action": "mask"});
        assert_eq!(
            stream(
                &mask,
                "This fund offers guaranteed ",
                "returns every year.",
                false
            )
            .0,
            "cut"
        );
        // A match wholly in the text already sent is not this piece's.
        assert_eq!(
            stream(&config, "guaranteed returns ", "and more.", false),
            PASS
        );
        // A phrase split between pieces in several ways.
        for (released, pending) in [
            ("free ", "money"),
            ("free", " money"),
            ("fr\u{200B}ee\n", "mon\u{0435}y!"),
        ] {
            let (what, _) = stream(
                &json!({"phrases": ["free money"]}),
                released,
                pending,
                false,
            );
            assert_eq!(what, "cut", "{released:?} {pending:?}");
        }
    }

    #[test]
    fn stream_context_starts_at_a_word() {
        // Cut inside "class", the context would start with "ass".
        assert_eq!(context_start("a class act", 6), 7);
        assert_eq!(context_start("a class", 3), 7);
        assert_eq!(context_start("a class act", 4), 7);
        assert_eq!(context_start("a class act", 100), 0);
        assert_eq!(context_start("a class act", 3), 8);
        assert_eq!(context_start("é class", 6), 2);
        assert_eq!(context_start("é é", 2), 3);
        assert_eq!(context_start("", 10), 0);
    }

    #[test]
    fn stream_masks_when_asked() {
        let config = json!({"phrases": ["free money"], "patterns": ["\\bproject (falcon|osprey)\\b"], "stream_action": "mask"});
        assert_eq!(
            stream(
                &config,
                "Hi. ",
                "Get FREE money from Project  Falcon today. ",
                false
            ),
            is("replace", "Get [BLOCKED] from [BLOCKED] today. ")
        );
        // The end is held first, then both are masked together.
        assert_eq!(stream(&config, "", "Get free money or free ", false), HOLD);
        assert_eq!(
            stream(&config, "", "Get free money or free money. ", false),
            is("replace", "Get [BLOCKED] or [BLOCKED]. ")
        );
        assert_eq!(stream(&config, "", "Nothing here. ", false), PASS);
        let e = Blocklist::check(
            CallContext::for_test(&json!({"stream_action": "redact"}), &json!({})),
            String::new(),
            "x".into(),
            false,
        )
        .err()
        .unwrap();
        assert!(e.starts_with("config.stream_action"), "{e}");
    }

    #[test]
    fn stream_patterns_cut_and_see_the_sent_text() {
        let config = json!({"patterns": ["\\bproject (falcon|osprey)\\b"]});
        assert_eq!(
            stream(&config, "", "About PROJECT Osprey: ", false),
            is(
                "cut",
                "the answer was stopped: it contained text matching the blocked pattern `\\bproject (falcon|osprey)\\b`"
            )
        );
        assert_eq!(
            stream(&config, "Ask about project ", "falcon later.", false).0,
            "cut"
        );
        assert_eq!(
            stream(&config, "Ask about project ", "management later.", false),
            PASS
        );
    }

    #[test]
    fn config_errors() {
        let e = run(json!({"patterns": ["ok", "(unclosed"]}), &json!("x"))
            .err()
            .unwrap();
        assert!(
            e.starts_with("config.patterns[1] (\"(unclosed\"): the regex does not compile"),
            "{e}"
        );
        let e = run(json!({"phrases": ["\u{200B} "]}), &json!("x"))
            .err()
            .unwrap();
        assert!(e.starts_with("config.phrases[0]"), "{e}");
        let e = run(json!({"action": "redact"}), &json!("x")).err().unwrap();
        assert!(e.starts_with("config.action"), "{e}");
    }
}
