//! What a streamed answer needs besides its model: the channel its
//! released text goes out on ([`StreamSink`]), where pending text may be
//! cut for release ([`release_point`]), and, for JSON answers, how far a
//! prefix is a checkable document ([`JsonPrefix`]).
//!
//! The engine's side (the hold-back window, the checkers, the fallbacks)
//! is `engine/stream.rs`.

use crate::config::ReleaseAt;
use serde_json::Value;
use tokio::sync::mpsc;

/// Where a run sends the text it released: each piece has passed every
/// stream checker (and, for `stream = "json"`, the schema's prefix check).
/// A run without one streams nothing (`stream = "buffered"`, or a caller
/// that did not ask).
#[derive(Debug, Clone)]
pub struct StreamSink(mpsc::UnboundedSender<String>);

impl StreamSink {
    /// A sink and the receiving end of its released pieces.
    pub fn channel() -> (StreamSink, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (StreamSink(tx), rx)
    }

    /// Sends a released piece; `false` when nobody listens any more.
    pub fn send(&self, piece: String) -> bool {
        self.0.send(piece).is_ok()
    }
}

/// The byte index in `pending` up to which it may be released (`0`: not
/// yet): after its last whitespace (`word`), or after its last sentence end
/// followed by whitespace (`sentence`). A word, and so a key or a URL, is
/// never split between two releases.
pub fn release_point(pending: &str, at: ReleaseAt) -> usize {
    let bytes = pending.as_bytes();
    (0..bytes.len())
        .rev()
        .find(|&i| is_boundary(bytes, i, at))
        .map_or(0, |i| i + 1)
}

/// The end of the next piece to offer from `pending` once it holds at
/// least `window` characters: the first boundary after them (so a large
/// delta, such as a whole answer from a server that does not stream, goes
/// out in window-sized pieces), else the last boundary; `0`: none yet.
pub fn next_piece(pending: &str, window: usize, at: ReleaseAt) -> usize {
    let Some((limit, _)) = pending.char_indices().nth(window.max(1) - 1) else {
        return 0;
    };
    let bytes = pending.as_bytes();
    (limit..bytes.len())
        .find(|&i| is_boundary(bytes, i, at))
        .map_or_else(|| release_point(pending, at), |i| i + 1)
}

/// Whether text may be cut after byte `i` (a whitespace byte, never inside
/// a multi-byte character).
fn is_boundary(bytes: &[u8], i: usize, at: ReleaseAt) -> bool {
    let b = bytes[i];
    if !b.is_ascii_whitespace() {
        return false;
    }
    match at {
        ReleaseAt::Word => true,
        ReleaseAt::Sentence => {
            b == b'\n' || (i > 0 && matches!(bytes[i - 1], b'.' | b'!' | b'?' | b':' | b';'))
        }
    }
}

/// A streamed JSON answer, scanned as it comes: where its document starts
/// (text before the first `{` or `[`, such as a code fence, is not part of
/// it), and the longest prefix that ends after a complete value, with the
/// brackets that close it. Only whole values are ever released, so a
/// partial string or number never reaches the client.
#[derive(Debug, Default, Clone)]
pub struct JsonPrefix {
    /// Bytes of the answer scanned so far.
    scanned: usize,
    /// Where the document starts.
    start: Option<usize>,
    /// Where it ended (its root closed).
    end: Option<usize>,
    stack: Vec<u8>,
    /// In an object, the next string is a key.
    expect_key: Vec<bool>,
    in_string: bool,
    string_is_key: bool,
    escape: bool,
    in_scalar: bool,
    /// The end of the longest complete prefix, and its closing brackets.
    safe: usize,
    closing: String,
}

impl JsonPrefix {
    /// Scans what was added to `answer` since the last call.
    pub fn feed(&mut self, answer: &str) {
        let bytes = answer.as_bytes();
        while self.scanned < bytes.len() && self.end.is_none() {
            let i = self.scanned;
            let b = bytes[i];
            self.scanned += 1;
            if self.start.is_none() {
                if b == b'{' || b == b'[' {
                    self.start = Some(i);
                    self.open(b, i);
                }
                continue;
            }
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if !self.string_is_key {
                        self.mark(i + 1);
                    }
                }
                continue;
            }
            if self.in_scalar {
                if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+') {
                    continue;
                }
                self.in_scalar = false;
                self.mark(i);
            }
            match b {
                b'{' | b'[' => self.open(b, i),
                b'}' | b']' => {
                    self.stack.pop();
                    self.expect_key.pop();
                    if self.stack.is_empty() {
                        self.end = Some(i + 1);
                    }
                    self.mark(i + 1);
                }
                b'"' => {
                    self.in_string = true;
                    self.string_is_key = self.expect_key.last().copied().unwrap_or(false);
                }
                b':' => {
                    if let Some(k) = self.expect_key.last_mut() {
                        *k = false;
                    }
                }
                b',' => {
                    if let (Some(k), Some(b'{')) = (self.expect_key.last_mut(), self.stack.last()) {
                        *k = true;
                    }
                }
                b if b.is_ascii_whitespace() => {}
                _ => self.in_scalar = true,
            }
        }
    }

    fn open(&mut self, b: u8, i: usize) {
        self.stack.push(b);
        self.expect_key.push(b == b'{');
        self.mark(i + 1);
    }

    /// A complete value (or an opening bracket) ends at `at`.
    fn mark(&mut self, at: usize) {
        self.safe = at;
        self.closing = self
            .stack
            .iter()
            .rev()
            .map(|b| if *b == b'{' { '}' } else { ']' })
            .collect();
    }

    /// Where the document starts in the answer, once it has.
    pub fn start(&self) -> Option<usize> {
        self.start
    }

    /// The end of the longest prefix made of whole values.
    pub fn safe_end(&self) -> usize {
        self.safe
    }

    /// The root value has closed.
    pub fn is_complete(&self) -> bool {
        self.end.is_some()
    }

    /// The complete prefix, closed into a document (`None` before it starts).
    pub fn closed(&self, answer: &str) -> Option<Value> {
        let start = self.start?;
        // The prefix ends after a value or an opening bracket, never after
        // a comma, so the closing brackets make it a document.
        let text = format!("{}{}", answer.get(start..self.safe)?, self.closing);
        serde_json::from_str(&text).ok()
    }
}

/// The first thing wrong with a prefix of a JSON answer that no more text
/// can make right: a wrong type, a value out of range or not in its enum,
/// a property that may not be there. What is only missing so far (a
/// required property, too few items) is not wrong yet.
pub fn prefix_violation(
    schema: &jsonschema::Validator,
    prefix: &Value,
) -> Option<(String, String)> {
    use jsonschema::error::ValidationErrorKind as K;
    schema.iter_errors(prefix).find_map(|e| {
        let definite = matches!(
            e.kind(),
            K::Type { .. }
                | K::Enum { .. }
                | K::Constant { .. }
                | K::AdditionalProperties { .. }
                | K::FalseSchema
                | K::Maximum { .. }
                | K::Minimum { .. }
                | K::ExclusiveMaximum { .. }
                | K::ExclusiveMinimum { .. }
                | K::MaxItems { .. }
                | K::MaxLength { .. }
                | K::MinLength { .. }
                | K::MaxProperties { .. }
                | K::Pattern { .. }
                | K::Format { .. }
                | K::MultipleOf { .. }
        );
        definite.then(|| (e.instance_path().to_string(), e.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn release_points_fall_after_whitespace_or_sentences() {
        assert_eq!(release_point("hello wor", ReleaseAt::Word), 6);
        assert_eq!(release_point("sk-abc123", ReleaseAt::Word), 0);
        assert_eq!(
            release_point("One. Two three", ReleaseAt::Sentence),
            5,
            "after `One. `"
        );
        assert_eq!(release_point("no end yet ", ReleaseAt::Sentence), 0);
    }

    #[test]
    fn a_large_pending_text_goes_out_in_window_sized_pieces() {
        let text = "one two three four five six seven eight";
        let end = next_piece(text, 10, ReleaseAt::Word);
        assert_eq!(&text[..end], "one two three ");
        // Short of the window: nothing; no boundary at all: nothing.
        assert_eq!(next_piece("one two", 10, ReleaseAt::Word), 0);
        assert_eq!(next_piece("sk-0123456789abcdef", 10, ReleaseAt::Word), 0);
        // The window ends inside the last word: up to the last boundary.
        assert_eq!(next_piece("one two three", 10, ReleaseAt::Word), 8);
    }

    #[test]
    fn a_json_prefix_closes_after_whole_values_only() {
        let answer = "```json\n{\"name\": \"Ada\", \"tags\": [\"a\", \"b";
        let mut p = JsonPrefix::default();
        p.feed(answer);
        assert_eq!(p.start(), Some(8));
        assert_eq!(
            p.closed(answer),
            Some(json!({"name": "Ada", "tags": ["a"]}))
        );
        let answer = format!("{answer}\"], \"age\": 3");
        p.feed(&answer);
        // `3` may go on (`36`): not whole yet.
        assert_eq!(
            p.closed(&answer),
            Some(json!({"name": "Ada", "tags": ["a", "b"]}))
        );
        let answer = format!("{answer}6}}\n```");
        p.feed(&answer);
        assert!(p.is_complete());
        assert_eq!(
            p.closed(&answer),
            Some(json!({"name": "Ada", "tags": ["a", "b"], "age": 36}))
        );
        // A key whose value has not come is not part of the prefix.
        let answer = "{\"a\": 1, \"b\": ";
        let mut p = JsonPrefix::default();
        p.feed(answer);
        assert_eq!(p.closed(answer), Some(json!({"a": 1})));
    }

    #[test]
    fn only_what_more_text_cannot_mend_is_a_prefix_violation() {
        let schema = jsonschema::validator_for(&json!({
            "type": "object",
            "required": ["name", "age"],
            "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
            "additionalProperties": false
        }))
        .unwrap();
        assert_eq!(prefix_violation(&schema, &json!({"name": "Ada"})), None);
        let (at, _) = prefix_violation(&schema, &json!({"name": 7})).unwrap();
        assert_eq!(at, "/name");
        assert!(prefix_violation(&schema, &json!({"age": -1})).is_some());
        assert!(prefix_violation(&schema, &json!({"other": 1})).is_some());
    }
}
