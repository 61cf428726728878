//! The repair prompt: what the model is told when its answer failed.
//!
//! A repair request keeps the original conversation, appends the model's
//! previous answer as an `assistant` message, and one `user` message rendered
//! from the template. Rendering is a pure function of the violations (and the
//! attempt numbers): the same violations give byte-identical prompts.
//!
//! Placeholders (anything else in `{{...}}` is refused when the config loads):
//! - `{{violations}}`: one line per violation, `- <pointer> [<code>]: <message>`
//!   (the whole document is written `(document)`);
//! - `{{violations_json}}`: the violations as a compact JSON array;
//! - `{{attempt}}`: the number of the attempt being asked for;
//! - `{{max_attempts}}`;
//! - `{{schema}}`: the pipeline's output schema as compact JSON (`{}` if none).

use reins_runtime::{Message, Violation};
use serde_json::Value;
use std::fmt::Write;

/// The template used when a pipeline sets none.
pub const DEFAULT_TEMPLATE: &str = "Your previous answer did not pass validation. Fix every problem below:\n\
{{violations}}\n\
\n\
Reply with the corrected JSON only: no prose, no code fences.";

/// The default for prose answers (pipelines with `output = "text"`).
pub const TEXT_TEMPLATE: &str = "Your previous answer did not pass the checks. Fix every problem below:\n\
{{violations}}\n\
\n\
Reply with the corrected answer only.";

const PLACEHOLDERS: [&str; 5] = [
    "violations",
    "violations_json",
    "attempt",
    "max_attempts",
    "schema",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Slot(&'static str),
}

/// A parsed repair template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairTemplate {
    parts: Vec<Part>,
}

impl Default for RepairTemplate {
    fn default() -> Self {
        // The default template only uses known placeholders.
        RepairTemplate::parse(DEFAULT_TEMPLATE).unwrap_or(RepairTemplate { parts: Vec::new() })
    }
}

impl RepairTemplate {
    /// The default template of prose answers.
    pub fn text_default() -> RepairTemplate {
        RepairTemplate::parse(TEXT_TEMPLATE).unwrap_or_default()
    }

    /// Parses a template; an unknown or unclosed placeholder is an error naming it.
    pub fn parse(text: &str) -> Result<RepairTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("unclosed placeholder `{{{{{}`", preview(after)))?;
            let name = after[..close].trim();
            let slot = PLACEHOLDERS.iter().find(|p| **p == name).ok_or_else(|| {
                format!(
                    "unknown placeholder `{{{{{name}}}}}` (known: {})",
                    PLACEHOLDERS.join(", ")
                )
            })?;
            parts.push(Part::Slot(slot));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if !parts
            .iter()
            .any(|p| matches!(p, Part::Slot("violations") | Part::Slot("violations_json")))
        {
            return Err(
                "the template must contain {{violations}} or {{violations_json}}".to_owned(),
            );
        }
        Ok(RepairTemplate { parts })
    }

    /// The repair message for `violations`, asking for attempt `attempt`.
    pub fn render(
        &self,
        violations: &[Violation],
        attempt: u32,
        max_attempts: u32,
        schema: Option<&Value>,
    ) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Slot("violations") => out.push_str(&list(violations)),
                Part::Slot("violations_json") => out.push_str(
                    &serde_json::to_string(violations).unwrap_or_else(|_| "[]".to_owned()),
                ),
                Part::Slot("attempt") => {
                    let _ = write!(out, "{attempt}");
                }
                Part::Slot("max_attempts") => {
                    let _ = write!(out, "{max_attempts}");
                }
                Part::Slot(_) => {
                    out.push_str(&schema.map_or_else(|| "{}".to_owned(), Value::to_string))
                }
            }
        }
        out
    }
}

fn preview(text: &str) -> &str {
    match text.char_indices().nth(20) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// One line per violation.
fn list(violations: &[Violation]) -> String {
    let mut out = String::new();
    for (i, v) in violations.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let path = if v.path.is_empty() {
            "(document)"
        } else {
            &v.path
        };
        let _ = write!(out, "- {path} [{}]: {}", v.code, v.message);
    }
    out
}

/// The conversation of a repair attempt: the original conversation, the
/// previous answer, and the repair message.
pub fn repair_messages(
    original: &[Message],
    previous_answer: &str,
    repair_prompt: String,
) -> Vec<Message> {
    let mut messages = Vec::with_capacity(original.len() + 2);
    messages.extend_from_slice(original);
    messages.push(Message::new("assistant", previous_answer));
    messages.push(Message::new("user", repair_prompt));
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use reins_runtime::Severity;

    fn v(path: &str, code: &str, message: &str) -> Violation {
        Violation {
            path: path.into(),
            code: code.into(),
            message: message.into(),
            severity: Severity::Error,
        }
    }

    #[test]
    fn default_template_lists_pointers_codes_and_messages() {
        let t = RepairTemplate::default();
        let out = t.render(
            &[
                v(
                    "/risks/0/damage_cap",
                    "type",
                    "\"$500,000\" is not of type \"number\"",
                ),
                v("", "required", "\"risks\" is a required property"),
            ],
            2,
            3,
            None,
        );
        assert_eq!(
            out,
            "Your previous answer did not pass validation. Fix every problem below:\n\
             - /risks/0/damage_cap [type]: \"$500,000\" is not of type \"number\"\n\
             - (document) [required]: \"risks\" is a required property\n\
             \n\
             Reply with the corrected JSON only: no prose, no code fences."
        );
    }

    #[test]
    fn rendering_is_deterministic() {
        let t =
            RepairTemplate::parse("{{attempt}}/{{max_attempts}} {{violations_json}} {{schema}}")
                .unwrap();
        let vs = [v("/a", "x", "m")];
        let schema = serde_json::json!({"type": "object"});
        let a = t.render(&vs, 2, 3, Some(&schema));
        assert_eq!(a, t.render(&vs, 2, 3, Some(&schema)));
        assert_eq!(
            a,
            r#"2/3 [{"path":"/a","code":"x","message":"m","severity":"error"}] {"type":"object"}"#
        );
    }

    #[test]
    fn bad_templates_are_refused_with_the_placeholder_named() {
        assert!(
            RepairTemplate::parse("{{violatons}}")
                .unwrap_err()
                .contains("violatons")
        );
        assert!(
            RepairTemplate::parse("{{violations")
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(
            RepairTemplate::parse("fix it")
                .unwrap_err()
                .contains("{{violations}}")
        );
    }

    #[test]
    fn repair_conversation_keeps_the_original() {
        let original = vec![Message::new("system", "s"), Message::new("user", "u")];
        let m = repair_messages(&original, "{bad}", "fix".into());
        assert_eq!(m.len(), 4);
        assert_eq!(m[2], Message::new("assistant", "{bad}"));
        assert_eq!(m[3], Message::new("user", "fix"));
    }
}
