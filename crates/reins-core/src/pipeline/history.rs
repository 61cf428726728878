//! A conversation under a token budget (`history`): the leading system
//! messages and the latest turns are kept; the middle is dropped or
//! replaced by a summary. Summaries are cached by the conversation's
//! prefix, so a chat that grows by one turn per request asks for a new
//! summary only when its middle changes.

use crate::config::{HistoryConfig, HistoryOverflow};
use crate::provider::{Breaker, ChatRequest, ProviderError, Turn, Usage};
use lru::LruCache;
use reins_runtime::{Message, Tokenizer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Tokens a message costs besides its text (role and framing), as OpenAI
/// counts them.
const FRAME: usize = crate::tokens::MESSAGE_OVERHEAD as usize;

pub(crate) const SUMMARY_HEADER: &str = "Summary of earlier in this conversation:";

/// A pipeline's history budget and its summaries.
pub struct History {
    pub(crate) config: HistoryConfig,
    provider: Arc<Breaker>,
    summaries: Mutex<LruCache<[u8; 32], String>>,
}

/// How a conversation was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// `messages[..head]` are the leading system messages, kept.
    pub head: usize,
    /// `messages[tail..]` are the latest turns, kept; `head..tail` is the middle.
    pub tail: usize,
}

/// What the history stage did, for the run's trace and result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryReport {
    pub budget_tokens: u32,
    pub tokenizer: String,
    pub tokens_before: usize,
    pub tokens_after: usize,
    pub messages_before: usize,
    pub messages_kept: usize,
    /// `drop` or `summarize`; `summarize` fell back to `drop` when the
    /// summary failed (`error` says why).
    pub overflow: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary_tokens: Option<usize>,
    /// The summary came from the cache.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn cost(t: Tokenizer, m: &Message) -> usize {
    FRAME + t.count(&m.role) + t.count(&m.content)
}

/// Where to cut `messages` to fit `budget` (with `reserve` tokens kept
/// free for a summary), or `None` when they fit as they are. The last
/// message is always kept, and a kept part never starts with a `tool`
/// result whose call was cut away (an upstream refuses that).
pub fn split(messages: &[Message], budget: usize, reserve: usize, t: Tokenizer) -> Option<Split> {
    let costs: Vec<usize> = messages.iter().map(|m| cost(t, m)).collect();
    if costs.iter().sum::<usize>() <= budget {
        return None;
    }
    let head = messages.iter().take_while(|m| m.role == "system").count();
    let mut room = budget
        .saturating_sub(costs[..head].iter().sum::<usize>())
        .saturating_sub(reserve);
    let mut tail = messages.len();
    while tail > head + 1 && costs[tail - 1] <= room {
        room -= costs[tail - 1];
        tail -= 1;
    }
    if tail == messages.len() && tail > head {
        // Not even the last message fits: it is kept whole anyway (cutting
        // the question would change it), and the model's limit decides.
        tail -= 1;
    }
    while tail < messages.len() - 1 && messages[tail].role == "tool" {
        tail += 1;
    }
    (tail > head).then_some(Split { head, tail })
}

impl History {
    pub fn new(config: HistoryConfig, provider: Arc<Breaker>) -> History {
        let n = NonZeroUsize::new(config.cache_entries.max(1)).unwrap_or(NonZeroUsize::MIN);
        History {
            config,
            provider,
            summaries: Mutex::new(LruCache::new(n)),
        }
    }

    /// The conversation within the budget, and what was done to it
    /// (`None`: it fit). A summary that fails drops the middle instead,
    /// and the report says so: the history budget never fails a run.
    pub async fn fit(
        &self,
        messages: Vec<Message>,
        t: Tokenizer,
        call: SummaryCall<'_>,
    ) -> (Vec<Message>, Option<HistoryReport>, Option<Usage>) {
        let budget = self.config.budget_tokens as usize;
        let summarize = self.config.overflow == HistoryOverflow::Summarize;
        let reserve = if summarize {
            self.config.summary_tokens as usize + FRAME + t.count(SUMMARY_HEADER) + 2
        } else {
            0
        };
        let Some(cut) = split(&messages, budget, reserve, t) else {
            return (messages, None, None);
        };
        let tokens_before: usize = messages.iter().map(|m| cost(t, m)).sum();
        let mut report = HistoryReport {
            budget_tokens: self.config.budget_tokens,
            tokenizer: t.name().to_owned(),
            tokens_before,
            tokens_after: 0,
            messages_before: messages.len(),
            messages_kept: 0,
            overflow: self.config.overflow.as_str().to_owned(),
            summary_tokens: None,
            cached: false,
            error: None,
        };
        let mut usage = None;
        let summary = if summarize && cut.tail > cut.head {
            let middle = &messages[cut.head..cut.tail];
            let key = prefix_key(&messages[..cut.tail], &self.config);
            let cached = self
                .summaries
                .lock()
                .ok()
                .and_then(|mut c| c.get(&key).cloned());
            match cached {
                Some(s) => {
                    report.cached = true;
                    Some(s)
                }
                None => match summarize_text(
                    &self.provider,
                    &transcript(middle),
                    self.config.summary_tokens as u64,
                    call,
                )
                .await
                {
                    Ok((s, u)) => {
                        usage = u;
                        if let Ok(mut c) = self.summaries.lock() {
                            c.put(key, s.clone());
                        }
                        Some(s)
                    }
                    Err(e) => {
                        report.overflow = "drop".to_owned();
                        report.error =
                            Some(format!("the summary failed, the middle was dropped: {e}"));
                        None
                    }
                },
            }
        } else {
            None
        };
        let mut out = Vec::with_capacity(cut.head + 1 + messages.len() - cut.tail);
        let mut iter = messages.into_iter();
        out.extend(iter.by_ref().take(cut.head));
        let tail: Vec<Message> = iter.skip(cut.tail - cut.head).collect();
        if let Some(s) = summary {
            let text = crate::tokens::truncate(s.trim(), self.config.summary_tokens as u64);
            report.summary_tokens = Some(t.count(&text));
            out.push(Message::new("system", format!("{SUMMARY_HEADER}\n{text}")));
        }
        out.extend(tail);
        report.messages_kept = out.len();
        report.tokens_after = out.iter().map(|m| cost(t, m)).sum();
        (out, Some(report), usage)
    }
}

/// The cache key of a summary: the conversation up to the kept turns, and
/// what shapes the summary.
fn prefix_key(prefix: &[Message], config: &HistoryConfig) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(config.model.as_deref().unwrap_or("").as_bytes());
    h.update(config.summary_tokens.to_le_bytes());
    for m in prefix {
        h.update(m.role.as_bytes());
        h.update([0]);
        h.update(m.content.as_bytes());
        h.update([0]);
        for c in &m.tool_calls {
            h.update(c.name.as_bytes());
            h.update(c.arguments.to_string().as_bytes());
        }
        h.update([1]);
    }
    h.finalize().into()
}

/// `role: content` lines, oldest first.
pub(crate) fn transcript(messages: &[Message]) -> String {
    let mut out = String::new();
    for m in messages {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&m.role);
        out.push_str(": ");
        out.push_str(m.content.trim());
        for c in &m.tool_calls {
            out.push_str(&format!(" [called {}({})]", c.name, c.arguments));
        }
    }
    out
}

/// Who a summary call is made for (its place in the provider's queue and
/// the run's deadline).
#[derive(Clone, Copy)]
pub struct SummaryCall<'a> {
    pub run_id: &'a str,
    pub pipeline: &'a str,
    pub deadline: Option<Instant>,
    pub turn: &'a Turn,
}

/// Asks `provider` to summarize a transcript in at most `budget` tokens
/// (session memory and the history budget both do).
pub(crate) async fn summarize_text(
    provider: &Breaker,
    transcript: &str,
    budget: u64,
    call: SummaryCall<'_>,
) -> Result<(String, Option<Usage>), ProviderError> {
    let request = ChatRequest {
        run_id: format!("{}.summary", call.run_id),
        pipeline: call.pipeline.to_owned(),
        attempt: 1,
        messages: vec![
            Message::new(
                "system",
                format!(
                    "Summarize this conversation for the assistant that continues it: what the user \
                     asked and what was answered, facts and decisions first. At most {budget} tokens. \
                     Answer with the summary only."
                ),
            ),
            Message::new("user", transcript.to_owned()),
        ],
        schema: None,
        json: false,
        strict: false,
        sampling: crate::provider::Sampling {
            max_tokens: Some(budget.max(16)),
            ..Default::default()
        },
        tools: Vec::new(),
        deadline: call.deadline,
        traceparent: None,
        turn: call.turn.clone(),
    };
    let answer = provider.complete(&request).await?;
    if answer.content.trim().is_empty() {
        return Err(ProviderError::BadResponse {
            provider: provider.provider().name().to_owned(),
            message: "the summary was empty".to_owned(),
        });
    }
    Ok((answer.content, answer.usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(role: &str, words: usize) -> Message {
        Message::new(role, vec!["word"; words].join(" "))
    }

    #[test]
    fn a_conversation_that_fits_is_left_alone() {
        let msgs = vec![m("system", 5), m("user", 5), m("assistant", 5)];
        assert_eq!(split(&msgs, 1000, 0, Tokenizer::O200k), None);
    }

    #[test]
    fn the_system_prompt_and_the_latest_turns_are_kept() {
        let mut msgs = vec![m("system", 10)];
        for _ in 0..10 {
            msgs.push(m("user", 50));
            msgs.push(m("assistant", 50));
        }
        msgs.push(m("user", 20));
        let s = split(&msgs, 200, 0, Tokenizer::O200k).expect("cut");
        assert_eq!(s.head, 1);
        assert!(s.tail > 1 && s.tail < msgs.len(), "{s:?}");
        let kept: usize = msgs[..s.head]
            .iter()
            .chain(&msgs[s.tail..])
            .map(|x| cost(Tokenizer::O200k, x))
            .sum();
        assert!(kept <= 200, "{kept}");
        // One more message would not fit.
        let one_more = kept + cost(Tokenizer::O200k, &msgs[s.tail - 1]);
        assert!(one_more > 200, "{one_more}");
    }

    #[test]
    fn a_tool_result_is_not_kept_without_its_call() {
        let mut msgs = vec![m("user", 100), m("assistant", 100)];
        let mut result = m("tool", 5);
        result.tool_call_id = Some("c1".into());
        msgs.push(result);
        msgs.push(m("user", 5));
        let s = split(&msgs, 40, 0, Tokenizer::O200k).expect("cut");
        assert_ne!(msgs[s.tail].role, "tool");
        assert_eq!(s.tail, 3);
    }

    #[test]
    fn the_last_message_is_kept_even_when_alone_it_is_over() {
        let msgs = vec![
            m("system", 5),
            m("user", 500),
            m("assistant", 500),
            m("user", 500),
        ];
        let s = split(&msgs, 100, 0, Tokenizer::O200k).expect("cut");
        assert_eq!((s.head, s.tail), (1, 3));
    }
}
