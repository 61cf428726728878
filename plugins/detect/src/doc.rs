//! The string leaves of a validator's output.
//!
//! A validator that accepts "any" output is handed either a JSON document
//! (JSON pipelines) or the JSON text of one string (text pipelines: the
//! answer itself). Both are a [`Value`]; a text answer is just a document
//! that is a single string leaf at the pointer `""`. So such a validator
//! reads the output with [`read_output`], checks every string leaf with
//! [`for_each_string_mut`], and returns the (possibly changed) value as its
//! `fixed` document: in a text pipeline that is again one JSON string.
//!
//! Object keys are not leaves and are not visited.

use serde_json::Value;

/// The output as a value. Output that is not JSON at all (which a host
/// never sends, but a hand-written case may) is read as the text itself,
/// so a checker scans it rather than letting it through.
pub fn read_output(output: &str) -> Value {
    serde_json::from_str(output).unwrap_or_else(|_| Value::String(output.to_string()))
}

/// Calls `f(pointer, text)` for every string leaf, in document order.
pub fn for_each_string(doc: &Value, f: &mut dyn FnMut(&str, &str)) {
    let mut path = String::new();
    walk(doc, &mut path, f);
}

/// Calls `f(pointer, text)` for every string leaf, in document order; `f`
/// may change the string.
pub fn for_each_string_mut(doc: &mut Value, f: &mut dyn FnMut(&str, &mut String)) {
    let mut path = String::new();
    walk_mut(doc, &mut path, f);
}

/// Calls `f(pointer, value)` for every leaf that is not an array or an
/// object (strings, numbers, booleans, nulls), in document order.
pub fn for_each_leaf(doc: &Value, f: &mut dyn FnMut(&str, &Value)) {
    fn go(value: &Value, path: &mut String, f: &mut dyn FnMut(&str, &Value)) {
        match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    push_token(path, &i.to_string());
                    go(item, path, f);
                    path.truncate(len);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let len = path.len();
                    push_token(path, k);
                    go(item, path, f);
                    path.truncate(len);
                }
            }
            leaf => f(path, leaf),
        }
    }
    let mut path = String::new();
    go(doc, &mut path, f);
}

/// Appends one RFC 6901 reference token (`~` → `~0`, `/` → `~1`).
pub fn push_token(path: &mut String, token: &str) {
    path.push('/');
    for c in token.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

fn walk(value: &Value, path: &mut String, f: &mut dyn FnMut(&str, &str)) {
    match value {
        Value::String(s) => f(path, s),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                push_token(path, &i.to_string());
                walk(item, path, f);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let len = path.len();
                push_token(path, k);
                walk(item, path, f);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

fn walk_mut(value: &mut Value, path: &mut String, f: &mut dyn FnMut(&str, &mut String)) {
    match value {
        Value::String(s) => f(path, s),
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                push_token(path, &i.to_string());
                walk_mut(item, path, f);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                let len = path.len();
                push_token(path, k);
                walk_mut(item, path, f);
                path.truncate(len);
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
    fn text_and_documents() {
        assert_eq!(read_output("\"hi\""), json!("hi"));
        assert_eq!(read_output("{\"a\": 1}"), json!({"a": 1}));
        assert_eq!(read_output("plain words"), json!("plain words"));

        let mut seen = Vec::new();
        for_each_string(&json!("x"), &mut |p, s| seen.push((p.to_string(), s.to_string())));
        assert_eq!(seen, [(String::new(), "x".to_string())]);

        let mut doc = json!({"a/b": ["x", 1, {"c~": "y"}], "n": null});
        let mut paths = Vec::new();
        for_each_string_mut(&mut doc, &mut |p, s| {
            paths.push(p.to_string());
            s.make_ascii_uppercase();
        });
        assert_eq!(paths, ["/a~1b/0", "/a~1b/2/c~0"]);
        assert_eq!(doc, json!({"a/b": ["X", 1, {"c~": "Y"}], "n": null}));

        let mut leaves = Vec::new();
        for_each_leaf(&doc, &mut |p, v| leaves.push((p.to_string(), v.clone())));
        assert_eq!(
            leaves,
            [
                ("/a~1b/0".to_string(), json!("X")),
                ("/a~1b/1".to_string(), json!(1)),
                ("/a~1b/2/c~0".to_string(), json!("Y")),
                ("/n".to_string(), json!(null)),
            ]
        );
    }
}
