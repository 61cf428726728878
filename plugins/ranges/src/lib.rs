//! `ranges`: the checks a JSON Schema cannot express, or expresses badly:
//! bounds on values found by pattern (`/items/*/amount`), allowed values,
//! order between two fields (`start_date <= end_date`) and sums
//! (`total == sum of /items/*/amount`). Each failure names the exact value
//! and what it should be.
//!
//! A value that is absent or null is not checked: presence is the schema's
//! job, and a rule on an optional field should not fire when it is omitted.

use reins_sdk::pointer;
use reins_sdk::validator::{Guest, Verdict};
use reins_sdk::{CallContext, Severity, Violation, describe_value};
use serde::Deserialize;
use serde_json::Value;
use std::cmp::Ordering;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    rules: Vec<RawRule>,
}

/// One rule as written; [`Rule::parse`] decides which kind it is.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRule {
    path: Option<String>,
    min: Option<f64>,
    max: Option<f64>,
    exclusive_min: Option<f64>,
    exclusive_max: Option<f64>,
    #[serde(rename = "enum")]
    allowed: Option<Vec<Value>>,
    check: Option<String>,
    left: Option<String>,
    right: Option<String>,
    total: Option<String>,
    items: Option<String>,
    tolerance: Option<f64>,
    /// Appended to every message of this rule: the business reason.
    message: Option<String>,
    /// `error` (default), `warning` or `info`.
    severity: Option<String>,
}

enum Kind {
    /// Bounds and/or allowed values on every value `path` matches.
    Value { path: String, bounds: Bounds, allowed: Option<Vec<Value>> },
    Compare { op: Op, left: String, right: String },
    Sum { total: String, items: String, tolerance: f64 },
}

#[derive(Default)]
struct Bounds {
    min: Option<f64>,
    max: Option<f64>,
    exclusive_min: Option<f64>,
    exclusive_max: Option<f64>,
}

#[derive(Clone, Copy)]
enum Op {
    Lt,
    Lte,
    Eq,
    Gte,
    Gt,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Lte => "<=",
            Op::Eq => "==",
            Op::Gte => ">=",
            Op::Gt => ">",
        }
    }

    fn holds(self, o: Ordering) -> bool {
        match self {
            Op::Lt => o.is_lt(),
            Op::Lte => o.is_le(),
            Op::Eq => o.is_eq(),
            Op::Gte => o.is_ge(),
            Op::Gt => o.is_gt(),
        }
    }
}

struct Rule {
    kind: Kind,
    hint: Option<String>,
    severity: Severity,
}

impl Rule {
    /// Checks the rule's shape, naming the field at fault (`config.rules[2].left`).
    fn parse(i: usize, raw: RawRule) -> Result<Rule, String> {
        let at = |field: &str| format!("config.rules[{i}].{field}");
        let pointer_field = |field: &str, value: Option<String>| -> Result<String, String> {
            let value = value.ok_or_else(|| format!("{}: missing (required)", at(field)))?;
            pointer::split(&value).map_err(|e| format!("{}: {e}", at(field)))?;
            Ok(value)
        };
        let severity = match raw.severity.as_deref() {
            None | Some("error") => Severity::Error,
            Some("warning") => Severity::Warning,
            Some("info") => Severity::Info,
            Some(other) => {
                return Err(format!(
                    "{}: {other:?} is not one of \"error\", \"warning\", \"info\"",
                    at("severity")
                ));
            }
        };
        let kind = match raw.check.as_deref() {
            None => {
                let path = pointer_field("path", raw.path)?;
                let bounds = Bounds {
                    min: raw.min,
                    max: raw.max,
                    exclusive_min: raw.exclusive_min,
                    exclusive_max: raw.exclusive_max,
                };
                let no_bounds = bounds.min.is_none()
                    && bounds.max.is_none()
                    && bounds.exclusive_min.is_none()
                    && bounds.exclusive_max.is_none();
                if no_bounds && raw.allowed.is_none() {
                    return Err(format!(
                        "config.rules[{i}]: a value rule needs min, max, exclusive_min, exclusive_max or enum \
                         (or set check = \"lte\" | \"lt\" | \"eq\" | \"gte\" | \"gt\" | \"sum\")"
                    ));
                }
                Kind::Value { path, bounds, allowed: raw.allowed }
            }
            Some("sum") => Kind::Sum {
                total: pointer_field("total", raw.total)?,
                items: pointer_field("items", raw.items)?,
                tolerance: raw.tolerance.unwrap_or(0.01),
            },
            Some(op) => {
                let op = match op {
                    "lt" => Op::Lt,
                    "lte" => Op::Lte,
                    "eq" => Op::Eq,
                    "gte" => Op::Gte,
                    "gt" => Op::Gt,
                    other => {
                        return Err(format!(
                            "{}: unknown check {other:?}, expected one of lte, lt, eq, gte, gt, sum",
                            at("check")
                        ));
                    }
                };
                Kind::Compare {
                    op,
                    left: pointer_field("left", raw.left)?,
                    right: pointer_field("right", raw.right)?,
                }
            }
        };
        Ok(Rule { kind, hint: raw.message, severity })
    }

    fn violation(&self, path: String, code: &str, message: String) -> Violation {
        let message = match &self.hint {
            Some(hint) => format!("{message} ({hint})"),
            None => message,
        };
        Violation::new(self.severity, path, code, message)
    }

    fn check(&self, doc: &Value, out: &mut Vec<Violation>) {
        match &self.kind {
            Kind::Value { path, bounds, allowed } => {
                for (at, value) in pointer::matches(doc, path).unwrap_or_default() {
                    if value.is_null() {
                        continue;
                    }
                    if let Some(allowed) = allowed
                        && !allowed.iter().any(|a| same(a, value)) {
                            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
                            out.push(self.violation(
                                at.clone(),
                                "enum",
                                format!("must be one of {}, got {}", list.join(", "), describe_value(value)),
                            ));
                        }
                    if let Some(problem) = bounds.check(value) {
                        let code = if value.is_number() { "range" } else { "type" };
                        out.push(self.violation(at, code, problem));
                    }
                }
            }
            Kind::Compare { op, left, right } => {
                let right_tokens = pointer::split(right).unwrap_or_default();
                let left_tokens = pointer::split(left).unwrap_or_default();
                for (at, l) in pointer::matches(doc, left).unwrap_or_default() {
                    // `/items/*/start` vs `/items/*/end`: pair by wildcard.
                    let right_here = substitute(&right_tokens, &wildcard_bindings(&left_tokens, &at));
                    for (rat, r) in pointer::matches(doc, &right_here).unwrap_or_default() {
                        if l.is_null() || r.is_null() {
                            continue;
                        }
                        match compare(l, r) {
                            Some(o) if op.holds(o) => {}
                            Some(_) => out.push(self.violation(
                                at.clone(),
                                "compare",
                                format!("must be {} {rat} ({}), got {}", op.symbol(), plain(r), plain(l)),
                            )),
                            None => out.push(self.violation(
                                at.clone(),
                                "type",
                                format!(
                                    "cannot be compared with {rat}: {} vs {}; use numbers, or dates as YYYY-MM-DD strings",
                                    describe_value(l),
                                    describe_value(r)
                                ),
                            )),
                        }
                    }
                }
            }
            Kind::Sum { total, items, tolerance } => {
                let Some(t) = pointer::resolve(doc, total).filter(|t| !t.is_null()) else { return };
                let mut sum = 0.0;
                for (at, v) in pointer::matches(doc, items).unwrap_or_default() {
                    match v {
                        Value::Null => {}
                        Value::Number(n) => sum += n.as_f64().unwrap_or(0.0),
                        other => {
                            out.push(self.violation(
                                at,
                                "type",
                                format!("must be a number (it is summed into {total}), got {}", describe_value(other)),
                            ));
                            return;
                        }
                    }
                }
                let Some(tv) = t.as_f64() else {
                    out.push(self.violation(
                        total.clone(),
                        "type",
                        format!("must be a number (the sum of {items}), got {}", describe_value(t)),
                    ));
                    return;
                };
                if (tv - sum).abs() > *tolerance {
                    out.push(self.violation(
                        total.clone(),
                        "sum",
                        format!("must equal the sum of {items} ({}), got {}", round(sum), plain(t)),
                    ));
                }
            }
        }
    }
}

impl Bounds {
    /// What is wrong with `value`, if anything.
    fn check(&self, value: &Value) -> Option<String> {
        let describe = || {
            let mut parts = Vec::new();
            if let Some(m) = self.min {
                parts.push(format!(">= {m}"));
            }
            if let Some(m) = self.exclusive_min {
                parts.push(format!("> {m}"));
            }
            if let Some(m) = self.max {
                parts.push(format!("<= {m}"));
            }
            if let Some(m) = self.exclusive_max {
                parts.push(format!("< {m}"));
            }
            parts.join(" and ")
        };
        if self.min.is_none() && self.max.is_none() && self.exclusive_min.is_none() && self.exclusive_max.is_none() {
            return None;
        }
        let Some(n) = value.as_f64() else {
            return Some(format!("must be a number {}, got {}", describe(), describe_value(value)));
        };
        let ok = self.min.is_none_or(|m| n >= m)
            && self.max.is_none_or(|m| n <= m)
            && self.exclusive_min.is_none_or(|m| n > m)
            && self.exclusive_max.is_none_or(|m| n < m);
        (!ok).then(|| format!("must be {}, got {value}", describe()))
    }
}

/// JSON equality, except that numbers compare by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_number() && b.is_number() => x == y,
        _ => a == b,
    }
}

/// Numbers by value, strings lexically (ISO dates sort that way).
fn compare(l: &Value, r: &Value) -> Option<Ordering> {
    match (l, r) {
        (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// A value as the model wrote it, strings without quotes (`2024-01-01`).
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Hide float noise: 0.1 + 0.2 reads as 0.3.
fn round(x: f64) -> String {
    let r = (x * 1e9).round() / 1e9;
    format!("{r}")
}

/// The tokens of `concrete` where `pattern` has `*`.
fn wildcard_bindings(pattern: &[String], concrete: &str) -> Vec<String> {
    let tokens = pointer::split(concrete).unwrap_or_default();
    pattern
        .iter()
        .zip(tokens)
        .filter(|(p, _)| p.as_str() == "*")
        .map(|(_, t)| t)
        .collect()
}

/// `pattern` with its first wildcards replaced by `bindings` (the rest stay
/// wildcards and expand as usual).
fn substitute(pattern: &[String], bindings: &[String]) -> String {
    let mut bound = bindings.iter();
    let mut out = String::new();
    for token in pattern {
        out.push('/');
        match (token.as_str(), token == "*") {
            (_, true) => match bound.next() {
                Some(b) => out.push_str(&pointer::escape(b)),
                None => out.push('*'),
            },
            (t, false) => out.push_str(&pointer::escape(t)),
        }
    }
    out
}

struct Ranges;

/// The set-up: the config's rules, parsed and checked once (in `init`, or
/// on the first call with this config).
static SETUP: reins_sdk::Setup<Vec<Rule>> = reins_sdk::Setup::new();

fn rules_of(config_text: &str) -> Result<Vec<Rule>, String> {
    let config: Config = reins_sdk::parse_config_text(config_text)?;
    config.rules.into_iter().enumerate().map(|(i, raw)| Rule::parse(i, raw)).collect()
}

impl Guest for Ranges {
    fn validate(ctx: CallContext, output: String) -> Result<Verdict, String> {
        let rules = SETUP.get(&ctx.config, rules_of)?;
        let doc = match reins_sdk::parse_output(&output) {
            Ok(doc) => doc,
            Err(e) => return Ok(Verdict::new(vec![Violation::error("", "json", e)])),
        };
        let mut violations = Vec::new();
        for rule in rules.iter() {
            rule.check(&doc, &mut violations);
        }
        Ok(Verdict::new(violations))
    }
}

impl reins_sdk::init::Guest for Ranges {
    fn init(config: String) -> Result<(), String> {
        SETUP.init(&config, rules_of)
    }
}

reins_sdk::export_validator!(Ranges);
reins_sdk::export_init!(Ranges);
