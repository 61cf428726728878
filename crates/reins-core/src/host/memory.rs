//! Session memory: a run with a `session_id` on a pipeline with
//! `[pipelines.NAME.memory]` is given one `system` message with what the
//! session's earlier runs said, never more than `budget_tokens` (counted
//! with the same tokenizer as budgets, framing included).
//!
//! `truncate` keeps the newest exchanges verbatim, as many as fit (the
//! newest one cut to fit if it alone is too long); `summarize` asks a model
//! to summarize the session and cuts its answer to the budget. A summary
//! that fails falls back to truncation: memory never fails a run.

use super::Host;
use crate::config::{MemoryConfig, MemoryMode};
use crate::pipeline::{Pipeline, Request};
use crate::tokens;
use reins_runtime::Message;
use reins_state::RunRecord;
use serde_json::Value;

/// Why session memory could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MemoryError {
    #[error("state store: {0}")]
    Store(#[from] reins_state::StateError),
    #[error("summarizing the session: {0}")]
    Summarize(#[from] crate::provider::ProviderError),
}

const HEADER: &str = "Earlier in this conversation (oldest first):";
use crate::pipeline::history::SUMMARY_HEADER;

impl Host {
    /// Puts the session's memory before `request`'s messages (a run without
    /// a session, or a pipeline without memory, is left alone).
    pub(super) async fn remember(&self, p: &Pipeline, request: &mut Request) {
        let (Some(config), Some(session)) = (&p.config.memory, &request.session_id) else {
            return;
        };
        let run_id = request.run_id.clone().unwrap_or_default();
        // Sessions are the caller's own (as recorded by `run_keyed`).
        let session = &crate::identity::scoped(&request.caller, session);
        let turn = crate::provider::Turn {
            tenant: crate::identity::queue_key(&request.caller),
            on_saturated: p.config.on_saturated,
        };
        match self.session_memory(p, config, session, &run_id, turn).await {
            Ok(Some(message)) => request.messages.insert(0, message),
            Ok(None) => {}
            Err(e) => tracing::warn!(run_id, session, "session memory left out: {e}"),
        }
    }

    /// The memory message for a run of `session` (`None`: nothing earlier).
    async fn session_memory(
        &self,
        p: &Pipeline,
        config: &MemoryConfig,
        session: &str,
        run_id: &str,
        turn: crate::provider::Turn,
    ) -> Result<Option<Message>, MemoryError> {
        let runs = self
            .state
            .session_runs(session, &p.name, config.max_runs.max(1))
            .await?;
        let exchanges: Vec<String> = runs
            .iter()
            .filter(|r| r.run_id != run_id)
            .filter_map(exchange)
            .collect();
        if exchanges.is_empty() {
            return Ok(None);
        }
        let budget = config.budget_tokens;
        if config.mode == MemoryMode::Summarize
            && let Some(provider) = &p.memory_provider
        {
            // The model sees more than the budget; its answer is cut to it.
            let transcript = fit(HEADER, &exchanges, budget.saturating_mul(8));
            let call = crate::pipeline::history::SummaryCall {
                run_id,
                pipeline: &p.name,
                deadline: Some(
                    std::time::Instant::now()
                        + std::time::Duration::from_millis(p.config.deadline_ms),
                ),
                turn: &turn,
            };
            match crate::pipeline::history::summarize_text(
                provider,
                &transcript.content,
                budget,
                call,
            )
            .await
            {
                Ok((summary, _)) => {
                    let text = format!("{SUMMARY_HEADER}\n{}", summary.trim());
                    let message = cap(Message::new("system", text), budget);
                    return Ok((!message.content.is_empty()
                        && tokens::count_message(&message) <= budget)
                        .then_some(message));
                }
                Err(e) => tracing::warn!(run_id, "{}; truncating instead", MemoryError::from(e)),
            }
        }
        let message = fit(HEADER, &exchanges, budget);
        Ok(
            (message.content.len() > HEADER.len() && tokens::count_message(&message) <= budget)
                .then_some(message),
        )
    }
}

/// One earlier run as `user: … / assistant: …` (`None` if it said nothing).
fn exchange(run: &RunRecord) -> Option<String> {
    let request = super::StoredRequest::of(run).request;
    let asked = request
        .as_ref()
        .and_then(|r| r.messages.iter().rev().find(|m| m.role == "user"))
        .map(|m| m.content.trim())
        .filter(|s| !s.is_empty());
    let result: Option<crate::pipeline::RunResult> =
        serde_json::from_value(run.result.clone()).ok();
    let answered = result
        .and_then(|r| match r.output {
            Some(Value::String(s)) => Some(s),
            Some(v) if !v.is_null() => Some(v.to_string()),
            _ => r.attempts.last().map(|a| a.raw.clone()),
        })
        .filter(|s| !s.trim().is_empty());
    match (asked, answered) {
        (None, None) => None,
        (u, a) => Some(format!(
            "user: {}\nassistant: {}",
            u.unwrap_or("(not kept)"),
            a.as_deref().unwrap_or("(no answer)")
        )),
    }
}

/// A system message of `header` and the newest `exchanges` (newest first
/// in, oldest first out) that fit `budget` tokens.
fn fit(header: &str, exchanges: &[String], budget: u64) -> Message {
    let mut used = tokens::count_message(&Message::new("system", header));
    let mut kept: Vec<String> = Vec::new();
    for e in exchanges {
        let cost = tokens::count(e) + 1;
        if used + cost <= budget {
            used += cost;
            kept.push(e.clone());
        } else {
            if kept.is_empty() && budget > used + 1 {
                kept.push(tokens::truncate(e, budget - used - 1));
            }
            break;
        }
    }
    kept.reverse();
    let mut content = header.to_owned();
    for e in kept {
        content.push('\n');
        content.push_str(&e);
    }
    cap(Message::new("system", content), budget)
}

/// Cuts a message to `budget` tokens, framing included (token counts of
/// joined texts are not quite additive, so this is the final word).
fn cap(mut message: Message, budget: u64) -> Message {
    let frame = tokens::count_message(&Message::new(message.role.clone(), String::new()));
    let mut room = budget.saturating_sub(frame);
    while tokens::count_message(&message) > budget && room > 0 {
        message.content = tokens::truncate(&message.content, room);
        room -= 1;
    }
    if tokens::count_message(&message) > budget {
        message.content.clear();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_the_newest_exchanges_within_the_budget() {
        let exchanges: Vec<String> = (0..50)
            .rev()
            .map(|i| format!("user: question number {i} about invoices\nassistant: answer {i}"))
            .collect();
        for budget in [20, 60, 200, 5_000] {
            let m = fit(HEADER, &exchanges, budget);
            assert!(
                tokens::count_message(&m) <= budget,
                "{budget}: {}",
                m.content
            );
        }
        let m = fit(HEADER, &exchanges, 200);
        assert!(
            m.content.contains("question number 49"),
            "the newest is kept"
        );
        assert!(
            !m.content.contains("question number 0 "),
            "the oldest is dropped"
        );
        let newest = m.content.find("number 49").unwrap_or(0);
        let older = m.content.find("number 48").unwrap_or(usize::MAX);
        assert!(older < newest, "oldest first: {}", m.content);
    }

    #[test]
    fn one_long_exchange_is_cut_to_fit() {
        let long = vec![format!("user: {}", "word ".repeat(2_000))];
        let m = fit(HEADER, &long, 100);
        assert!(tokens::count_message(&m) <= 100);
        assert!(m.content.contains("user: word"));
    }
}
