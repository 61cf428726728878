//! A flaky OpenAI-compatible upstream on loopback whose behaviour the test
//! scripts request by request: answers, error statuses (with `Retry-After`),
//! hangs, slow trickles, garbage and truncated bodies, resets and closed
//! connections. It records when each request arrived and what it carried,
//! so tests assert on what the upstream saw, by order and count.
//!
//! Connections are kept alive as a real server would, so a reused
//! connection is part of what the client copes with.
#![allow(dead_code)]

use reins::pipeline::RunResult;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream does with one request.
#[derive(Debug, Clone)]
pub enum Step {
    /// A chat completion whose message content is this text.
    Answer(String),
    /// The same, after this long.
    Slow(Duration, String),
    /// Any status and body, with extra headers (e.g. `Retry-After`).
    Status {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Read the request, answer nothing (until the client gives up).
    Hang,
    /// The headers at once, then the body one byte every `every`.
    Trickle { content: String, every: Duration },
    /// A `content-length` larger than the body sent, then close.
    Truncated(String),
    /// Read the request, then reset the connection (RST).
    Reset,
    /// Read the request, then close the connection without a word.
    Close,
}

/// A 500 with a JSON error body.
pub fn server_error() -> Step {
    status(500, "{\"error\": {\"message\": \"upstream exploded\"}}")
}

pub fn status(code: u16, body: &str) -> Step {
    Step::Status {
        status: code,
        headers: Vec::new(),
        body: body.to_owned(),
    }
}

/// A 429 with one `name: value` header (`retry-after`, `retry-after-ms`).
pub fn rate_limited(name: &str, value: &str) -> Step {
    Step::Status {
        status: 429,
        headers: vec![(name.to_owned(), value.to_owned())],
        body: "{\"error\": {\"message\": \"slow down\"}}".to_owned(),
    }
}

/// A 200 whose body is this text as it is.
pub fn raw_200(body: &str) -> Step {
    status(200, body)
}

/// The chat-completions body carrying `content`.
pub fn completion_body(content: &str) -> String {
    json!({
        "id": "chatcmpl-test", "object": "chat.completion", "model": "flaky-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    })
    .to_string()
}

/// One request the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub body: Value,
}

type Script = Box<dyn FnMut(usize) -> Step + Send>;

/// The upstream. Dropping it stops accepting.
pub struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<Script>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Upstream {
    /// Starts on 127.0.0.1 with `script(n)` deciding request `n` (0-based).
    pub async fn start(script: impl FnMut(usize) -> Step + Send + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Mutex<Script>> = Arc::new(Mutex::new(Box::new(script)));
        let (log, plan) = (seen.clone(), script.clone());
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, plan) = (log.clone(), plan.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &log, &plan).await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            script,
            accept,
        }
    }

    /// Always the same step.
    pub async fn always(step: Step) -> Upstream {
        Upstream::start(move |_| step.clone()).await
    }

    /// These steps in order; the last one repeats.
    pub async fn steps(steps: Vec<Step>) -> Upstream {
        Upstream::start(move |n| steps[n.min(steps.len() - 1)].clone()).await
    }

    /// Replaces the script (request numbers keep counting).
    pub fn set(&self, script: impl FnMut(usize) -> Step + Send + 'static) {
        *self.script.lock().expect("script") = Box::new(script);
    }

    /// From now on, always `step`.
    pub fn set_always(&self, step: Step) {
        self.set(move |_| step.clone());
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.seen.lock().expect("seen").len()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }
}

/// Reads one HTTP/1.1 request; `None` when the client closed the connection.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Value>> {
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[header_end..header_end + length]).unwrap_or(Value::Null);
    buf.drain(..header_end + length);
    Ok(Some(body))
}

fn head(status: u16, length: usize, headers: &[(String, String)]) -> String {
    let mut h = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    h
}

async fn serve(mut stream: TcpStream, log: &Mutex<Vec<Seen>>, plan: &Mutex<Script>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let Some(body) = read_request(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        let step = {
            let mut log = log.lock().expect("seen");
            log.push(Seen {
                at: Instant::now(),
                body,
            });
            let n = log.len() - 1;
            drop(log);
            let mut script = plan.lock().expect("script");
            (*script)(n)
        };
        match step {
            Step::Answer(content) => {
                let body = completion_body(&content);
                stream
                    .write_all(format!("{}{body}", head(200, body.len(), &[])).as_bytes())
                    .await?;
            }
            Step::Slow(delay, content) => {
                tokio::time::sleep(delay).await;
                let body = completion_body(&content);
                stream
                    .write_all(format!("{}{body}", head(200, body.len(), &[])).as_bytes())
                    .await?;
            }
            Step::Status { status, headers, body } => {
                stream
                    .write_all(format!("{}{body}", head(status, body.len(), &headers)).as_bytes())
                    .await?;
            }
            Step::Hang => {
                // Bounded, so a test that forgets its client still ends.
                tokio::time::sleep(Duration::from_secs(120)).await;
                return Ok(());
            }
            Step::Trickle { content, every } => {
                let body = completion_body(&content);
                stream.write_all(head(200, body.len(), &[]).as_bytes()).await?;
                for byte in body.as_bytes() {
                    tokio::time::sleep(every).await;
                    stream.write_all(&[*byte]).await?;
                }
            }
            Step::Truncated(content) => {
                let body = completion_body(&content);
                let cut = &body[..body.len() / 2];
                stream
                    .write_all(format!("{}{cut}", head(200, body.len(), &[])).as_bytes())
                    .await?;
                stream.shutdown().await?;
                return Ok(());
            }
            Step::Reset => {
                stream.set_zero_linger()?;
                return Ok(());
            }
            Step::Close => {
                stream.shutdown().await?;
                return Ok(());
            }
        }
    }
}

/// An `openai` provider `name` on `base_url` with `extra` lines (retries,
/// timeouts, `breaker = {...}`); backoff is 1 ms unless `extra` says otherwise.
pub fn openai(name: &str, base_url: &str, extra: &str) -> String {
    let own_backoff = extra.lines().any(|l| l.trim_start().starts_with("backoff_ms"));
    let backoff = if own_backoff { "" } else { "backoff_ms = 1\n" };
    format!(
        "[providers.{name}]\nkind = \"openai\"\nbase_url = \"{base_url}\"\nmodel = \"flaky-model\"\n{backoff}{extra}\n\n"
    )
}

/// A refund answer with `amount` (the pipelines' schema is `refund_schema`).
pub fn refund(amount: f64) -> String {
    json!({"amount": amount, "currency": "EUR", "reason": "damaged parcel"}).to_string()
}

/// The model steps of a run's trace: (provider, result).
pub fn model_steps(r: &RunResult) -> Vec<(String, String)> {
    r.trace
        .iter()
        .filter(|s| s.layer == "model")
        .map(|s| (s.name.clone(), s.result.clone()))
        .collect()
}
