//! `coerce-numbers`: models write `"$500,000"` where the schema wants
//! `500000`. Wherever the schema in `config.schema` asks for a number or an
//! integer and the output has a string, convert it (currency symbols and
//! codes, thousands commas and spaces removed) and return the corrected
//! document as `fixed`, with one `info` violation per conversion. A string
//! that is not a plain amount is an `error` (code `type`): guessing would be
//! worse than a repair.

use reins_sdk::validator::{Guest, Verdict};
use reins_sdk::{CallContext, Violation, describe_value, pointer};
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The schema, as a table or as JSON text.
    schema: Value,
}

/// Deeper schemas than this are not walked (guards against `$ref` cycles).
const MAX_DEPTH: usize = 64;

struct CoerceNumbers;

/// The set-up: the config's schema, parsed once (in `init`, or on the first
/// call with this config).
static SETUP: reins_sdk::Setup<Value> = reins_sdk::Setup::new();

fn schema_of(config_text: &str) -> Result<Value, String> {
    let config: Config = reins_sdk::parse_config_text(config_text)?;
    match config.schema {
        Value::String(text) => {
            serde_json::from_str(&text).map_err(|e| format!("config.schema: the string is not valid JSON: {e}"))
        }
        s @ (Value::Object(_) | Value::Bool(_)) => Ok(s),
        other => Err(format!(
            "config.schema: must be an object (or JSON text), got {}",
            describe_value(&other)
        )),
    }
}

impl Guest for CoerceNumbers {
    fn validate(ctx: CallContext, output: String) -> Result<Verdict, String> {
        let schema = SETUP.get(&ctx.config, schema_of)?;
        let schema: &Value = &schema;
        let mut doc = match reins_sdk::parse_output(&output) {
            Ok(doc) => doc,
            Err(e) => return Ok(Verdict::new(vec![Violation::error("", "json", e)])),
        };
        let mut walker = Walker { root: schema, violations: Vec::new(), coerced: 0 };
        walker.walk(&mut doc, schema, String::new(), 0);
        Ok(if walker.coerced > 0 {
            Verdict::fixed(walker.violations, &doc)
        } else {
            Verdict::new(walker.violations)
        })
    }
}

impl reins_sdk::init::Guest for CoerceNumbers {
    fn init(config: String) -> Result<(), String> {
        SETUP.init(&config, schema_of)
    }
}

reins_sdk::export_validator!(CoerceNumbers);
reins_sdk::export_init!(CoerceNumbers);

struct Walker<'s> {
    root: &'s Value,
    violations: Vec<Violation>,
    coerced: usize,
}

impl<'s> Walker<'s> {
    fn walk(&mut self, value: &mut Value, schema: &'s Value, path: String, depth: usize) {
        let Some(schema) = schema.as_object() else { return };
        if depth > MAX_DEPTH {
            return;
        }
        if let Some(target) = self.deref(schema) {
            self.walk(value, target, path.clone(), depth + 1);
        }
        for sub in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
            self.walk(value, sub, path.clone(), depth + 1);
        }
        match value {
            Value::String(s) => {
                let accepts = self.accepted_types(schema, depth);
                if accepts.is_empty() || accepts.contains(&"string") {
                    return;
                }
                let integer_only = accepts.contains(&"integer") && !accepts.contains(&"number");
                let nullable = accepts.contains(&"null");
                if !integer_only && !accepts.contains(&"number") {
                    return;
                }
                let original = s.clone();
                self.coerce(value, &original, integer_only, nullable, path);
            }
            Value::Object(map) => self.walk_object(map, schema, &path, depth),
            Value::Array(items) => self.walk_array(items, schema, &path, depth),
            _ => {}
        }
    }

    fn walk_object(&mut self, map: &mut Map<String, Value>, schema: &'s Map<String, Value>, path: &str, depth: usize) {
        let props = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        for (key, item) in map.iter_mut() {
            let sub = props.and_then(|p| p.get(key)).or(additional);
            if let Some(sub) = sub {
                self.walk(item, sub, pointer::push(path, key), depth + 1);
            }
        }
        if let Some(branch) = self.only_branch_of_type(schema, "object") {
            for (key, item) in map.iter_mut() {
                let sub = branch.get("properties").and_then(|p| p.get(key));
                if let Some(sub) = sub {
                    self.walk(item, sub, pointer::push(path, key), depth + 1);
                }
            }
        }
    }

    fn walk_array(&mut self, items: &mut [Value], schema: &'s Map<String, Value>, path: &str, depth: usize) {
        // 2020-12 `prefixItems` + `items`; draft 7 array-form `items` is a tuple.
        let (prefix, rest) = match schema.get("items") {
            Some(Value::Array(tuple)) => (Some(tuple), None),
            other => (schema.get("prefixItems").and_then(Value::as_array), other),
        };
        let prefix_len = prefix.map_or(0, Vec::len);
        for (i, item) in items.iter_mut().enumerate() {
            let sub = if i < prefix_len { prefix.map(|p| &p[i]) } else { rest };
            if let Some(sub) = sub {
                self.walk(item, sub, pointer::push(path, i), depth + 1);
            }
        }
        if let Some(branch) = self.only_branch_of_type(schema, "array")
            && let Some(sub) = branch.get("items").filter(|s| s.is_object()) {
                for (i, item) in items.iter_mut().enumerate() {
                    self.walk(item, sub, pointer::push(path, i), depth + 1);
                }
            }
    }

    /// Replace the string at `value` by the number it spells, or report it.
    fn coerce(&mut self, value: &mut Value, original: &str, integer_only: bool, nullable: bool, path: String) {
        let kind = if integer_only { "an integer" } else { "a number" };
        let or_null = if nullable { " or null" } else { "" };
        let got = describe_value(&Value::String(original.to_string()));
        if nullable && is_null_word(original) {
            *value = Value::Null;
            self.coerced += 1;
            self.violations.push(Violation::info(path, "coerced", format!("converted {got} to null")));
            return;
        }
        match parse_amount(original) {
            Some(n) if integer_only && n.fract() != 0.0 => {
                self.violations.push(Violation::error(
                    path,
                    "type",
                    format!("must be {kind}{or_null}, got {got}, which is not a whole number"),
                ));
            }
            Some(n) => {
                let number = to_json_number(n);
                self.violations.push(Violation::info(
                    path,
                    "coerced",
                    format!("converted {got} to the number {number}"),
                ));
                *value = number;
                self.coerced += 1;
            }
            None => {
                self.violations.push(Violation::error(
                    path,
                    "type",
                    format!("must be {kind}{or_null} (e.g. 500000), got {got}; write the amount as digits only"),
                ));
            }
        }
    }

    /// The `type`s a schema accepts, including those of its `anyOf`/`oneOf`
    /// branches and `$ref` target; empty if it does not say.
    fn accepted_types(&self, schema: &'s Map<String, Value>, depth: usize) -> Vec<&'s str> {
        let mut out = Vec::new();
        if depth > MAX_DEPTH {
            return out;
        }
        match schema.get("type") {
            Some(Value::String(t)) => out.push(t.as_str()),
            Some(Value::Array(ts)) => out.extend(ts.iter().filter_map(Value::as_str)),
            _ => {}
        }
        let branches = ["anyOf", "oneOf"]
            .iter()
            .filter_map(|k| schema.get(*k).and_then(Value::as_array))
            .flatten()
            .filter_map(Value::as_object);
        for branch in branches.chain(self.deref(schema).and_then(Value::as_object)) {
            out.extend(self.accepted_types(branch, depth + 1));
        }
        out
    }

    /// The one `anyOf`/`oneOf` branch that declares `type` = `kind`, if
    /// exactly one does (with several, which applies is a guess).
    fn only_branch_of_type(&self, schema: &'s Map<String, Value>, kind: &str) -> Option<&'s Map<String, Value>> {
        let mut found = None;
        for key in ["anyOf", "oneOf"] {
            for branch in schema.get(key).and_then(Value::as_array).into_iter().flatten() {
                let branch = branch.as_object()?;
                if branch.get("type").and_then(Value::as_str) == Some(kind) {
                    if found.is_some() {
                        return None;
                    }
                    found = Some(branch);
                }
            }
        }
        found
    }

    /// The local target of `$ref` (`#/$defs/...`), if any.
    fn deref(&self, schema: &Map<String, Value>) -> Option<&'s Value> {
        let reference = schema.get("$ref")?.as_str()?;
        let fragment = reference.strip_prefix('#')?;
        self.root.pointer(fragment)
    }
}

fn is_null_word(s: &str) -> bool {
    matches!(s.trim().to_ascii_lowercase().as_str(), "" | "null" | "none" | "n/a")
}

/// `"$500,000"`, `"1,250.50"`, `"€ 1200 EUR"`, `"-£3"` → the number; `None`
/// for anything that is not a plain amount (`"about 5k"`, `"1,5"`).
fn parse_amount(input: &str) -> Option<f64> {
    let mut s: String = input.chars().filter(|c| !c.is_whitespace()).collect();
    for code in ["USD", "EUR", "GBP"] {
        if s.len() >= 3 && s.is_char_boundary(s.len() - 3) && s[s.len() - 3..].eq_ignore_ascii_case(code) {
            s.truncate(s.len() - 3);
        } else if s.len() >= 3 && s.is_char_boundary(3) && s[..3].eq_ignore_ascii_case(code) {
            s.drain(..3);
        }
    }
    let mut negative = false;
    let mut body = s.as_str();
    loop {
        if let Some(rest) = body.strip_prefix('-') {
            negative = !negative;
            body = rest;
        } else if let Some(rest) = body.strip_prefix('+') {
            body = rest;
        } else if let Some(rest) = body.strip_prefix(['$', '€', '£']) {
            body = rest;
        } else {
            break;
        }
    }
    let body = body.trim_end_matches(['$', '€', '£']);
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    if let Some(f) = frac
        && (f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit())) {
            return None;
        }
    if int.contains(',') {
        // Thousands groups only: "1,250" yes, "1,5" and "12,34,567" no.
        let mut groups = int.split(',');
        let first = groups.next()?;
        if first.is_empty() || first.len() > 3 || !first.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !groups.all(|g| g.len() == 3 && g.bytes().all(|b| b.is_ascii_digit())) {
            return None;
        }
    } else if int.is_empty() && frac.is_none() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let plain = format!("{}.{}", int.replace(',', ""), frac.unwrap_or("0"));
    let n: f64 = plain.parse().ok()?;
    n.is_finite().then_some(if negative { -n } else { n })
}

/// Whole numbers as JSON integers (`500000`, not `500000.0`).
fn to_json_number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("$500,000"), Some(500000.0));
        assert_eq!(parse_amount("1,250.50"), Some(1250.5));
        assert_eq!(parse_amount("€ 1200 EUR"), Some(1200.0));
        assert_eq!(parse_amount("-£3"), Some(-3.0));
        assert_eq!(parse_amount("$-3"), Some(-3.0));
        assert_eq!(parse_amount("USD 12"), Some(12.0));
        assert_eq!(parse_amount(".5"), Some(0.5));
        assert_eq!(parse_amount("1,5"), None);
        assert_eq!(parse_amount("about 5k"), None);
        assert_eq!(parse_amount("NaN"), None);
        assert_eq!(parse_amount("inf"), None);
        assert_eq!(parse_amount(""), None);
        assert_eq!(parse_amount("$"), None);
        assert_eq!(parse_amount("1."), None);
        assert_eq!(to_json_number(500000.0).to_string(), "500000");
    }
}
