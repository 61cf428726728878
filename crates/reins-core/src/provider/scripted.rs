//! The `scripted` provider: replays responses from a file.
//!
//! The file is a JSON array, a JSON object `{"responses": [...]}`, or JSONL
//! (one entry per line; blank lines and lines starting with `//` are
//! skipped). An entry is a string (the response text) or an object:
//!
//! ```json
//! {"attempt": 2, "match": "damage_cap", "content": {"risks": []},
//!  "tool_calls": [{"name": "issue_refund", "arguments": {"amount": 20}}],
//!  "usage": {"prompt_tokens": 900, "completion_tokens": 40, "total_tokens": 940},
//!  "delay_ms": 0, "error": null}
//! ```
//!
//! `content` is a string, or any JSON value (sent as compact JSON text).
//! `error` makes the call fail with that message. For a request with attempt
//! `n` and last user message `u`, the response is:
//! 1. the first entry with a `match` that is a substring of `u` (and whose
//!    `attempt`, if any, is `n`);
//! 2. else the first entry with `attempt = n` and no `match`;
//! 3. else the `n`-th entry that has neither.
//!
//! Selection depends only on the request, so concurrent runs replay
//! independently. Every request is recorded (the most recent
//! [`ScriptedProvider::RECORD_LIMIT`]), so tests can assert what the model was
//! sent, or that it was never called.

use super::{
    ChatRequest, ChatResponse, CompletionFuture, Provider, ProviderError, ToolCall, Usage,
};
use crate::config::ConfigError;
use serde::Deserialize;
use serde_json::Value;
use std::any::Any;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One scripted response.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptEntry {
    #[serde(default)]
    pub attempt: Option<u32>,
    #[serde(default, rename = "match")]
    pub matches: Option<String>,
    #[serde(default)]
    pub content: Option<Value>,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub delay_ms: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
}

impl ScriptEntry {
    /// An entry answering with `content`.
    pub fn text(content: impl Into<String>) -> ScriptEntry {
        ScriptEntry {
            content: Some(Value::String(content.into())),
            ..ScriptEntry::default()
        }
    }

    fn content_text(&self) -> String {
        match &self.content {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        }
    }
}

fn entry(value: Value, at: &str) -> Result<ScriptEntry, String> {
    match value {
        Value::String(s) => Ok(ScriptEntry::text(s)),
        other => serde_json::from_value(other).map_err(|e| format!("{at}: {e}")),
    }
}

/// Replays scripted responses and records what it was asked.
pub struct ScriptedProvider {
    name: String,
    model: String,
    entries: Vec<ScriptEntry>,
    /// Indices of the entries with neither `attempt` nor `match`.
    sequential: Vec<usize>,
    calls: Mutex<VecDeque<ChatRequest>>,
    call_count: AtomicU64,
}

impl ScriptedProvider {
    /// How many requests are kept for [`ScriptedProvider::calls`].
    pub const RECORD_LIMIT: usize = 256;

    pub fn new(
        name: impl Into<String>,
        model: impl Into<String>,
        entries: Vec<ScriptEntry>,
    ) -> ScriptedProvider {
        let sequential = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.attempt.is_none() && e.matches.is_none())
            .map(|(i, _)| i)
            .collect();
        ScriptedProvider {
            name: name.into(),
            model: model.into(),
            entries,
            sequential,
            calls: Mutex::new(VecDeque::new()),
            call_count: AtomicU64::new(0),
        }
    }

    /// Entries from JSON values (strings or objects).
    pub fn from_values(values: Vec<Value>) -> Result<Vec<ScriptEntry>, String> {
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| entry(v, &format!("response {}", i + 1)))
            .collect()
    }

    /// Parses script text (JSON array, `{"responses": [...]}` or JSONL).
    pub fn parse(text: &str) -> Result<Vec<ScriptEntry>, String> {
        // The whole file as one JSON document: an array, or an object with
        // `responses` (anything else is JSONL).
        if let Ok(whole) = serde_json::from_str::<Value>(text) {
            let list = match whole {
                Value::Array(list) => Some(list),
                Value::Object(mut o) if o.contains_key("responses") => {
                    match o.remove("responses") {
                        Some(Value::Array(list)) if o.is_empty() => Some(list),
                        _ => {
                            return Err(
                                "expected {\"responses\": [...]} and nothing else".to_owned()
                            );
                        }
                    }
                }
                _ => None,
            };
            if let Some(list) = list {
                return Self::from_values(list);
            }
        }
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with("//") {
                continue;
            }
            let at = format!("line {}", i + 1);
            let value: Value = serde_json::from_str(line).map_err(|e| {
                format!("{at}: {e} (expected a JSON object or string per line, or a JSON array for the whole file)")
            })?;
            entries.push(entry(value, &at)?);
        }
        Ok(entries)
    }

    /// Loads a script file.
    pub fn from_file(
        name: &str,
        model: &str,
        path: &Path,
    ) -> Result<ScriptedProvider, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let entries = Self::parse(&text).map_err(|message| ConfigError::Script {
            path: path.to_owned(),
            message,
        })?;
        Ok(ScriptedProvider::new(name, model, entries))
    }

    /// The most recent requests, oldest first.
    pub fn calls(&self) -> Vec<ChatRequest> {
        self.lock().iter().cloned().collect()
    }

    /// How many requests it was sent in all.
    pub fn call_count(&self) -> u64 {
        self.call_count.load(Ordering::Relaxed)
    }

    /// Forgets recorded requests.
    pub fn clear(&self) {
        self.lock().clear();
        self.call_count.store(0, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<ChatRequest>> {
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn select(&self, request: &ChatRequest) -> Option<&ScriptEntry> {
        let last_user = request.last_user_message().unwrap_or("");
        let attempt_ok = |e: &ScriptEntry| e.attempt.is_none_or(|a| a == request.attempt);
        self.entries
            .iter()
            .find(|e| e.matches.as_deref().is_some_and(|m| last_user.contains(m)) && attempt_ok(e))
            .or_else(|| {
                self.entries
                    .iter()
                    .find(|e| e.matches.is_none() && e.attempt == Some(request.attempt))
            })
            .or_else(|| {
                let n = request.attempt.checked_sub(1)? as usize;
                self.sequential.get(n).map(|&i| &self.entries[i])
            })
    }
}

impl Provider for ScriptedProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn complete<'a>(&'a self, request: &'a ChatRequest) -> CompletionFuture<'a> {
        Box::pin(async move {
            self.call_count.fetch_add(1, Ordering::Relaxed);
            {
                let mut calls = self.lock();
                if calls.len() == Self::RECORD_LIMIT {
                    calls.pop_front();
                }
                calls.push_back(request.clone());
            }
            let entry = self
                .select(request)
                .ok_or_else(|| ProviderError::ScriptExhausted {
                    provider: self.name.clone(),
                    attempt: request.attempt,
                })?;
            if let Some(ms) = entry.delay_ms.filter(|&ms| ms > 0) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if let Some(message) = &entry.error {
                return Err(ProviderError::Scripted {
                    provider: self.name.clone(),
                    message: message.clone(),
                });
            }
            Ok(ChatResponse {
                content: entry.content_text(),
                tool_calls: entry.tool_calls.clone(),
                usage: entry.usage,
                model: self.model.clone(),
                finish_reason: None,
            })
        })
    }

    /// A script answers whatever it is asked; it records `strict` so tests
    /// can see the strategy reach the provider.
    fn can_tighten(&self) -> bool {
        true
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reins_runtime::Message;

    fn request(attempt: u32, user: &str) -> ChatRequest {
        ChatRequest {
            run_id: "r".into(),
            pipeline: "p".into(),
            attempt,
            messages: vec![Message::new("system", "s"), Message::new("user", user)],
            schema: None,
            json: false,
            strict: false,
            tools: vec![],
            sampling: Default::default(),
            deadline: None,
            traceparent: None,
            turn: Default::default(),
        }
    }

    #[tokio::test]
    async fn jsonl_replays_by_attempt_then_match() {
        let entries = ScriptedProvider::parse(
            r#"
// comments and blank lines are skipped
"first"
{"content": {"a": 1}, "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
{"match": "refund", "content": "matched"}
{"attempt": 5, "content": "fifth"}
"#,
        )
        .unwrap();
        let p = ScriptedProvider::new("s", "m", entries);
        assert_eq!(p.complete(&request(1, "x")).await.unwrap().content, "first");
        let second = p.complete(&request(2, "x")).await.unwrap();
        assert_eq!(second.content, r#"{"a":1}"#);
        assert_eq!(second.usage.unwrap().total_tokens, 5);
        assert_eq!(
            p.complete(&request(1, "a refund please"))
                .await
                .unwrap()
                .content,
            "matched"
        );
        assert_eq!(p.complete(&request(5, "x")).await.unwrap().content, "fifth");
        assert_eq!(
            p.complete(&request(3, "x")).await.unwrap_err().kind(),
            "script_exhausted"
        );
        assert_eq!(p.call_count(), 5);
        assert_eq!(p.calls()[2].last_user_message(), Some("a refund please"));
    }

    #[test]
    fn json_array_and_wrapped_forms() {
        assert_eq!(
            ScriptedProvider::parse(r#"["a", {"content": "b"}]"#)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            ScriptedProvider::parse(r#"{"responses": ["a"]}"#)
                .unwrap()
                .len(),
            1
        );
        let e = ScriptedProvider::parse(r#"["a", {"atempt": 1}]"#).unwrap_err();
        assert!(e.contains("response 2") && e.contains("atempt"), "{e}");
    }

    #[test]
    fn bad_lines_name_the_line() {
        let e = ScriptedProvider::parse("\"a\"\n{\"contnet\": 1}\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("contnet"), "{e}");
        let e = ScriptedProvider::parse("hello\n").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }

    #[tokio::test]
    async fn error_entries_fail_the_call() {
        let p = ScriptedProvider::new(
            "s",
            "m",
            vec![ScriptEntry {
                error: Some("down".into()),
                ..ScriptEntry::default()
            }],
        );
        let e = p.complete(&request(1, "x")).await.unwrap_err();
        assert_eq!(e.to_string(), "provider `s`: down");
    }
}
