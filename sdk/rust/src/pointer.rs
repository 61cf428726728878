//! JSON Pointers (RFC 6901): every violation's `path` is one, so that the
//! host (and the model, in a repair prompt) can find the exact value.
//!
//! Patterns are pointers whose tokens may be `*`, meaning "every element of
//! this array / every member of this object": `/items/*/amount`. They let a
//! config name a rule once for a whole list. A literal member named `*` is
//! written `~2` in a pattern (an extension; plain pointers never contain it).

use serde_json::Value;
use std::borrow::Cow;

/// Escape one reference token: `~` becomes `~0`, `/` becomes `~1`.
pub fn escape(token: &str) -> Cow<'_, str> {
    if token.contains(['~', '/']) {
        Cow::Owned(token.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(token)
    }
}

/// Undo [`escape`] (`~1` first would be wrong: `~01` must become `~1`).
pub fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// `base` plus one more token: `push("/items", 3)` is `/items/3`.
pub fn push(base: &str, token: impl std::fmt::Display) -> String {
    format!("{base}/{}", escape(&token.to_string()))
}

/// A pointer from unescaped segments: `join(["items", "0", "a/b"])` is
/// `/items/0/a~1b`; no segments give "" (the whole document).
pub fn join<I, S>(segments: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = String::new();
    for s in segments {
        out.push('/');
        out.push_str(&escape(s.as_ref()));
    }
    out
}

/// Split a pointer into unescaped tokens; `Err` if it is neither "" nor
/// starts with `/` (the usual mistake: `items/0` for `/items/0`).
pub fn split(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!(
            "{pointer:?} is not a JSON Pointer: it must be \"\" or start with \"/\""
        ));
    };
    Ok(rest.split('/').map(unescape).collect())
}

/// The value at `pointer`, if any.
pub fn resolve<'a>(doc: &'a Value, pointer: &str) -> Option<&'a Value> {
    doc.pointer(pointer)
}

/// The value at `pointer`, mutably, if any.
pub fn resolve_mut<'a>(doc: &'a mut Value, pointer: &str) -> Option<&'a mut Value> {
    doc.pointer_mut(pointer)
}

/// Every concrete `(pointer, value)` that `pattern` matches in `doc`, in
/// document order. Tokens that do not exist match nothing (a missing value
/// is the schema's business, not a range rule's).
///
/// ```
/// # use serde_json::json;
/// let doc = json!({"items": [{"amount": 1}, {"amount": 2}]});
/// let hits = reins_sdk::pointer::matches(&doc, "/items/*/amount").unwrap();
/// assert_eq!(hits[1].0, "/items/1/amount");
/// ```
pub fn matches<'a>(doc: &'a Value, pattern: &str) -> Result<Vec<(String, &'a Value)>, String> {
    let tokens = split(pattern)?;
    let mut out = Vec::new();
    walk(doc, &tokens, String::new(), &mut out);
    Ok(out)
}

/// Whether `pattern` contains a `*` wildcard token.
pub fn is_pattern(pattern: &str) -> bool {
    pattern.split('/').skip(1).any(|t| t == "*")
}

fn walk<'a>(value: &'a Value, tokens: &[String], here: String, out: &mut Vec<(String, &'a Value)>) {
    let Some((token, rest)) = tokens.split_first() else {
        out.push((here, value));
        return;
    };
    match (token.as_str(), value) {
        ("*", Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, rest, push(&here, i), out);
            }
        }
        ("*", Value::Object(map)) => {
            for (k, item) in map {
                walk(item, rest, push(&here, k), out);
            }
        }
        (t, Value::Object(map)) => {
            let key = if t == "~2" { "*" } else { t };
            if let Some(item) = map.get(key) {
                walk(item, rest, push(&here, key), out);
            }
        }
        (t, Value::Array(items)) => {
            // RFC 6901: an index is "0" or digits without a leading zero.
            let index = (t == "0" || !t.starts_with('0'))
                .then(|| t.parse::<usize>().ok())
                .flatten();
            if let Some(item) = index.and_then(|i| items.get(i)) {
                walk(item, rest, push(&here, t), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_round_trip() {
        assert_eq!(escape("a/b~c"), "a~1b~0c");
        assert_eq!(unescape("a~1b~0c"), "a/b~c");
        assert_eq!(unescape("~01"), "~1");
        assert_eq!(join(["x", "a/b"]), "/x/a~1b");
        assert_eq!(join::<[&str; 0], &str>([]), "");
    }

    #[test]
    fn wildcards_expand_in_order() {
        let doc = json!({"items": [{"amount": 1}, {"x": 2}, {"amount": 3}], "m": {"a/b": 1}});
        let hits = matches(&doc, "/items/*/amount").unwrap();
        let paths: Vec<_> = hits.iter().map(|h| h.0.as_str()).collect();
        assert_eq!(paths, ["/items/0/amount", "/items/2/amount"]);
        assert_eq!(matches(&doc, "/m/*").unwrap()[0].0, "/m/a~1b");
        assert_eq!(matches(&doc, "").unwrap().len(), 1);
        assert!(matches(&doc, "items").is_err());
        assert!(matches(&doc, "/items/01").unwrap().is_empty());
    }
}
