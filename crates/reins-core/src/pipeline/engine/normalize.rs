//! Stage 1, normalizers: they rewrite the caller's messages in config order;
//! an `error` finding rejects the run before any model call.

use super::*;

/// A normalizer's messages in place of the ones it was given, keeping what
/// it does not see (tool calls, ids, non-text parts): by position when it
/// kept the count, else only if nothing had such structure to lose.
pub(super) fn merge_normalized(
    plugin: &str,
    before: Vec<Message>,
    after: Vec<Message>,
) -> Result<Vec<Message>, RunError> {
    if before.len() == after.len() {
        return Ok(before
            .into_iter()
            .zip(after)
            .map(|(old, new)| Message {
                role: new.role.clone(),
                ..old.with_text(new.content)
            })
            .collect());
    }
    let structured = before.iter().any(|m| {
        !m.tool_calls.is_empty()
            || m.tool_call_id.is_some()
            || m.parts.is_some()
            || m.name.is_some()
            || m.is_error
    });
    if structured {
        return Err(RunError::Plugin {
            layer: Layer::Normalizer.as_str(),
            plugin: plugin.to_owned(),
            kind: "malformed",
            message: format!(
                "normalizer `{plugin}` returned {} messages for {}: in a conversation with tool calls or multi-part content a normalizer must keep every message (rewrite its text, or reject with a finding)",
                after.len(),
                before.len()
            ),
        });
    }
    Ok(after)
}

/// What the request says, for grounding: every user and tool message and
/// every context chunk, after normalization.
pub(super) fn request_text(messages: &[Message], chunks: &[Chunk]) -> Arc<str> {
    let mut text = String::new();
    let parts = messages
        .iter()
        .filter(|m| m.role == "user" || m.role == "tool")
        .map(|m| m.content.as_str())
        .chain(chunks.iter().map(|c| c.text.as_str()));
    for part in parts {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(part);
    }
    Arc::from(text)
}

impl Run<'_> {
    pub(super) async fn normalize(
        &mut self,
        mut messages: Vec<Message>,
    ) -> Result<Vec<Message>, RunError> {
        let p = self.p;
        for entry in &p.config.normalizers {
            let name = &entry.plugin;
            let plugin = self.plugin(Layer::Normalizer, name)?;
            let ctx = self.ctx.clone();
            let input = messages.clone();
            let timed = blocking(&plugin, move |p| p.normalize(&ctx, &input)).await;
            let Some(normalized) = self.settle(Layer::Normalizer, &plugin, timed, |n| {
                let errors = n
                    .findings
                    .iter()
                    .filter(|f| f.severity == Severity::Error)
                    .count();
                match (errors, n.findings.len()) {
                    (0, 0) => "ok".to_owned(),
                    (0, 1) => "ok (1 finding)".to_owned(),
                    (0, k) => format!("ok ({k} findings)"),
                    (e, _) => format!("reject ({e} errors)"),
                }
            })?
            else {
                continue;
            };
            let reasons: Vec<String> = normalized
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .map(|f| format!("{} [{}]", f.message, f.code))
                .collect();
            self.result
                .findings
                .extend(normalized.findings.into_iter().map(|v| finding(name, v)));
            if !reasons.is_empty() {
                return Err(RunError::Rejected {
                    plugin: name.clone(),
                    reason: reasons.join("; "),
                });
            }
            messages = merge_normalized(name, messages, normalized.messages)?;
        }
        if messages.is_empty() {
            return Err(RunError::BadRequest(
                "no messages are left after normalization".to_owned(),
            ));
        }
        Ok(messages)
    }
}
