//! `json-schema`: validate the output against the JSON Schema in
//! `config.schema` (draft 2020-12 unless the schema's `$schema` says
//! otherwise), one violation per problem, each phrased so that a model can
//! fix it: what was expected, an example of it, and what it got.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{JsonType, ValidationError, Validator};
use reins_sdk::validator::{Guest, Verdict};
use reins_sdk::{CallContext, Violation, describe_value, pointer};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The schema, as a table or as JSON text.
    schema: Value,
    /// At most this many violations are reported (a badly wrong output
    /// would otherwise produce a repair prompt longer than the output).
    #[serde(default = "default_max_violations")]
    max_violations: usize,
}

fn default_max_violations() -> usize {
    50
}

/// What a config compiles to: built once, by `init` when the host
/// pre-initializes the plugin (so every instance starts with it), else on
/// the first call with this config (and kept for the next ones). Parsing
/// the config and compiling the schema cost far more than validating a
/// document.
struct Compiled {
    schema: Value,
    validator: Validator,
    max_violations: usize,
}

static SETUP: reins_sdk::Setup<Compiled> = reins_sdk::Setup::new();

fn compile(config_text: &str) -> Result<Compiled, String> {
    let config: Config = reins_sdk::parse_config_text(config_text)?;
    let schema = match config.schema {
        Value::String(text) => serde_json::from_str(&text)
            .map_err(|e| format!("config.schema: the string is not valid JSON: {e}"))?,
        s @ (Value::Object(_) | Value::Bool(_)) => s,
        other => {
            return Err(format!(
                "config.schema: must be an object (or JSON text), got {}",
                describe_value(&other)
            ));
        }
    };
    let validator = jsonschema::validator_for(&schema).map_err(|e| {
        let at = e.instance_path().as_str().to_string();
        format!("config.schema{at}: {e}")
    })?;
    Ok(Compiled {
        schema,
        validator,
        max_violations: config.max_violations,
    })
}

struct JsonSchema;

impl Guest for JsonSchema {
    fn validate(ctx: CallContext, output: String) -> Result<Verdict, String> {
        let compiled = SETUP.get(&ctx.config, compile)?;
        let (validator, schema) = (&compiled.validator, &compiled.schema);
        let doc = match reins_sdk::parse_output(&output) {
            Ok(doc) => doc,
            Err(e) => {
                return Ok(Verdict::new(vec![Violation::error(
                    "",
                    "json",
                    format!("{e}; answer with one JSON document and nothing else"),
                )]));
            }
        };
        let mut violations = Vec::new();
        let mut total = 0;
        for error in validator.iter_errors(&doc) {
            for v in explain(&error, schema) {
                total += 1;
                if violations.len() < compiled.max_violations {
                    violations.push(v);
                }
            }
        }
        if total > violations.len() {
            violations.push(Violation::info(
                "",
                "truncated",
                format!("{} more violations not shown", total - violations.len()),
            ));
        }
        Ok(Verdict::new(violations))
    }
}

impl reins_sdk::init::Guest for JsonSchema {
    fn init(config: String) -> Result<(), String> {
        SETUP.init(&config, compile)
    }
}

reins_sdk::export_validator!(JsonSchema);
reins_sdk::export_init!(JsonSchema);

/// One jsonschema error as violations (several for `additionalProperties`,
/// one per property, so each path is exact).
fn explain(error: &ValidationError<'_>, schema: &Value) -> Vec<Violation> {
    let path = error.instance_path().as_str().to_string();
    let value = error.instance().as_ref();
    let got = describe_value(value);
    let code = error.kind().keyword().to_string();
    let message = match error.kind() {
        ValidationErrorKind::Type { kind } => {
            let mut types: Vec<JsonType> = match kind {
                TypeKind::Single(t) => vec![*t],
                TypeKind::Multiple(set) => set.iter().collect(),
            };
            // "a number or null" reads better than "null or a number".
            types.sort_by_key(|t| *t == JsonType::Null);
            // The first type carries the example: "a number (e.g. 500000) or null".
            let wanted: Vec<String> = types
                .iter()
                .enumerate()
                .map(|(i, t)| match (i, t) {
                    (0, t) if *t != JsonType::Null => format!("{} (e.g. {})", with_article(*t), example(*t, value)),
                    (_, t) => with_article(*t),
                })
                .collect();
            format!("must be {}, got {got}", or_list(&wanted))
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().map(str::to_string).unwrap_or_else(|| property.to_string());
            format!("missing the required property {name:?}; add it")
        }
        ValidationErrorKind::Enum { options } => {
            let allowed: Vec<String> = options
                .as_array()
                .map(|a| a.iter().map(Value::to_string).collect())
                .unwrap_or_default();
            format!("must be one of {}, got {got}", allowed.join(", "))
        }
        ValidationErrorKind::Constant { expected_value } => {
            format!("must be exactly {expected_value}, got {got}")
        }
        ValidationErrorKind::Minimum { limit } => format!("must be >= {limit}, got {value}"),
        ValidationErrorKind::Maximum { limit } => format!("must be <= {limit}, got {value}"),
        ValidationErrorKind::ExclusiveMinimum { limit } => format!("must be > {limit}, got {value}"),
        ValidationErrorKind::ExclusiveMaximum { limit } => format!("must be < {limit}, got {value}"),
        ValidationErrorKind::MultipleOf { multiple_of } => {
            format!("must be a multiple of {multiple_of}, got {value}")
        }
        ValidationErrorKind::MinLength { limit } => {
            format!("must be at least {limit} characters long, got {got}")
        }
        ValidationErrorKind::MaxLength { limit } => {
            let n = value.as_str().map_or(0, |s| s.chars().count());
            format!("must be at most {limit} characters long, got {n} characters")
        }
        ValidationErrorKind::MinItems { limit } => {
            format!("must have at least {limit} items, got {got}")
        }
        ValidationErrorKind::MaxItems { limit } => {
            format!("must have at most {limit} items, got {got}; keep the most important ones")
        }
        ValidationErrorKind::MinProperties { limit } => {
            format!("must have at least {limit} properties")
        }
        ValidationErrorKind::MaxProperties { limit } => {
            format!("must have at most {limit} properties")
        }
        ValidationErrorKind::UniqueItems => "must not contain duplicate items".to_string(),
        ValidationErrorKind::Pattern { pattern } => {
            format!("must match the pattern {pattern:?}, got {got}")
        }
        ValidationErrorKind::Format { format } => format!("must be a valid {format}, got {got}"),
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            let allowed = allowed_properties(error, schema);
            return unexpected
                .iter()
                .map(|name| {
                    Violation::error(
                        pointer::push(&path, name),
                        code.clone(),
                        format!("the property {name:?} is not allowed here; remove it{allowed}"),
                    )
                })
                .collect();
        }
        _ => error.to_string(),
    };
    vec![Violation::error(path, code, message)]
}

/// ` (allowed: a, b, c)` from the `properties` next to the failing keyword,
/// when the schema path leads there without `$ref`s.
fn allowed_properties(error: &ValidationError<'_>, schema: &Value) -> String {
    let keyword_path = error.schema_path().as_str();
    let parent = keyword_path.rsplit_once('/').map_or("", |(p, _)| p);
    match schema.pointer(parent).and_then(|s| s.get("properties")).and_then(Value::as_object) {
        Some(props) if !props.is_empty() => {
            let names: Vec<&str> = props.keys().map(String::as_str).collect();
            format!(" (allowed: {})", names.join(", "))
        }
        _ => String::new(),
    }
}

fn with_article(t: JsonType) -> String {
    match t {
        JsonType::Null => "null".to_string(),
        JsonType::Integer => "an integer".to_string(),
        JsonType::Array => "an array".to_string(),
        JsonType::Object => "an object".to_string(),
        other => format!("a {other}"),
    }
}

fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// A short example of `wanted`, derived from the wrong value when that is
/// obvious (`"$500,000"` suggests `500000`), so the model sees the fix.
fn example(wanted: JsonType, got: &Value) -> String {
    match wanted {
        JsonType::Number | JsonType::Integer => {
            let digits: String = got
                .as_str()
                .unwrap_or_default()
                .chars()
                .filter(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
                .collect();
            match digits.parse::<f64>() {
                Ok(n) if n.is_finite() && (wanted == JsonType::Number || n.fract() == 0.0) => {
                    serde_json::Number::from_f64(n)
                        .map(|num| {
                            if n.fract() == 0.0 && n.abs() < 1e15 {
                                format!("{}", n as i64)
                            } else {
                                num.to_string()
                            }
                        })
                        .unwrap_or_else(|| "42".to_string())
                }
                _ => "42".to_string(),
            }
        }
        JsonType::String => match got {
            Value::Number(_) | Value::Bool(_) => format!("\"{got}\""),
            _ => "\"text\"".to_string(),
        },
        JsonType::Boolean => match got.as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("no" | "false" | "n" | "0") => "false".to_string(),
            _ => "true".to_string(),
        },
        JsonType::Array => "[...]".to_string(),
        JsonType::Object => "{...}".to_string(),
        JsonType::Null => "null".to_string(),
    }
}
