//! The `judge` import of one run: a validator asks the pipeline's judge
//! model a question (a model-graded check). The call goes through the judge
//! provider's breaker and retries and on to the pipeline's fallbacks, ends
//! within the asking plugin's deadline and the run's, and is logged so the
//! run counts its tokens and traces the question and the answer.

use crate::provider::{Breaker, ChatRequest, Sampling, Turn, Usage};
use reins_runtime::{Judge, Message};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One question to the judge and what came of it.
pub(crate) struct JudgeCall {
    pub provider: String,
    pub question: String,
    pub answer: Result<String, String>,
    pub usage: Option<Usage>,
    pub start: Instant,
    pub end: Instant,
}

/// The judge of one run.
pub(crate) struct RunJudge {
    chain: Vec<Arc<Breaker>>,
    run_id: String,
    pipeline: String,
    max_tokens: u64,
    deadline: Option<Instant>,
    /// The run's place in the judge providers' queues.
    turn: Turn,
    runtime: tokio::runtime::Handle,
    calls: Mutex<Vec<JudgeCall>>,
}

impl RunJudge {
    pub fn new(
        chain: Vec<Arc<Breaker>>,
        run_id: &str,
        pipeline: &str,
        max_tokens: u64,
        deadline: Option<Instant>,
        turn: Turn,
        runtime: tokio::runtime::Handle,
    ) -> RunJudge {
        RunJudge {
            chain,
            run_id: run_id.to_owned(),
            pipeline: pipeline.to_owned(),
            max_tokens,
            deadline,
            turn,
            runtime,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// The questions asked since the last drain.
    pub fn drain(&self) -> Vec<JudgeCall> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Judge for RunJudge {
    fn ask(&self, system: &str, question: &str, within: Duration) -> Result<String, String> {
        let start = Instant::now();
        let until = match self.deadline {
            Some(d) => d.min(start + within),
            None => start + within,
        };
        let request = ChatRequest {
            run_id: format!("{}.judge", self.run_id),
            pipeline: self.pipeline.clone(),
            attempt: 1,
            messages: vec![
                Message::new("system", system),
                Message::new("user", question),
            ],
            schema: None,
            json: false,
            strict: false,
            tools: Vec::new(),
            sampling: Sampling {
                temperature: Some(0.0),
                max_tokens: Some(self.max_tokens),
                ..Sampling::default()
            },
            deadline: Some(until),
            traceparent: None,
            turn: self.turn.clone(),
        };
        let chain = self.chain.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        // The plugin call blocks this thread; the model call runs on the
        // runtime and the answer comes back over a channel.
        self.runtime.spawn(async move {
            let mut errors = Vec::new();
            for breaker in chain {
                let name = breaker.provider().name().to_owned();
                match breaker.call(&request).await.result {
                    Ok(answer) => {
                        let _ = tx.send((name, Ok(answer)));
                        return;
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            let _ = tx.send((String::new(), Err(errors.join("; "))));
        });
        let wait = until.saturating_duration_since(Instant::now());
        let (provider, outcome) = match rx.recv_timeout(wait) {
            Ok(got) => got,
            Err(_) => (
                String::new(),
                Err(format!(
                    "the judge did not answer within {} ms",
                    wait.as_millis()
                )),
            ),
        };
        let (answer, usage) = match outcome {
            Ok(r) => (Ok(r.content), r.usage),
            Err(e) => (Err(format!("the judge is unavailable: {e}")), None),
        };
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(JudgeCall {
                provider,
                question: question.to_owned(),
                answer: answer.clone(),
                usage,
                start,
                end: Instant::now(),
            });
        answer
    }
}
