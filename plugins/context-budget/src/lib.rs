//! `context-budget`: the default context builder.
//!
//! The chunks are ranked by score (strongest first; ties keep their input
//! order), filtered (a score floor, near-duplicates of a stronger chunk
//! already kept, a cap per source), packed into the token budget in rank
//! order, and ordered for the prompt. Tokens are the model's: every count
//! goes through the host's `count-tokens`, and each chunk also pays for
//! the label the host writes before it (`"\n\n[ID] "`), so what this keeps
//! is what the model is sent. The first chunk that does not fit is trimmed
//! to what is left (at a token boundary, at a word boundary where there is
//! one, with no ellipsis: the model sees a plain prefix) when enough is
//! left; every later chunk is dropped, so the context is always a prefix of
//! the ranking and never skips a strong chunk for a weaker short one.
//!
//! Every chunk left out or trimmed is explained through `explain-drop`,
//! with a reason an operator can read in the run's trace:
//!
//! ```text
//! score 0.12 under the floor 0.20
//! near-duplicate of guide/install.md#2 (similarity 0.93)
//! 3 chunks of guide/install.md already kept (max_per_source = 3)
//! trimmed to 120 of 480 tokens (budget)
//! over budget: needs 310 tokens, 45 left
//! ```
//!
//! The algorithm ([`build`]) takes its token counter and its explainer as
//! arguments ([`Budget`]), so its native unit tests count words and collect
//! the explanations, and the component passes the host's imports.

use reins_sdk::CallContext;
use reins_sdk::context::{Chunk, Guest};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};

#[derive(Deserialize, Debug, Clone)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Chunks scoring under this are dropped.
    min_score: f64,
    /// At most this many chunks of one source; 0 = no cap.
    max_per_source: usize,
    /// Jaccard similarity of word 3-shingles at or above which a chunk is a
    /// near-duplicate of a stronger one already kept; 0 = no check.
    near_duplicate: f64,
    order: Order,
    /// The first chunk that does not fit is trimmed only if at least this
    /// many tokens are left for its text.
    min_trim_tokens: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_score: 0.0,
            max_per_source: 0,
            near_duplicate: 0.85,
            order: Order::Ends,
            min_trim_tokens: 32,
        }
    }
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Order {
    /// Strongest at the ends of the context, weakest in the middle.
    Ends,
    /// Strongest first.
    Score,
}

static SETUP: reins_sdk::Setup<Config> = reins_sdk::Setup::new();

fn parse(config_text: &str) -> Result<Config, String> {
    let config: Config = reins_sdk::parse_config_text(config_text)?;
    if !config.min_score.is_finite() {
        return Err(format!(
            "config.min_score: must be a number, got {}",
            config.min_score
        ));
    }
    if !(0.0..=1.0).contains(&config.near_duplicate) {
        return Err(format!(
            "config.near_duplicate: must be between 0 (off) and 1, got {}",
            config.near_duplicate
        ));
    }
    Ok(config)
}

/// What the algorithm needs from its host: a token counter and somewhere
/// to say why a chunk was dropped or trimmed.
trait Budget {
    fn count(&mut self, text: &str) -> u32;
    fn explain(&mut self, chunk_id: &str, reason: String);
}

/// The host's `count-tokens` and `explain-drop`.
struct Host;

impl Budget for Host {
    fn count(&mut self, text: &str) -> u32 {
        reins_sdk::count_tokens(text)
    }
    fn explain(&mut self, chunk_id: &str, reason: String) {
        reins_sdk::explain_drop(chunk_id, &reason);
    }
}

struct ContextBudget;

impl Guest for ContextBudget {
    fn assemble(
        ctx: CallContext,
        _query: String,
        chunks: Vec<Chunk>,
        budget_tokens: u32,
    ) -> Result<Vec<Chunk>, String> {
        let config = SETUP.get(&ctx.config, parse)?;
        Ok(build(&config, chunks, budget_tokens, &mut Host))
    }
}

impl reins_sdk::init::Guest for ContextBudget {
    fn init(config: String) -> Result<(), String> {
        SETUP.init(&config, parse)
    }
}

reins_sdk::export_context!(ContextBudget);
reins_sdk::export_init!(ContextBudget);

/// What the host writes before a chunk's text in the prompt.
fn label(id: &str) -> String {
    format!("\n\n[{id}] ")
}

/// A score to rank and compare by: NaN (which a caller could send) ranks
/// last and is under every floor.
fn rank_score(score: f32) -> f64 {
    if score.is_nan() {
        f64::NEG_INFINITY
    } else {
        f64::from(score)
    }
}

/// The chunks to send, in prompt order; every other chunk (and the trimmed
/// one) explained through `host`.
fn build(
    config: &Config,
    chunks: Vec<Chunk>,
    budget_tokens: u32,
    host: &mut dyn Budget,
) -> Vec<Chunk> {
    let mut ranked = chunks;
    // Stable: equal scores keep their input order.
    ranked.sort_by(|a, b| rank_score(b.score).total_cmp(&rank_score(a.score)));

    // Floor, near-duplicates, cap per source: each against the stronger
    // chunks that passed before it.
    let mut passed: Vec<(Chunk, HashSet<u64>)> = Vec::new();
    let mut per_source: HashMap<String, usize> = HashMap::new();
    for chunk in ranked {
        let score = rank_score(chunk.score);
        if score < config.min_score {
            host.explain(
                &chunk.id,
                format!(
                    "score {:.2} under the floor {:.2}",
                    chunk.score, config.min_score
                ),
            );
            continue;
        }
        let shingles = shingles(&chunk.text);
        if config.near_duplicate > 0.0 {
            let twin = passed
                .iter()
                .map(|(kept, theirs)| (kept, jaccard(&shingles, theirs)))
                .filter(|(_, similarity)| *similarity >= config.near_duplicate)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((kept, similarity)) = twin {
                host.explain(
                    &chunk.id,
                    format!("near-duplicate of {} (similarity {similarity:.2})", kept.id),
                );
                continue;
            }
        }
        if config.max_per_source > 0 {
            let n = per_source.entry(chunk.source.clone()).or_insert(0);
            if *n >= config.max_per_source {
                let chunks = if *n == 1 { "chunk" } else { "chunks" };
                host.explain(
                    &chunk.id,
                    format!(
                        "{n} {chunks} of {} already kept (max_per_source = {})",
                        chunk.source, config.max_per_source
                    ),
                );
                continue;
            }
            *n += 1;
        }
        passed.push((chunk, shingles));
    }

    // Pack in rank order; the first chunk that does not fit may be trimmed,
    // every later one is dropped.
    let budget = u64::from(budget_tokens);
    let mut used: u64 = 0;
    let mut kept: Vec<Chunk> = Vec::new();
    // The first chunk that did not fit: the ones after it are dropped.
    let mut full: Option<String> = None;
    for (mut chunk, _) in passed {
        let label_cost = u64::from(host.count(&label(&chunk.id)));
        let text_cost = u64::from(host.count(&chunk.text));
        let cost = label_cost + text_cost;
        let left = budget - used;
        if full.is_none() && cost <= left {
            used += cost;
            kept.push(chunk);
            continue;
        }
        let Some(first) = &full else {
            full = Some(chunk.id.clone());
            let room = left.saturating_sub(label_cost);
            if room > 0 && room >= u64::from(config.min_trim_tokens) {
                let room = u32::try_from(room).unwrap_or(u32::MAX);
                if let Some((text, n)) = trim(&chunk.text, room, host) {
                    host.explain(
                        &chunk.id,
                        format!("trimmed to {n} of {text_cost} tokens (budget)"),
                    );
                    used += label_cost + u64::from(n);
                    chunk.text = text;
                    kept.push(chunk);
                    continue;
                }
            }
            host.explain(
                &chunk.id,
                format!("over budget: needs {cost} tokens, {left} left"),
            );
            continue;
        };
        // One that would fit still goes: a context never skips a stronger
        // chunk for a weaker one. Say so, or "needs 5, 9 left" reads as a bug.
        let after = if cost <= left {
            format!(" (after {first}, which did not fit)")
        } else {
            String::new()
        };
        host.explain(
            &chunk.id,
            format!("over budget: needs {cost} tokens, {left} left{after}"),
        );
    }
    order(kept, config.order)
}

/// The longest prefix of `text` of at most `room` tokens, found by binary
/// search over its character boundaries, then moved back to the last word
/// boundary when the cut falls inside a word (and the prefix has one).
/// `None` when not even one character fits.
fn trim(text: &str, room: u32, host: &mut dyn Budget) -> Option<(String, u32)> {
    let ends: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .skip(1)
        .chain([text.len()])
        .collect();
    // ends[k] is the end of the prefix of k + 1 characters; find the last k
    // whose prefix fits.
    let (mut lo, mut hi) = (0usize, ends.len());
    let mut best: Option<(usize, u32)> = None;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let n = host.count(&text[..ends[mid]]);
        if n <= room {
            best = Some((ends[mid], n));
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let (end, n) = best?;
    let inside_word = !text[end..].starts_with(char::is_whitespace)
        && !text[..end].ends_with(char::is_whitespace)
        && end < text.len();
    if inside_word && let Some(space) = text[..end].rfind(char::is_whitespace) {
        let word_end = text[..space].trim_end().len();
        if word_end > 0 {
            let prefix = &text[..word_end];
            let m = host.count(prefix);
            if m <= room {
                return Some((prefix.to_owned(), m));
            }
        }
    }
    let prefix = text[..end].trim_end();
    if prefix.is_empty() {
        return None;
    }
    let m = if prefix.len() == end {
        n
    } else {
        host.count(prefix)
    };
    Some((prefix.to_owned(), m))
}

/// Prompt order of the kept chunks (given strongest first).
fn order(kept: Vec<Chunk>, order: Order) -> Vec<Chunk> {
    match order {
        Order::Score => kept,
        Order::Ends => {
            let mut front = Vec::with_capacity(kept.len());
            let mut back = Vec::with_capacity(kept.len() / 2);
            for (rank, chunk) in kept.into_iter().enumerate() {
                if rank % 2 == 0 {
                    front.push(chunk);
                } else {
                    back.push(chunk);
                }
            }
            front.extend(back.into_iter().rev());
            front
        }
    }
}

/// The word 3-shingles of `text` (lower case, punctuation stripped), hashed;
/// a text of one or two words is one shingle.
fn shingles(text: &str) -> HashSet<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let cleaned: String = text
        .chars()
        .filter_map(|c| {
            if c.is_alphanumeric() {
                Some(c)
            } else if c.is_whitespace() {
                Some(' ')
            } else {
                None
            }
        })
        .flat_map(char::to_lowercase)
        .collect();
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    let hash = |w: &[&str]| {
        // Fixed keys: the same words hash alike on every call.
        let mut h = DefaultHasher::new();
        w.hash(&mut h);
        h.finish()
    };
    if words.len() < 3 {
        return if words.is_empty() {
            HashSet::new()
        } else {
            HashSet::from([hash(&words)])
        };
    }
    words.windows(3).map(hash).collect()
}

/// |A ∩ B| / |A ∪ B|; 0 when both are empty (texts without words are not
/// anyone's duplicate).
fn jaccard(a: &HashSet<u64>, b: &HashSet<u64>) -> f64 {
    let common = a.intersection(b).count();
    let union = a.len() + b.len() - common;
    if union == 0 {
        0.0
    } else {
        common as f64 / union as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Counts words, and a label (`"\n\n[ID] "`) as one token.
    struct Words {
        explained: Vec<(String, String)>,
    }

    impl Budget for Words {
        fn count(&mut self, text: &str) -> u32 {
            text.split_whitespace().count() as u32
        }
        fn explain(&mut self, chunk_id: &str, reason: String) {
            self.explained.push((chunk_id.to_owned(), reason));
        }
    }

    fn chunk(id: &str, score: f32, source: &str, text: &str) -> Chunk {
        Chunk {
            id: id.into(),
            text: text.into(),
            score,
            source: source.into(),
        }
    }

    fn run(
        config: Value,
        chunks: Vec<Chunk>,
        budget: u32,
    ) -> (Vec<String>, Vec<Chunk>, Vec<(String, String)>) {
        let config = parse(&config.to_string()).unwrap();
        let mut host = Words {
            explained: Vec::new(),
        };
        let out = build(&config, chunks, budget, &mut host);
        (
            out.iter().map(|c| c.id.clone()).collect(),
            out,
            host.explained,
        )
    }

    fn words(n: usize, seed: &str) -> String {
        (0..n)
            .map(|i| format!("{seed}{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn packs_by_score_and_explains_the_rest() {
        let chunks = vec![
            chunk("a", 0.5, "faq", &words(5, "a")),
            chunk("b", 0.9, "policy", &words(5, "b")),
            chunk("c", 0.7, "about", &words(10, "c")),
            chunk("d", 0.6, "faq", &words(2, "d")),
        ];
        // b costs 6 (5 words + label), c 11: 17 fit in 19. d (3) is the
        // first that does not, with 1 token left for its text (under
        // min_trim_tokens): dropped, and every later chunk (a) with it.
        let (ids, _, why) = run(json!({"order": "score"}), chunks, 19);
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(
            why,
            [
                (
                    "d".to_string(),
                    "over budget: needs 3 tokens, 2 left".to_string()
                ),
                (
                    "a".to_string(),
                    "over budget: needs 6 tokens, 2 left".to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_weaker_chunk_that_would_fit_still_goes_after_one_that_did_not() {
        let chunks = vec![
            chunk("a", 0.9, "s", &words(5, "a")),
            chunk("b", 0.8, "s", &words(20, "b")),
            chunk("c", 0.7, "s", "c"),
        ];
        let (ids, _, why) = run(json!({}), chunks, 10);
        assert_eq!(ids, ["a"]);
        assert_eq!(
            why,
            [
                (
                    "b".to_string(),
                    "over budget: needs 21 tokens, 4 left".to_string()
                ),
                (
                    "c".to_string(),
                    "over budget: needs 2 tokens, 4 left (after b, which did not fit)".to_string()
                ),
            ]
        );
    }

    #[test]
    fn ties_keep_input_order_and_nan_ranks_last() {
        let chunks = vec![
            chunk("x", f32::NAN, "s", "nan words here"),
            chunk("p", 0.5, "s", "one two three"),
            chunk("q", 0.5, "s", "four five six"),
        ];
        let (ids, _, why) = run(json!({"order": "score", "min_score": -1.0}), chunks, 100);
        assert_eq!(ids, ["p", "q"]);
        assert_eq!(
            why,
            [(
                "x".to_string(),
                "score NaN under the floor -1.00".to_string()
            )]
        );
    }

    #[test]
    fn the_floor_drops_weak_chunks() {
        let chunks = vec![
            chunk("a", 0.12, "s", "weak"),
            chunk("b", 0.9, "s", "strong"),
        ];
        let (ids, _, why) = run(json!({"min_score": 0.2}), chunks, 100);
        assert_eq!(ids, ["b"]);
        assert_eq!(
            why,
            [(
                "a".to_string(),
                "score 0.12 under the floor 0.20".to_string()
            )]
        );
    }

    #[test]
    fn near_duplicates_of_stronger_chunks_are_dropped() {
        let base = "To install the agent, download the package, unpack it and run the installer as an administrator on the host";
        let twin = "To install the agent: download the package, unpack it, and run the installer as an administrator on the host!";
        let close = "To install the agent, download the package, unpack it and run the installer as an administrator on the server";
        let other = "Billing questions go to the finance team, who answer within two business days of the request";
        let chunks = vec![
            chunk("guide#2", 0.9, "guide", base),
            chunk("copy#7", 0.8, "copy", twin),
            chunk("old#1", 0.7, "old", close),
            chunk("billing#1", 0.6, "billing", other),
        ];
        // The same words (1.00), and one word changed: 16 of 18 shingles (0.89).
        let (ids, _, why) = run(json!({"order": "score"}), chunks.clone(), 1000);
        assert_eq!(ids, ["guide#2", "billing#1"]);
        assert_eq!(
            why,
            [
                (
                    "copy#7".to_string(),
                    "near-duplicate of guide#2 (similarity 1.00)".to_string()
                ),
                (
                    "old#1".to_string(),
                    "near-duplicate of guide#2 (similarity 0.89)".to_string()
                ),
            ]
        );
        // A higher threshold lets the changed one through.
        let (ids, _, why) = run(
            json!({"order": "score", "near_duplicate": 0.95}),
            chunks.clone(),
            1000,
        );
        assert_eq!(ids, ["guide#2", "old#1", "billing#1"]);
        assert_eq!(why.len(), 1);
        // 0 turns the check off.
        let (ids, _, _) = run(json!({"order": "score", "near_duplicate": 0}), chunks, 1000);
        assert_eq!(ids.len(), 4);
    }

    #[test]
    fn shingles_ignore_case_and_punctuation() {
        assert_eq!(
            shingles("Hello, World! Again."),
            shingles("hello world again")
        );
        assert_eq!(shingles("one two").len(), 1);
        assert!(shingles(" ... ").is_empty());
        assert_eq!(jaccard(&shingles(""), &shingles("")), 0.0);
        assert_eq!(shingles("a b c d").len(), 2);
    }

    #[test]
    fn max_per_source_keeps_the_strongest_of_each_source() {
        let chunks = vec![
            chunk("g1", 0.9, "guide", "alpha one"),
            chunk("g2", 0.8, "guide", "beta two"),
            chunk("g3", 0.7, "guide", "gamma three"),
            chunk("f1", 0.6, "faq", "delta four"),
        ];
        let (ids, _, why) = run(json!({"order": "score", "max_per_source": 2}), chunks, 100);
        assert_eq!(ids, ["g1", "g2", "f1"]);
        assert_eq!(
            why,
            [(
                "g3".to_string(),
                "2 chunks of guide already kept (max_per_source = 2)".to_string()
            )]
        );
        let chunks = vec![
            chunk("g1", 0.9, "guide", "alpha one"),
            chunk("g2", 0.8, "guide", "beta two"),
        ];
        let (_, _, why) = run(json!({"max_per_source": 1}), chunks, 100);
        assert_eq!(
            why,
            [(
                "g2".to_string(),
                "1 chunk of guide already kept (max_per_source = 1)".to_string()
            )]
        );
    }

    #[test]
    fn the_first_chunk_that_does_not_fit_is_trimmed_exactly() {
        let chunks = vec![
            chunk("a", 0.9, "s", &words(10, "a")),
            chunk("b", 0.8, "s", &words(50, "b")),
            chunk("c", 0.1, "s", "c"),
        ];
        // a: 11; 29 left, 28 for b's text (label 1), at least min_trim_tokens (5).
        let (ids, out, why) = run(json!({"order": "score", "min_trim_tokens": 5}), chunks, 40);
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(out[1].text, words(28, "b"));
        assert!(!out[1].text.ends_with('…'));
        assert_eq!(
            why,
            [
                (
                    "b".to_string(),
                    "trimmed to 28 of 50 tokens (budget)".to_string()
                ),
                (
                    "c".to_string(),
                    "over budget: needs 2 tokens, 0 left".to_string()
                ),
            ]
        );
        // Under min_trim_tokens left: dropped, not trimmed.
        let chunks = vec![
            chunk("a", 0.9, "s", &words(10, "a")),
            chunk("b", 0.8, "s", &words(50, "b")),
        ];
        let (ids, _, why) = run(json!({"order": "score"}), chunks, 40);
        assert_eq!(ids, ["a"]);
        assert_eq!(
            why,
            [(
                "b".to_string(),
                "over budget: needs 51 tokens, 29 left".to_string()
            )]
        );
    }

    #[test]
    fn trimming_prefers_a_word_boundary() {
        // Counting characters: the cut at 12 falls inside "brown".
        struct Chars;
        impl Budget for Chars {
            fn count(&mut self, text: &str) -> u32 {
                text.chars().count() as u32
            }
            fn explain(&mut self, _: &str, _: String) {}
        }
        assert_eq!(
            trim("the quick brown fox", 12, &mut Chars),
            Some(("the quick".to_string(), 9))
        );
        assert_eq!(
            trim("the quick brown fox", 10, &mut Chars),
            Some(("the quick".to_string(), 9))
        );
        assert_eq!(
            trim("supercalifragilistic", 5, &mut Chars),
            Some(("super".to_string(), 5))
        );
        assert_eq!(trim("ééé", 2, &mut Chars), Some(("éé".to_string(), 2)));
        assert_eq!(trim("abc", 0, &mut Chars), None);
    }

    #[test]
    fn ends_order_puts_the_strongest_at_the_ends() {
        let chunks: Vec<Chunk> = (1..=5)
            .map(|r| {
                chunk(
                    &format!("r{r}"),
                    1.0 - r as f32 / 10.0,
                    "s",
                    &format!("text {r}"),
                )
            })
            .collect();
        let (ids, _, _) = run(json!({}), chunks.clone(), 1000);
        assert_eq!(ids, ["r1", "r3", "r5", "r4", "r2"]);
        let (ids, _, _) = run(json!({"order": "score"}), chunks, 1000);
        assert_eq!(ids, ["r1", "r2", "r3", "r4", "r5"]);
    }

    #[test]
    fn bad_configs_are_refused_with_the_key() {
        assert!(
            parse(r#"{"near_duplicate": 1.5}"#)
                .unwrap_err()
                .contains("config.near_duplicate")
        );
        assert!(
            parse(r#"{"order": "random"}"#)
                .unwrap_err()
                .contains("order")
        );
        assert!(
            parse(r#"{"max_chunks": 3}"#)
                .unwrap_err()
                .contains("max_chunks")
        );
        assert!(parse("{}").is_ok());
    }

    #[test]
    fn the_sdk_counter_and_explainer_are_the_hosts() {
        // Off wasm the SDK estimates ceil(chars / 4) and records drops.
        reins_sdk::take_explained_drops();
        let ctx = CallContext::for_test(&json!({"min_score": 0.5}), &json!({}));
        let chunks = vec![
            chunk("a", 0.9, "s", "kept"),
            chunk("b", 0.1, "s", "dropped"),
        ];
        let out = ContextBudget::assemble(ctx, String::new(), chunks, 100).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            reins_sdk::take_explained_drops(),
            [(
                "b".to_string(),
                "score 0.10 under the floor 0.50".to_string()
            )]
        );
    }
}
