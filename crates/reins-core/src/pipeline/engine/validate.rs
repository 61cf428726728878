//! Stage 5, validation of one answer: extract the JSON document (or take the
//! prose), check the schemas, then run validator stages; a `fix` restarts
//! validation on the fixed document.

use super::*;

/// What validating one answer found.
pub(super) struct Validation {
    /// The (possibly fixed) document; `None` when the answer was not JSON or
    /// there was no answer text to validate.
    pub(super) doc: Option<Value>,
    pub(super) findings: Vec<Finding>,
    pub(super) fixed_by: Vec<String>,
}

/// The `{tool, arguments}` entries at JSON Pointer `field` of the output.
/// A missing field means no actions; a malformed one is a violation.
pub(super) fn actions_in_output(doc: &Value, field: &str) -> Result<Vec<ToolCall>, Violation> {
    let Some(list) = doc.pointer(field) else {
        return Ok(Vec::new());
    };
    let Some(items) = list.as_array() else {
        return Err(violation(
            field.to_owned(),
            "actions",
            "must be a list of {\"tool\": name, \"arguments\": {...}}".to_owned(),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item.get("tool").and_then(Value::as_str) {
            Some(tool) => Ok(ToolCall {
                id: None,
                name: tool.to_owned(),
                arguments: item
                    .get("arguments")
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Default::default())),
            }),
            None => Err(violation(
                format!("{field}/{i}"),
                "actions",
                "each action needs a \"tool\" name and an \"arguments\" object".to_owned(),
            )),
        })
        .collect()
}

impl Run<'_> {
    /// Extract → schema → validator stages, re-validating after each fix.
    pub(super) async fn validate(&mut self, raw: &str) -> Result<Validation, RunError> {
        let start = Instant::now();
        let extracted = match self.mode {
            // Prose is not parsed: validators get it as a JSON string.
            OutputMode::Text if raw.trim().is_empty() => Err(violation(
                String::new(),
                "empty",
                "The answer is empty. Answer the request in words.".to_owned(),
            )),
            OutputMode::Text => Ok(Value::String(raw.to_owned())),
            OutputMode::Json => extract_json(raw),
        };
        let mut doc = match extracted {
            Ok(doc) => {
                let what = if self.mode == OutputMode::Text {
                    "text (not parsed)"
                } else {
                    "ok"
                };
                self.trace("extract", "", what.to_owned(), start, Instant::now());
                doc
            }
            Err(v) => {
                let what = if self.mode == OutputMode::Text {
                    "empty"
                } else {
                    "not JSON"
                };
                self.trace("extract", "", what.to_owned(), start, Instant::now());
                let source = if self.mode == OutputMode::Text {
                    "output"
                } else {
                    "json"
                };
                return Ok(Validation {
                    doc: None,
                    findings: vec![finding(source, v)],
                    fixed_by: Vec::new(),
                });
            }
        };
        let p = self.p;
        let mut fixed_by = Vec::new();
        // Notes (non-blocking findings) of rounds a fix superseded, e.g. what it converted.
        let mut carried: Vec<Finding> = Vec::new();
        let max_fixes = p.config.repair.max_fix_rounds as usize;
        'round: loop {
            let mut findings = Vec::new();
            if let Some(validator) = &p.schema_validator {
                let start = Instant::now();
                findings.extend(validator.iter_errors(&doc).map(|e| {
                    finding(
                        "schema",
                        violation(
                            e.instance_path().to_string(),
                            e.kind().keyword(),
                            e.to_string(),
                        ),
                    )
                }));
                self.trace(
                    "schema",
                    "",
                    count_summary(&findings),
                    start,
                    Instant::now(),
                );
            }
            if let Some(validator) = self.request_schema.clone() {
                let start = Instant::now();
                let own: Vec<Finding> = validator
                    .iter_errors(&doc)
                    .map(|e| {
                        finding(
                            "schema",
                            violation(
                                e.instance_path().to_string(),
                                e.kind().keyword(),
                                e.to_string(),
                            ),
                        )
                    })
                    .collect();
                self.trace(
                    "schema",
                    "request",
                    count_summary(&own),
                    start,
                    Instant::now(),
                );
                findings.extend(own);
            }
            if p.stages.is_empty() {
                carried.extend(findings);
                return Ok(Validation {
                    doc: Some(doc),
                    findings: carried,
                    fixed_by,
                });
            }
            let text: Arc<str> = Arc::from(doc.to_string());
            for stage in &p.stages {
                // Start every validator of the stage, then collect in config order.
                // All but the last go to the blocking pool; the last runs here.
                let mut running = Vec::with_capacity(stage.len());
                let plugins = stage
                    .iter()
                    .map(|v| self.plugin(Layer::Validator, &v.plugin))
                    .collect::<Result<Vec<_>, _>>()?;
                for (v, plugin) in stage
                    .iter()
                    .zip(&plugins)
                    .take(stage.len().saturating_sub(1))
                {
                    let ctx = self.ctx.clone();
                    let text = text.clone();
                    running.push((
                        v,
                        Some(spawn_call(plugin, move |p| p.validate(&ctx, &text))),
                    ));
                }
                let mut last = None;
                if let (Some(v), Some(plugin)) = (stage.last(), plugins.last()) {
                    let ctx = self.ctx.clone();
                    let text = text.clone();
                    last = Some(blocking(plugin, move |p| p.validate(&ctx, &text)).await);
                    running.push((v, None));
                }
                let mut fix: Option<(String, Value)> = None;
                for ((v, pending), plugin) in running.into_iter().zip(&plugins) {
                    let timed = match pending {
                        Some(pending) => pending.wait().await,
                        None => match last.take() {
                            Some(timed) => timed,
                            None => continue,
                        },
                    };
                    let Some(verdict) =
                        self.settle(Layer::Validator, plugin, timed, |verdict| {
                            let mut s = count_summary(
                                &verdict
                                    .violations
                                    .iter()
                                    .map(|x| finding("", x.clone()))
                                    .collect::<Vec<_>>(),
                            );
                            if verdict.fixed.is_some() {
                                s.push_str(", fixed");
                            }
                            s
                        })?
                    else {
                        continue;
                    };
                    findings.extend(
                        verdict
                            .violations
                            .into_iter()
                            .map(|x| finding(&v.plugin, x)),
                    );
                    if v.on_fail == OnFail::Fix
                        && fix.is_none()
                        && let Some(fixed) = verdict.fixed
                        && fixed != doc
                    {
                        fix = Some((v.plugin.clone(), fixed));
                    }
                }
                if let Some((plugin, fixed)) = fix
                    && fixed_by.len() < max_fixes
                {
                    let now = Instant::now();
                    self.trace(
                        "fix",
                        &plugin,
                        "applied; re-validating".to_owned(),
                        now,
                        now,
                    );
                    doc = fixed;
                    fixed_by.push(plugin);
                    carried.extend(findings.into_iter().filter(|f| !is_blocking(f)));
                    continue 'round;
                }
            }
            carried.extend(findings);
            return Ok(Validation {
                doc: Some(doc),
                findings: carried,
                fixed_by,
            });
        }
    }

    /// The `on_fail` of what reported a violation.
    pub(super) fn on_fail(&self, source: &str) -> OnFail {
        match source {
            "json" | "schema" => self.p.config.schema_on_fail,
            "constraints" => self.p.config.on_invalid_action,
            gate if self.p.config.gates.iter().any(|g| g.plugin == gate) => {
                self.p.config.on_invalid_action
            }
            _ => self
                .p
                .config
                .validators
                .iter()
                .find(|v| v.0.plugin == source)
                // A fix that produced no document falls back to a repair.
                .map_or(OnFail::Repair, |v| match v.0.on_fail {
                    OnFail::Fix => OnFail::Repair,
                    other => other,
                }),
        }
    }
}
