//! Stage 2, context: the conversation cut to its history budget, the
//! retrievers asked with the latest user message, and the context builder
//! picking, ordering and trimming the chunks under the token budget; they
//! join the system prompt the model sees. The run's result says what was
//! retrieved, kept and dropped, and why ([`ContextReport`]).

use super::*;
use crate::pipeline::{ContextChunk, ContextReport};
use crate::retrieval;

impl Run<'_> {
    /// The conversation within the pipeline's `history` budget.
    pub(super) async fn fit_history(&mut self, messages: Vec<Message>) -> Vec<Message> {
        let Some(history) = &self.p.history else {
            return messages;
        };
        let start = Instant::now();
        let turn = self.turn();
        let call = crate::pipeline::history::SummaryCall {
            run_id: &self.ctx.run_id,
            pipeline: &self.p.name,
            deadline: self.deg.deadline,
            turn: &turn,
        };
        let (messages, report, usage) = history.fit(messages, self.p.tokenizer, call).await;
        if let Some(u) = usage {
            self.result.tokens.add(crate::pipeline::Tokens {
                prompt: u.prompt_tokens,
                completion: u.completion_tokens,
                total: u.total_tokens,
                estimated: false,
            });
        }
        if let Some(r) = report {
            let summary = format!(
                "{} of {} messages kept, {} → {} tokens of {} ({}{})",
                r.messages_kept,
                r.messages_before,
                r.tokens_before,
                r.tokens_after,
                r.budget_tokens,
                r.overflow,
                if r.cached { ", cached summary" } else { "" },
            );
            self.trace("history", "", summary, start, Instant::now());
            self.result.history = Some(r);
        }
        messages
    }

    pub(super) async fn assemble(
        &mut self,
        messages: &[Message],
        chunks: Vec<Chunk>,
    ) -> Result<Vec<Chunk>, RunError> {
        let p = self.p;
        let Some(context) = &p.config.context else {
            return Ok(chunks);
        };
        let query = messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let (offered, sources) = self.retrieve(context, &query, chunks).await?;
        if offered.is_empty() {
            return Ok(offered);
        }
        let plugin = self.plugin(Layer::Context, &context.plugin)?;
        let ctx = self.ctx.clone();
        let budget = context.budget_tokens;
        let input = offered.clone();
        let q = query.clone();
        let timed = blocking(&plugin, move |p| p.assemble(&ctx, &q, &input, budget)).await;
        let total = offered.len();
        let Some(assembled) = self.settle(Layer::Context, &plugin, timed, |a| {
            format!("{} of {total} chunks kept", a.chunks.len())
        })?
        else {
            // Failed open: the chunks as offered.
            self.note_context(&offered, &offered, &[], query, sources, budget);
            return Ok(offered);
        };
        self.note_context(
            &offered,
            &assembled.chunks,
            &assembled.dropped,
            query,
            sources,
            budget,
        );
        Ok(assembled.chunks)
    }

    /// The caller's chunks and what the retrievers found for `query` (a
    /// retrieved chunk the caller also sent is the caller's).
    async fn retrieve(
        &mut self,
        context: &crate::config::ContextConfig,
        query: &str,
        mut chunks: Vec<Chunk>,
    ) -> Result<(Vec<Chunk>, Vec<retrieval::SourceReport>), RunError> {
        let p = self.p;
        if p.retrievers.is_empty() || query.trim().is_empty() {
            return Ok((chunks, Vec::new()));
        }
        let start = Instant::now();
        match retrieval::retrieve(&p.retrievers, query, context.top_k, context.rrf_k).await {
            Ok(found) => {
                // The retrievers were asked at once: each step starts with the stage.
                for s in &found.sources {
                    let end = start + std::time::Duration::from_micros(s.duration_us);
                    self.trace(
                        "retrieve",
                        &s.retriever,
                        format!("{} chunks ({})", s.hits, s.kind),
                        start,
                        end,
                    );
                }
                let sent: std::collections::HashSet<String> =
                    chunks.iter().map(|c| c.id.clone()).collect();
                chunks.extend(found.chunks.into_iter().filter(|c| !sent.contains(&c.id)));
                Ok((chunks, found.sources))
            }
            Err(e) => {
                self.trace(
                    "retrieve",
                    &e.retriever,
                    "failed".to_owned(),
                    start,
                    Instant::now(),
                );
                Err(RunError::ContextUnavailable {
                    message: e.to_string(),
                    retriever: e.retriever,
                })
            }
        }
    }

    /// Records what the context stage did ([`ContextReport`]) and what the
    /// `context-chunks` import answers later plugins (validators checking
    /// citations).
    fn note_context(
        &mut self,
        offered: &[Chunk],
        kept: &[Chunk],
        dropped: &[reins_runtime::Dropped],
        query: String,
        sources: Vec<retrieval::SourceReport>,
        budget: u32,
    ) {
        let t = self.p.tokenizer;
        let note = |c: &Chunk, reason: Option<String>| ContextChunk {
            id: c.id.clone(),
            source: c.source.clone(),
            score: c.score,
            tokens: t.count(&c.text),
            reason,
        };
        let why = |id: &str| {
            dropped
                .iter()
                .find(|d| d.id == id)
                .map(|d| d.reason.clone())
        };
        let kept_ids: std::collections::HashSet<&str> =
            kept.iter().map(|c| c.id.as_str()).collect();
        let report = ContextReport {
            query,
            tokenizer: t.name().to_owned(),
            budget_tokens: budget,
            used_tokens: kept
                .iter()
                .map(|c| t.count(&label(c)) + t.count(&c.text))
                .sum(),
            sources,
            offered: offered.iter().map(|c| note(c, None)).collect(),
            kept: kept.iter().map(|c| note(c, why(&c.id))).collect(),
            dropped: offered
                .iter()
                .filter(|c| !kept_ids.contains(c.id.as_str()))
                .map(|c| {
                    note(
                        c,
                        Some(
                            why(&c.id).unwrap_or_else(|| "left out by the context builder".into()),
                        ),
                    )
                })
                .collect(),
        };
        let chunks: Vec<serde_json::Value> = offered
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id,
                    "source": c.source,
                    "score": c.score,
                    "kept": kept_ids.contains(c.id.as_str()),
                })
            })
            .collect();
        self.ctx.context_chunks = Arc::from(serde_json::Value::Array(chunks).to_string());
        self.result.context = Some(report);
    }

    /// System prompt (with the context appended) + the normalized conversation.
    pub(super) fn conversation(&self, messages: Vec<Message>, chunks: &[Chunk]) -> Vec<Message> {
        let mut system = self.p.system_prompt.clone().unwrap_or_default();
        if !chunks.is_empty() {
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str("Context:");
            for c in chunks {
                system.push_str(&label(c));
                system.push_str(&c.text);
            }
        }
        let mut out = Vec::with_capacity(messages.len() + 1);
        if !system.is_empty() {
            out.push(Message::new("system", system));
        }
        out.extend(messages);
        out
    }
}

/// What goes before a chunk's text in the system prompt (the context
/// builder counts it too: `count-tokens("\n\n[ID] ")`).
fn label(c: &Chunk) -> String {
    format!("\n\n[{}] ", c.id)
}
