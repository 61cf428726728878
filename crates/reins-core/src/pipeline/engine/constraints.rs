//! Stage 3, constraints: the tools of this request. The caller can only
//! narrow them, and each proposed call's arguments are checked against the
//! schemas of both.

use super::*;

impl Run<'_> {
    pub(super) async fn constraints(&mut self) -> Result<Vec<Tool>, RunError> {
        let p = self.p;
        let mut tools = match &p.config.constraints {
            None => Vec::new(),
            Some(entry) => {
                let plugin = self.plugin(Layer::Constraints, &entry.plugin)?;
                let ctx = self.ctx.clone();
                let timed = blocking(&plugin, move |p| p.tools(&ctx)).await;
                // A skipped constraints plugin leaves the model with no tools: the safe side.
                self.settle(Layer::Constraints, &plugin, timed, |t| {
                    format!("{} tools", t.len())
                })?
                .unwrap_or_default()
            }
        };
        let Some(declared) = &self.caller_tools else {
            return Ok(tools);
        };
        match p.caller_tools() {
            // The caller can narrow the allowed tools, never widen them.
            CallerTools::Narrow | CallerTools::Deny => {
                tools.retain(|t| declared.iter().any(|(d, _)| d.name == t.name));
            }
            // The caller's tools go to the model too (a manifest's entry of
            // the same name wins: its schema and access level are the operator's).
            CallerTools::Allow => {
                for (d, _) in declared {
                    if !tools.iter().any(|t| t.name == d.name) {
                        tools.push(Tool {
                            name: d.name.clone(),
                            description: d.description.clone(),
                            parameters: d
                                .parameters
                                .clone()
                                .unwrap_or_else(|| serde_json::json!({"type": "object"})),
                            access: reins_runtime::Access::Write,
                        });
                    }
                }
            }
        }
        Ok(tools)
    }

    /// The tool's argument schema, then the caller's declared one, if any.
    pub(super) fn check_arguments(&self, tool: &Tool, arguments: &Value, at: &str) -> Vec<Finding> {
        let errors = |validator: &jsonschema::Validator, whose: &str| -> Vec<Finding> {
            validator
                .iter_errors(arguments)
                .map(|e| {
                    finding(
                        "constraints",
                        violation(
                            format!("{at}/arguments{}", e.instance_path()),
                            "tool-arguments",
                            format!("arguments of `{}`{whose}: {e}", tool.name),
                        ),
                    )
                })
                .collect()
        };
        let mut out = match self.p.tool_validator(&tool.parameters) {
            Err(message) => vec![finding(
                "constraints",
                violation(
                    at.to_owned(),
                    "tool-schema",
                    format!("tool `{}` has an unusable schema: {message}", tool.name),
                ),
            )],
            Ok(validator) => errors(&validator, ""),
        };
        let declared = self
            .caller_tools
            .iter()
            .flatten()
            .find(|(t, _)| t.name == tool.name)
            .and_then(|(_, check)| check.as_ref());
        if out.is_empty()
            && let Some(validator) = declared
        {
            out = errors(validator, " (as the caller declared them)");
        }
        out
    }
}
