//! `no-unreleased-products` (Rust): no string anywhere in the answer may name
//! a product from `config.products` (whole words, ASCII case-insensitive).
//! With `config.replacement` the names are replaced instead: the validator
//! returns the fixed document and `info` notes.
//!
//! The Python and JavaScript versions (`../../python/`, `../../js/`) pass the
//! same case file (`../../cases/no-unreleased-products.json`).

use reins_sdk::serde_json::Value;
use reins_sdk::validator::{Guest, Verdict};
use reins_sdk::{CallContext, Violation, pointer};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    products: Vec<String>,
    #[serde(default)]
    replacement: Option<String>,
}

struct NoUnreleasedProducts;

impl Guest for NoUnreleasedProducts {
    fn validate(ctx: CallContext, output: String) -> Result<Verdict, String> {
        let config: Config = reins_sdk::parse_config(&ctx)?;
        let Ok(mut doc) = serde_json::from_str::<Value>(&output) else {
            return Ok(Verdict::new(vec![Violation::error("", "json", "the output is not valid JSON")]));
        };
        let mut strings = Vec::new();
        collect_strings(&doc, String::new(), &mut strings);
        let mut violations = Vec::new();
        for (path, text) in strings {
            let mut fixed = text.clone();
            for product in &config.products {
                if find_words(&text, product).is_empty() {
                    continue;
                }
                match &config.replacement {
                    None => violations.push(Violation::error(
                        path.clone(),
                        "unreleased-product",
                        format!("mentions the unreleased product \"{product}\"; do not name unreleased products"),
                    )),
                    Some(r) => {
                        violations.push(Violation::info(
                            path.clone(),
                            "redacted",
                            format!("replaced the unreleased product \"{product}\" with \"{r}\""),
                        ));
                        fixed = replace_words(&fixed, product, r);
                    }
                }
            }
            if fixed != text {
                if let Some(slot) = pointer::resolve_mut(&mut doc, &path) {
                    *slot = Value::String(fixed);
                }
            }
        }
        Ok(match config.replacement {
            Some(_) if !violations.is_empty() => Verdict::fixed(violations, &doc),
            _ => Verdict::new(violations),
        })
    }
}

/// Every string in `doc` as (JSON Pointer, text), in document order.
fn collect_strings(doc: &Value, path: String, out: &mut Vec<(String, String)>) {
    match doc {
        Value::String(s) => out.push((path, s.clone())),
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                collect_strings(v, pointer::push(&path, &i.to_string()), out);
            }
        }
        Value::Object(o) => {
            for (k, v) in o {
                collect_strings(v, pointer::push(&path, k), out);
            }
        }
        _ => {}
    }
}

/// Byte offsets of `word` in `text` as a whole word, ASCII case-insensitive.
fn find_words(text: &str, word: &str) -> Vec<usize> {
    let (hay, needle) = (text.to_ascii_lowercase(), word.to_ascii_lowercase());
    let (h, w) = (hay.as_bytes(), needle.len());
    let mut hits = Vec::new();
    if w == 0 {
        return hits;
    }
    let mut from = 0;
    while let Some(k) = hay[from..].find(&needle).map(|k| k + from) {
        let before = k == 0 || !h[k - 1].is_ascii_alphanumeric();
        let after = k + w == h.len() || !h[k + w].is_ascii_alphanumeric();
        if before && after {
            hits.push(k);
        }
        from = k + 1;
        while from < h.len() && !hay.is_char_boundary(from) {
            from += 1;
        }
    }
    hits
}

fn replace_words(text: &str, word: &str, with: &str) -> String {
    let mut out = String::new();
    let mut last = 0;
    for k in find_words(text, word) {
        if k < last {
            continue;
        }
        out.push_str(&text[last..k]);
        out.push_str(with);
        last = k + word.len();
    }
    out.push_str(&text[last..]);
    out
}

reins_sdk::export_validator!(NoUnreleasedProducts);
