//! Getting the JSON document out of a model's answer.
//!
//! Models wrap JSON in code fences and prose ("Here is the JSON you asked
//! for: ..."). In order, the first that parses wins:
//! 1. the whole answer, trimmed;
//! 2. the content of each fenced code block (```` ```json ```` blocks first);
//! 3. the first complete JSON object or array in the text (the parse stops at
//!    the end of the value, so trailing prose is ignored).
//!
//! An answer with no JSON in it is an ordinary violation (code `json`) with a
//! message the model can act on.

use reins_runtime::{Severity, Violation};
use serde::Deserialize;
use serde_json::Value;

/// How many `{`/`[` positions are tried in prose before giving up.
const MAX_CANDIDATES: usize = 64;

/// The first JSON document in `raw`, or a violation saying why there is none.
pub fn extract_json(raw: &str) -> Result<Value, Violation> {
    let trimmed = raw.trim();
    let first_error = match serde_json::from_str::<Value>(trimmed) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    if let Some(v) = from_fences(trimmed) {
        return Ok(v);
    }
    if let Some(v) = from_prose(trimmed) {
        return Ok(v);
    }
    let message = if trimmed.is_empty() {
        "The answer was empty. Answer with one JSON document and nothing else.".to_owned()
    } else {
        format!(
            "The answer is not valid JSON ({first_error}); it starts with {:?}. Answer with one JSON document and nothing else.",
            preview(trimmed)
        )
    };
    Err(Violation {
        path: String::new(),
        code: "json".to_owned(),
        message,
        severity: Severity::Error,
    })
}

fn preview(text: &str) -> &str {
    match text.char_indices().nth(40) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Parses the content of fenced code blocks, ```` ```json ```` ones first.
fn from_fences(text: &str) -> Option<Value> {
    let mut blocks: Vec<(bool, &str)> = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        let (info, body) = match after.find('\n') {
            Some(nl) => (&after[..nl], &after[nl + 1..]),
            None => break,
        };
        let Some(close) = body.find("```") else { break };
        let tagged = info.trim().eq_ignore_ascii_case("json");
        blocks.push((tagged, &body[..close]));
        rest = &body[close + 3..];
    }
    blocks.sort_by_key(|(tagged, _)| !tagged);
    blocks
        .into_iter()
        .find_map(|(_, body)| serde_json::from_str::<Value>(body.trim()).ok())
}

/// The first complete object or array in prose.
fn from_prose(text: &str) -> Option<Value> {
    text.char_indices()
        .filter(|(_, c)| *c == '{' || *c == '[')
        .take(MAX_CANDIDATES)
        .find_map(|(i, _)| {
            let mut de = serde_json::Deserializer::from_str(&text[i..]);
            Value::deserialize(&mut de).ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_json() {
        assert_eq!(extract_json(" {\"a\": 1}\n").unwrap(), json!({"a": 1}));
    }

    #[test]
    fn fenced_json_prefers_json_blocks() {
        let raw = "Sure!\n```text\nnot json\n```\n```json\n{\"risks\": []}\n```\nAnything else?";
        assert_eq!(extract_json(raw).unwrap(), json!({"risks": []}));
        let raw = "```\n[1, 2]\n```";
        assert_eq!(extract_json(raw).unwrap(), json!([1, 2]));
    }

    #[test]
    fn prose_wrapped_json() {
        let raw = "Here is the result: {\"a\": {\"b\": \"}\"}} Hope this helps {really}.";
        assert_eq!(extract_json(raw).unwrap(), json!({"a": {"b": "}"}}));
        let raw = "The list is [1, 2, 3].";
        assert_eq!(extract_json(raw).unwrap(), json!([1, 2, 3]));
        // A brace that does not start JSON is skipped.
        let raw = "Use {curly} braces: {\"ok\": true}";
        assert_eq!(extract_json(raw).unwrap(), json!({"ok": true}));
    }

    #[test]
    fn non_json_is_a_violation() {
        let v = extract_json("I could not find any risks in this contract.").unwrap_err();
        assert_eq!(v.code, "json");
        assert_eq!(v.path, "");
        assert_eq!(v.severity, Severity::Error);
        assert!(v.message.contains("not valid JSON"), "{}", v.message);
        assert!(extract_json("  ").unwrap_err().message.contains("empty"));
        assert!(extract_json("{\"a\": ").is_err());
    }
}
