//! `grounded`: the values of a JSON answer must come from the request.
//!
//! For every string leaf the config points at (`pointers`, with `*`
//! wildcards as in `ranges`; every string leaf when there are none), the
//! value must appear in the text of the request the model was given
//! (`reins_sdk::request_text()`: user and tool messages and context
//! chunks). Both sides are compared by their `detect::fold` (NFKC,
//! invisible characters removed, look-alike letters folded, lower case,
//! whitespace collapsed), as whole words: `"ACME  Corp"` is grounded in
//! `... acme corp ...`, `"Port"` is not grounded in `Portugal`.
//!
//! A value that does not appear as written may still be close enough: it is
//! split into words, each word is matched to its most similar word
//! (normalized Levenshtein; words with digits must match exactly) in a
//! window of the request a little wider than the value, and the similarity
//! is the average over the value's words, weighted by their length. At or
//! above `threshold` the value is grounded; below it the violation (code
//! `ungrounded`) quotes the closest window of the request, so the model can
//! correct itself:
//!
//! ```text
//! /city: "Lisbon" does not appear in the input; the closest text is "Lisboa" (similarity 0.83). Use only values stated in the input.
//! ```
//!
//! Numbers (`numbers = true`): a numeric leaf — or a string that is just an
//! amount, like `"$500,000"` — must equal a number written in the request
//! (`500,000`, `500 000`, `1.250,50`, `15%` for 0.15, `2.5m`, `3 million`;
//! signs are ignored).
//!
//! With no request text (a pipeline without messages, a case without
//! `request`) nothing can be checked: the plugin says so in one `info`
//! note (code `no-request`) and passes the answer, unless
//! `require_request = true` makes that an `error`. Grounding is a check
//! against evidence; without evidence it neither passes nor fails anything
//! by surprise.

use detect::{Folded, fold, fold_str};
use reins_sdk::validator::{Guest, Verdict};
use reins_sdk::{CallContext, Severity, Violation, pointer};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// JSON Pointer patterns of the values to check (`*` = every element or
    /// member); a pointer to an array or object checks every leaf under it.
    /// Empty = every string leaf (and numeric leaf, with `numbers`).
    pointers: Vec<String>,
    /// Similarity (0..1) a value needs when it does not appear verbatim.
    threshold: f64,
    /// Values shorter than this (in characters) are not checked.
    min_length: usize,
    /// Values that need no grounding (compared after folding).
    ignore: Vec<String>,
    /// Check numbers too.
    numbers: bool,
    severity: Level,
    /// Without request text, report an error instead of an info note.
    require_request: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pointers: Vec::new(),
            threshold: 0.8,
            min_length: 2,
            ignore: Vec::new(),
            numbers: false,
            severity: Level::Error,
            require_request: false,
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

/// Word pairs less similar than this count as unrelated (0), so noise does
/// not add up to a match and the closest-text quote is meaningful.
const FLOOR: f64 = 0.5;
/// Words longer than this (in characters) are matched exactly only.
const MAX_FUZZY_CHARS: usize = 40;
/// Longest quote of the request in a message, in characters.
const MAX_QUOTE_CHARS: usize = 80;
/// Longest quote of the answer's value in a message, in characters.
const MAX_VALUE_CHARS: usize = 60;

struct Grounded;

/// The set-up: the config, parsed and checked once (in `init`, or on the
/// first call with this config).
static SETUP: reins_sdk::Setup<Config> = reins_sdk::Setup::new();

fn parse(config_text: &str) -> Result<Config, String> {
    let config: Config = reins_sdk::parse_config_text(config_text)?;
    if !(0.0..=1.0).contains(&config.threshold) {
        return Err(format!("config.threshold: must be between 0 and 1, got {}", config.threshold));
    }
    for (i, p) in config.pointers.iter().enumerate() {
        pointer::split(p).map_err(|e| format!("config.pointers[{i}]: {e}"))?;
    }
    Ok(config)
}

impl Guest for Grounded {
    fn validate(ctx: CallContext, output: String) -> Result<Verdict, String> {
        let config = SETUP.get(&ctx.config, parse)?;
        let doc = match reins_sdk::parse_output(&output) {
            Ok(doc) => doc,
            Err(e) => return Ok(Verdict::new(vec![Violation::error("", "json", e)])),
        };
        let request = reins_sdk::request_text();
        if request.trim().is_empty() {
            let message = "the request has no text to check the answer against; grounding was not checked";
            return Ok(Verdict::new(vec![if config.require_request {
                Violation::error("", "no-request", message)
            } else {
                Violation::info("", "no-request", message)
            }]));
        }
        let ignore: HashSet<String> = config.ignore.iter().map(|v| fold_str(v)).collect();
        let mut index = Index::new(&request);
        let mut violations = Vec::new();
        for (path, value) in targets(&doc, &config.pointers) {
            let problem = match value {
                Value::String(s) => {
                    let folded = fold_str(s);
                    if s.chars().count() < config.min_length || ignore.contains(&folded) {
                        continue;
                    }
                    index.check_string(s, &folded, config.threshold, config.numbers)
                }
                Value::Number(n) if config.numbers => match n.as_f64() {
                    Some(x) => index.check_number(&[x], &n.to_string()),
                    None => None,
                },
                _ => None,
            };
            if let Some(message) = problem {
                violations.push(Violation::new(config.severity.severity(), path, "ungrounded", message));
            }
        }
        Ok(Verdict::new(violations))
    }
}

impl reins_sdk::init::Guest for Grounded {
    fn init(config: String) -> Result<(), String> {
        SETUP.init(&config, parse)
    }
}

reins_sdk::export_validator!(Grounded);
reins_sdk::export_init!(Grounded);

/// The leaves to check, with their pointers, each once, in document order.
fn targets<'a>(doc: &'a Value, pointers: &[String]) -> Vec<(String, &'a Value)> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut add = |base: &str, value: &'a Value| {
        let mut leaves: Vec<String> = Vec::new();
        detect::doc::for_each_leaf(value, &mut |sub, _| leaves.push(format!("{base}{sub}")));
        for path in leaves {
            // The same pointer resolves to the same leaf of `doc`.
            if let Some(leaf) = doc.pointer(&path)
                && seen.insert(path.clone())
            {
                out.push((path, leaf));
            }
        }
    };
    if pointers.is_empty() {
        add("", doc);
    } else {
        for p in pointers {
            for (at, value) in pointer::matches(doc, p).unwrap_or_default() {
                add(&at, value);
            }
        }
    }
    out
}

/// One word of the folded request.
struct Token {
    start: usize,
    end: usize,
    /// Index into [`Words::distinct`].
    id: usize,
}

struct Word {
    chars: Vec<char>,
    mask: u64,
    has_digit: bool,
    /// Where it occurs: indexes into [`Words::tokens`], ascending.
    at: Vec<usize>,
}

/// The request's words, in order and by distinct text.
struct Words {
    tokens: Vec<Token>,
    distinct: Vec<Word>,
    by_text: HashMap<String, usize>,
}

/// A number written in the request and where (in the original text).
struct Number {
    value: f64,
    start: usize,
    end: usize,
}

/// The request, folded and indexed by word; numbers indexed on first use.
struct Index<'r> {
    original: &'r str,
    folded: Folded,
    words: Words,
    numbers: Option<Vec<Number>>,
    /// Similarities of a value's word to every distinct request word,
    /// computed once per call for each word the values use.
    sims: HashMap<String, Rc<Vec<f32>>>,
}

impl<'r> Index<'r> {
    fn new(request: &'r str) -> Self {
        let folded = fold(request);
        let words = Words::new(&folded.text);
        Index { original: request, folded, words, numbers: None, sims: HashMap::new() }
    }

    /// `None` when `value` (whose [`fold`] is `v`) is grounded, else the
    /// message.
    fn check_string(&mut self, value: &str, v: &str, threshold: f64, numbers: bool) -> Option<String> {
        let spans: Vec<(usize, usize)> = words_of(v).collect();
        if spans.is_empty() || self.appears(v, &spans) {
            return None;
        }
        if numbers {
            let readings = amount(v);
            if !readings.is_empty() {
                return self.check_number(&readings, &quote(value, MAX_VALUE_CHARS));
            }
        }
        let vwords: Vec<&str> = spans.iter().map(|&(s, e)| &v[s..e]).collect();
        let (score, span) = self.best_window(&vwords, threshold);
        if score >= threshold {
            return None;
        }
        let shown = quote(value, MAX_VALUE_CHARS);
        Some(match span {
            Some((s, e)) if score > 0.0 => format!(
                "{shown} does not appear in the input; the closest text is {} (similarity {score:.2}). \
                 Use only values stated in the input.",
                quote(&self.original[s..e], MAX_QUOTE_CHARS)
            ),
            _ => format!(
                "{shown} does not appear in the input, and nothing in it comes close. Use only values stated in the input."
            ),
        })
    }

    /// Whether the folded value `v` (with its word spans) occurs in the
    /// folded request as whole words: found through the occurrences of its
    /// first word rather than by scanning the whole request.
    fn appears(&self, v: &str, spans: &[(usize, usize)]) -> bool {
        let (lead, first_end) = spans[0];
        let Some(&id) = self.words.by_text.get(&v[lead..first_end]) else { return false };
        let ends_word = spans.last().is_some_and(|&(_, e)| e == v.len());
        let text = &self.folded.text;
        self.words.distinct[id].at.iter().any(|&t| {
            let Some(start) = self.words.tokens[t].start.checked_sub(lead) else { return false };
            text.is_char_boundary(start)
                && text[start..].starts_with(v)
                && (lead > 0 || !text[..start].chars().next_back().is_some_and(char::is_alphanumeric))
                && (!ends_word || !text[start + v.len()..].chars().next().is_some_and(char::is_alphanumeric))
        })
    }

    /// `None` when one reading of a value is written in the request, else
    /// the message (`shown` is how the value is named in it).
    fn check_number(&mut self, readings: &[f64], shown: &str) -> Option<String> {
        let original = self.original;
        let folded = &self.folded;
        let numbers = self.numbers.get_or_insert_with(|| request_numbers(folded));
        let same = |n: &Number, x: f64| (n.value - x.abs()).abs() <= 1e-9 * x.abs().max(1.0);
        if readings.iter().any(|&x| numbers.iter().any(|n| same(n, x))) {
            return None;
        }
        let x = readings.first().copied().unwrap_or_default().abs();
        let closest = numbers
            .iter()
            .min_by(|a, b| (a.value - x).abs().total_cmp(&(b.value - x).abs()))
            .map(|n| quote(&original[n.start..n.end], MAX_QUOTE_CHARS));
        Some(match closest {
            Some(q) => format!(
                "{shown} does not appear in the input; the closest number there is {q}. Use only values stated in the input."
            ),
            None => format!(
                "{shown} does not appear in the input, which has no numbers. Use only values stated in the input."
            ),
        })
    }

    /// The best similarity of the value's words to a window of the request,
    /// and that window's span in the original request.
    fn best_window(&mut self, vwords: &[&str], threshold: f64) -> (f64, Option<(usize, usize)>) {
        let sims: Vec<Rc<Vec<f32>>> = vwords
            .iter()
            .map(|w| match self.sims.get(*w) {
                Some(s) => Rc::clone(s),
                None => {
                    let s = Rc::new(self.words.similarities(w));
                    self.sims.insert(w.to_string(), Rc::clone(&s));
                    s
                }
            })
            .collect();
        let words = &self.words;
        let tokens = &words.tokens;
        let weights: Vec<f64> = vwords.iter().map(|w| w.chars().count() as f64).collect();
        let total: f64 = weights.iter().sum();
        let width = vwords.len() + 2;
        // Where each value word's matches are in the request.
        let matches: Vec<Vec<usize>> = sims
            .iter()
            .map(|s| {
                let mut at: Vec<usize> = s
                    .iter()
                    .enumerate()
                    .filter(|&(_, &x)| x > 0.0)
                    .flat_map(|(id, _)| words.distinct[id].at.iter().copied())
                    .collect();
                at.sort_unstable();
                at
            })
            .collect();
        // A window without any match of word k scores at most 1 - its
        // weight; when that is below the threshold, only windows around the
        // rarest such word can pass (and the closest text is near it too).
        // Otherwise the best window starts on a word that matches something.
        let anchor = (0..vwords.len())
            .filter(|&k| !matches[k].is_empty() && 1.0 - weights[k] / total < threshold)
            .min_by_key(|&k| matches[k].len());
        let mut starts: Vec<usize> = match anchor {
            Some(k) => matches[k].iter().flat_map(|&p| p.saturating_sub(width - 1)..=p).collect(),
            None => matches.concat(),
        };
        starts.sort_unstable();
        starts.dedup();
        let mut best = (0.0, None);
        for i in starts {
            let window = &tokens[i..tokens.len().min(i + width)];
            let mut score = 0.0;
            let (mut first, mut last) = (usize::MAX, 0);
            for (k, s) in sims.iter().enumerate() {
                let mut top = 0.0f32;
                let mut at = None;
                for (j, t) in window.iter().enumerate() {
                    if s[t.id] > top {
                        top = s[t.id];
                        at = Some(j);
                    }
                }
                score += weights[k] * f64::from(top);
                if let Some(j) = at {
                    first = first.min(j);
                    last = last.max(j);
                }
            }
            let score = score / total;
            if score > best.0 + 1e-9 && first <= last {
                best = (score, Some(self.folded.original_span(window[first].start, window[last].end)));
            }
        }
        best
    }
}

impl Words {
    fn new(text: &str) -> Self {
        let mut words = Words { tokens: Vec::new(), distinct: Vec::new(), by_text: HashMap::new() };
        for (start, end) in words_of(text) {
            let w = &text[start..end];
            let id = match words.by_text.get(w) {
                Some(&id) => id,
                None => {
                    let chars: Vec<char> = w.chars().collect();
                    let id = words.distinct.len();
                    words.distinct.push(Word {
                        mask: mask(&chars),
                        has_digit: chars.iter().any(|c| c.is_numeric()),
                        chars,
                        at: Vec::new(),
                    });
                    words.by_text.insert(w.to_string(), id);
                    id
                }
            };
            words.distinct[id].at.push(words.tokens.len());
            words.tokens.push(Token { start, end, id });
        }
        words
    }

    /// The similarity of `word` to each distinct word of the request (0
    /// below [`FLOOR`]).
    fn similarities(&self, word: &str) -> Vec<f32> {
        let mut out = vec![0.0f32; self.distinct.len()];
        if let Some(&id) = self.by_text.get(word) {
            out[id] = 1.0;
        }
        let chars: Vec<char> = word.chars().collect();
        if chars.iter().any(|c| c.is_numeric()) || chars.len() > MAX_FUZZY_CHARS {
            return out;
        }
        let m = mask(&chars);
        for (id, d) in self.distinct.iter().enumerate() {
            if d.has_digit || d.chars.len() > MAX_FUZZY_CHARS || out[id] > 0.0 {
                continue;
            }
            let longest = chars.len().max(d.chars.len());
            let allowed = ((1.0 - FLOOR) * longest as f64).floor() as usize;
            // Cheap lower bounds on the edit distance before computing it.
            let lower = chars.len().abs_diff(d.chars.len()).max((m ^ d.mask).count_ones().div_ceil(2) as usize);
            if lower > allowed {
                continue;
            }
            let sim = 1.0 - levenshtein(&chars, &d.chars) as f64 / longest as f64;
            if sim >= FLOOR {
                out[id] = sim as f32;
            }
        }
        out
    }
}

/// Byte ranges of the words (runs of letters and digits) of `text`.
fn words_of(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut chars = text.char_indices().peekable();
    std::iter::from_fn(move || {
        while let Some(&(_, c)) = chars.peek() {
            if c.is_alphanumeric() {
                break;
            }
            chars.next();
        }
        let (start, first) = chars.next()?;
        let mut end = start + first.len_utf8();
        while let Some(&(i, c)) = chars.peek() {
            if !c.is_alphanumeric() {
                break;
            }
            end = i + c.len_utf8();
            chars.next();
        }
        Some((start, end))
    })
}

/// Which characters occur, hashed into 64 bits: the edit distance is at
/// least half the number of differing bits.
fn mask(chars: &[char]) -> u64 {
    chars.iter().fold(0u64, |m, &c| m | 1 << (c as u32 % 64))
}

fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut row = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = prev[j] + usize::from(ca != cb);
            row[j + 1] = substitution.min(prev[j + 1] + 1).min(row[j] + 1);
        }
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

/// A JSON-quoted excerpt of at most `max` characters (`…` when cut).
fn quote(text: &str, max: usize) -> String {
    let text = text.trim();
    let mut short: String = text.chars().take(max).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    Value::String(short).to_string()
}

/// The readings of a folded string that is only an amount (digits with
/// thousands separators, an optional currency sign or code before or after,
/// `%` or a multiplier): `$1,250.50`, `usd 999`, `2.5m`, `3 million`. Empty
/// when it is anything else (`route 66`, `12 monkeys`).
fn amount(folded: &str) -> Vec<f64> {
    let cleaned: String = folded.chars().filter(|c| !matches!(c, '$' | '€' | '£' | '¥')).collect();
    let mut body = cleaned.trim().trim_start_matches(['+', '-', '~']).trim();
    let is_code = |w: &str| (1..=3).contains(&w.len()) && w.chars().all(|c| c.is_ascii_alphabetic());
    if let Some((code, rest)) = body.split_once(' ')
        && is_code(code)
    {
        body = rest.trim();
    }
    if let Some((rest, code)) = body.rsplit_once(' ')
        && is_code(code)
    {
        body = rest.trim();
    }
    scan_numbers(body)
        .into_iter()
        .filter(|n| n.whole && n.start == 0 && n.end == body.len())
        .map(|n| n.value)
        .collect()
}

/// Every number written in the folded request, with its span in the
/// original text.
fn request_numbers(folded: &Folded) -> Vec<Number> {
    scan_numbers(&folded.text)
        .into_iter()
        .chain(word_numbers(&folded.text))
        .map(|n| {
            let (start, end) = folded.original_span(n.start, n.end);
            Number { value: n.value, start, end }
        })
        .collect()
}

/// Whole numbers from zero to ninety-nine written in English words
/// ("twenty-five", "twenty five", "seven"), with their spans: an age or a
/// count the request spells out grounds the digits a model writes.
fn word_numbers(text: &str) -> Vec<Reading> {
    const UNITS: [&str; 20] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
    ];
    const TENS: [&str; 8] = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];
    let lower = text.to_ascii_lowercase();
    // Words with their byte spans.
    let mut words: Vec<(usize, usize)> = Vec::new();
    let mut start = None;
    for (i, c) in lower.char_indices() {
        match (c.is_ascii_alphabetic(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                words.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push((s, lower.len()));
    }
    let word = |k: usize| words.get(k).map(|&(a, b)| &lower[a..b]);
    let mut out = Vec::new();
    let mut k = 0;
    while k < words.len() {
        let w = word(k).unwrap_or_default();
        if let Some(t) = TENS.iter().position(|x| *x == w) {
            let tens = 20 + 10 * t;
            // "twenty-five" / "twenty five": a unit right after, joined by one hyphen or space.
            let joined = words.get(k + 1).is_some_and(|&(a, _)| {
                let gap = &lower[words[k].1..a];
                gap == "-" || gap == " "
            });
            if let Some(u) = word(k + 1).filter(|_| joined).and_then(|n| UNITS[1..10].iter().position(|x| *x == n)) {
                out.push(Reading { value: (tens + u + 1) as f64, start: words[k].0, end: words[k + 1].1, whole: true });
                k += 2;
                continue;
            }
            out.push(Reading { value: tens as f64, start: words[k].0, end: words[k].1, whole: true });
        } else if let Some(u) = UNITS.iter().position(|x| *x == w) {
            out.push(Reading { value: u as f64, start: words[k].0, end: words[k].1, whole: true });
        }
        k += 1;
    }
    out
}

/// One reading of a number written in a text.
struct Reading {
    value: f64,
    start: usize,
    end: usize,
    /// The whole number (not one of its digit runs).
    whole: bool,
}

/// Every reading of every number in `text`: the number as written (with both separators, the last one is the decimal
/// point: `1,250.50` and `1.250,50` are 1250.5; with one kind, both
/// readings: `1,500` is 1500 or 1.5), each of its digit runs (`1,2,3` gives
/// 1, 2 and 3), and those times a multiplier written right after it (`%`
/// ÷100, `k`/`thousand`, `m`/`mn`/`million`, `bn`/`billion`).
fn scan_numbers(text: &str) -> Vec<Reading> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let run = |from: usize| bytes[from.min(bytes.len())..].iter().take_while(|b| b.is_ascii_digit()).count();
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && bytes[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i + run(i);
        loop {
            match bytes.get(end) {
                Some(b',' | b'.' | b'\'') if run(end + 1) > 0 => end += 1 + run(end + 1),
                Some(b' ') if run(end + 1) == 3 => end += 4,
                _ => break,
            }
        }
        let raw = &text[start..end];
        let mut whole: Vec<f64> = Vec::new();
        let plain: String = raw.chars().filter(|c| !matches!(c, '\'' | ' ')).collect();
        match (plain.rfind(','), plain.rfind('.')) {
            (Some(c), Some(d)) => {
                let (thousands, decimal) = if c > d { (".", ",") } else { (",", ".") };
                whole.extend(plain.replace(thousands, "").replace(decimal, ".").parse::<f64>().ok());
            }
            _ => {
                whole.extend(plain.replace([',', '.'], "").parse::<f64>().ok());
                if plain.matches([',', '.']).count() == 1 {
                    whole.extend(plain.replace(',', ".").parse::<f64>().ok());
                }
            }
        }
        let pieces: Vec<f64> = raw.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<f64>().ok()).collect();
        let (factor, suffix_end) = multiplier(text, end);
        let mut seen: Vec<f64> = Vec::new();
        let mut add = |value: f64, end: usize, whole: bool| {
            if value.is_finite() && !seen.contains(&value) {
                seen.push(value);
                out.push(Reading { value, start, end, whole });
            }
        };
        for &w in &whole {
            add(w, end, true);
        }
        if factor != 1.0 {
            for &w in &whole {
                add(w * factor, suffix_end, true);
            }
        }
        if pieces.len() > 1 {
            for &p in &pieces {
                add(p, end, false);
            }
        }
        i = end.max(i + 1);
    }
    out
}

/// The multiplier written right after a number ending at `end`, and where
/// it ends.
fn multiplier(text: &str, end: usize) -> (f64, usize) {
    let rest = &text[end..];
    let word_end = |n: usize| !rest[n..].chars().next().is_some_and(char::is_alphanumeric);
    if rest.starts_with('%') {
        return (0.01, end + 1);
    }
    for (suffix, factor) in [("bn", 1e9), ("mn", 1e6), ("k", 1e3), ("m", 1e6)] {
        if rest.starts_with(suffix) && word_end(suffix.len()) {
            return (factor, end + suffix.len());
        }
    }
    for (word, factor) in [(" thousand", 1e3), (" million", 1e6), (" billion", 1e9)] {
        if rest.starts_with(word) && word_end(word.len()) {
            return (factor, end + word.len());
        }
    }
    (1.0, end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(config: Value, request: &str, output: &Value) -> Result<Verdict, String> {
        reins_sdk::set_request_text(request);
        Grounded::validate(CallContext::for_test(&config, &json!({})), output.to_string())
    }

    fn found(v: &Verdict) -> Vec<(String, String)> {
        v.violations.iter().map(|x| (x.path.clone(), x.message.clone())).collect()
    }

    const REQUEST: &str = "Customer: Ana Silva.\nPlease ship order ORD-1234 (3 items, total $1,250.50) to our office \
                           in Bern, Switzerland, by 15% off.\n\nContact: ACME  Corp, Lisboa.";

    #[test]
    fn verbatim_values_are_grounded() {
        let out = json!({"name": "ana SILVA", "company": "Acme Corp", "order": "ORD-1234", "country": "switzerland"});
        let v = run(json!({}), REQUEST, &out).unwrap();
        assert!(v.violations.is_empty(), "{:?}", found(&v));
    }

    #[test]
    fn an_invented_city_is_flagged_with_the_closest_text() {
        let v = run(json!({}), REQUEST, &json!({"name": "Ana Silva", "city": "Berlin"})).unwrap();
        assert_eq!(
            found(&v),
            [(
                "/city".to_string(),
                "\"Berlin\" does not appear in the input; the closest text is \"Bern\" (similarity 0.67). \
                 Use only values stated in the input."
                    .to_string()
            )]
        );
        assert!(v.violations[0].is_error() && v.violations[0].code == "ungrounded");
    }

    #[test]
    fn close_spellings_pass_the_threshold() {
        let out = json!({"city": "Lisbon"});
        assert!(run(json!({}), REQUEST, &out).unwrap().violations.is_empty());
        let v = run(json!({"threshold": 0.9}), REQUEST, &out).unwrap();
        assert_eq!(
            found(&v)[0].1,
            "\"Lisbon\" does not appear in the input; the closest text is \"Lisboa\" (similarity 0.83). \
             Use only values stated in the input."
        );
    }

    #[test]
    fn words_with_digits_must_match_exactly() {
        let v = run(json!({}), REQUEST, &json!({"order": "ORD-1235"})).unwrap();
        assert_eq!(v.violations.len(), 1);
        assert!(v.violations[0].message.contains("the closest text is \"ORD\""), "{}", v.violations[0].message);
    }

    #[test]
    fn word_order_and_punctuation_do_not_matter() {
        let v = run(json!({}), REQUEST, &json!({"name": "Silva, Ana", "where": "Bern (Switzerland)"})).unwrap();
        assert!(v.violations.is_empty(), "{:?}", found(&v));
    }

    #[test]
    fn whole_words_only() {
        let v = run(json!({}), "We ship to Portugal.", &json!({"city": "Port"})).unwrap();
        assert_eq!(v.violations.len(), 1);
    }

    #[test]
    fn nothing_close() {
        let v = run(json!({}), REQUEST, &json!({"city": "Tokyo"})).unwrap();
        assert_eq!(
            found(&v)[0].1,
            "\"Tokyo\" does not appear in the input, and nothing in it comes close. Use only values stated in the input."
        );
    }

    #[test]
    fn pointers_ignore_and_min_length() {
        let out = json!({"items": [{"id": "ORD-1234", "note": "invented"}, {"id": "ORD-9999"}], "status": "x", "flag": "unknown"});
        let config = json!({"pointers": ["/items/*/id", "/flag"], "ignore": ["Unknown"]});
        let v = run(config, REQUEST, &out).unwrap();
        let paths: Vec<String> = found(&v).into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["/items/1/id"]);
        // Every string leaf when no pointers; "x" is shorter than min_length.
        let v = run(json!({}), REQUEST, &out).unwrap();
        let mut paths: Vec<String> = found(&v).into_iter().map(|(p, _)| p).collect();
        paths.sort();
        assert_eq!(paths, ["/flag", "/items/0/note", "/items/1/id"]);
        // A pointer to an object checks every leaf under it.
        let v = run(json!({"pointers": ["/items/0"]}), REQUEST, &out).unwrap();
        let paths: Vec<String> = found(&v).into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["/items/0/note"]);
    }

    #[test]
    fn numbers() {
        let config = json!({"numbers": true});
        let ok = json!({"total": 1250.5, "items": 3, "discount": 0.15, "as_text": "$1,250.50", "pct": 15});
        let v = run(config.clone(), REQUEST, &ok).unwrap();
        assert!(v.violations.is_empty(), "{:?}", found(&v));
        let bad = json!({"total": 1300, "as_text": "USD 999"});
        let v = run(config, REQUEST, &bad).unwrap();
        let mut got = found(&v);
        got.sort();
        assert_eq!(
            got,
            [
                ("/as_text".to_string(), "\"USD 999\" does not appear in the input; the closest number there is \"1234\". Use only values stated in the input.".to_string()),
                ("/total".to_string(), "1300 does not appear in the input; the closest number there is \"1,250.50\". Use only values stated in the input.".to_string()),
            ]
        );
        // Without `numbers`, numeric leaves are not checked.
        assert!(run(json!({}), REQUEST, &bad).unwrap().violations.len() == 1);
    }

    #[test]
    fn numbers_in_words() {
        let values = |t: &str| word_numbers(t).into_iter().map(|r| r.value).collect::<Vec<_>>();
        assert_eq!(values("She is twenty-five and has three cats"), [25.0, 3.0]);
        assert_eq!(values("ninety nine, forty"), [99.0, 40.0]);
        assert!(values("someone threefold").is_empty());
    }

    #[test]
    fn number_readings() {
        let values = |t: &str| scan_numbers(t).into_iter().map(|n| n.value).collect::<Vec<_>>();
        assert_eq!(values("500,000"), [500000.0, 500.0, 0.0]);
        assert_eq!(values("1.250,50"), [1250.5, 1.0, 250.0, 50.0]);
        assert!(values("1.250,50 EUR").contains(&1250.5));
        assert!(values("500 000 and 2.5m, 3 million, 4k").contains(&500000.0));
        assert!(values("2.5m").contains(&2_500_000.0));
        assert!(values("3 million").contains(&3_000_000.0));
        assert!(values("4k").contains(&4000.0));
        assert!(values("15%").contains(&0.15));
        assert_eq!(amount("$1,250.50"), [1250.5]);
        assert_eq!(amount("usd 999"), [999.0]);
        assert_eq!(amount("999 usd"), [999.0]);
        assert!(amount("3 million").contains(&3_000_000.0));
        assert!(amount("route 66").is_empty());
        assert!(amount("12 monkeys").is_empty());
    }

    #[test]
    fn empty_request_is_a_note_unless_required() {
        let v = run(json!({}), "  ", &json!({"city": "Berlin"})).unwrap();
        assert_eq!(v.violations.len(), 1);
        assert!(!v.violations[0].is_error() && v.violations[0].code == "no-request");
        let v = run(json!({"require_request": true}), "", &json!({"city": "Berlin"})).unwrap();
        assert!(v.violations[0].is_error());
    }

    #[test]
    fn errors() {
        let e = run(json!({"threshold": 1.5}), REQUEST, &json!({})).err().unwrap();
        assert!(e.starts_with("config.threshold"), "{e}");
        let e = run(json!({"pointers": ["name"]}), REQUEST, &json!({})).err().unwrap();
        assert!(e.starts_with("config.pointers[0]"), "{e}");
        let v = Grounded::validate(CallContext::for_test(&json!({}), &json!({})), "{nope".into()).unwrap();
        assert_eq!(v.violations[0].code, "json");
    }

    #[test]
    fn levenshtein_and_words() {
        let c = |s: &str| s.chars().collect::<Vec<_>>();
        assert_eq!(levenshtein(&c("kitten"), &c("sitting")), 3);
        assert_eq!(levenshtein(&c(""), &c("abc")), 3);
        assert_eq!(levenshtein(&c("lisbon"), &c("lisboa")), 1);
        let text = "a-b  ção9 ,x";
        let w: Vec<&str> = words_of(text).map(|(s, e)| &text[s..e]).collect();
        assert_eq!(w, ["a", "b", "ção9", "x"]);
    }
}
