//! Fake models. [`Upstream`] is an OpenAI-compatible (or any JSON) HTTP
//! server on loopback whose answers the test scripts request by request:
//! answers, error statuses with headers, hangs, slow trickles, garbage and
//! truncated bodies, resets and closed connections, streamed answers
//! (server-sent events, OpenAI's chat.completion.chunk or Anthropic's
//! Messages events, piece by piece, ending well, cut or stalled), or a reply
//! computed from the request. It records every request (when, path,
//! headers, body), so tests assert on what the model was really sent.
//!
//! It also reports what happened as events a test can wait on, with a
//! generous overall timeout instead of a timing threshold: each request
//! received, and each client that closed its connection while a
//! [`Step::Hold`] was holding its answer or a [`Step::Stream`] /
//! [`Step::AnthropicStream`] was streaming it (a harness that dropped the
//! call).
//!
//! It speaks HTTP/1.1 on a raw socket rather than through a framework, so
//! it can misbehave the ways real upstreams do; connections are kept alive
//! as a real server would, so a reused connection is part of what the
//! client copes with.
//!
//! [`AgentModel`] is an in-process provider for agent runs, for tests that
//! need no HTTP in between.

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
    /// A 200 whose body is these bytes, UTF-8 or not.
    Bytes(Vec<u8>),
    /// Read the request, answer nothing (until the client gives up).
    Hang,
    /// Hold the answer this long while watching the connection: a client
    /// that closes it meanwhile is recorded ([`Upstream::wait_closed`]) and
    /// gets nothing; otherwise the answer is this text.
    Hold(Duration, String),
    /// The headers at once, then the body one byte every `every`.
    Trickle { content: String, every: Duration },
    /// A `content-length` larger than the body sent, then close.
    Truncated(String),
    /// Read the request, then reset the connection (RST).
    Reset,
    /// Read the request, then close the connection without a word.
    Close,
    /// An OpenAI chat completion streamed as server-sent events, whatever
    /// the request's `stream` says: a `200` with `content-type:
    /// text/event-stream` and a chunked body, a first chunk with the role,
    /// then one chunk per piece with its text as `delta.content`, each sent
    /// (and flushed) after its delay, then [`StreamEnd`]. With `Done`: a
    /// chunk with `finish_reason: "stop"`, a usage chunk (`choices: []`)
    /// when the request asked for it (`stream_options.include_usage`; every
    /// chunk then carries `"usage": null` as OpenAI's do), `data: [DONE]`.
    /// The `model` is the request's. A client that closes the connection
    /// meanwhile is recorded ([`Upstream::wait_closed`]).
    Stream {
        pieces: Vec<(Duration, String)>,
        end: StreamEnd,
    },
    /// The same as Anthropic's Messages API streams it: `message_start`
    /// (with `usage.input_tokens`), `content_block_start`, `ping`, one
    /// `content_block_delta` (`text_delta`) per piece, then, with `Done`,
    /// `content_block_stop`, `message_delta` (`stop_reason: "end_turn"`,
    /// `usage.output_tokens`) and `message_stop`.
    AnthropicStream {
        pieces: Vec<(Duration, String)>,
        end: StreamEnd,
    },
}

/// How a streamed answer ([`Step::Stream`], [`Step::AnthropicStream`])
/// ends after its last piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The closing events with this usage, then the end of the body; the
    /// connection stays open for the next request. (Anthropic's
    /// `message_start` says `input_tokens: prompt_tokens, output_tokens: 1`
    /// as Anthropic's does; `message_delta` has the whole output count.)
    Done {
        prompt_tokens: u64,
        completion_tokens: u64,
    },
    /// The connection closes at once: no closing events, no `[DONE]`, no
    /// last chunk of the chunked body (a model that died mid-answer).
    Cut,
    /// Nothing more, the connection held open (up to 120 s, then closed):
    /// a model that stopped talking, for timeouts.
    Stall,
    /// An error event mid-stream, then the end of the body (no finish, no
    /// `[DONE]`, no `message_stop`): OpenAI's `data: {"error": {"message",
    /// "type": kind, ..}}`, Anthropic's `event: error` with `{"type":
    /// "error", "error": {"type": kind, "message"}}` (e.g.
    /// `overloaded_error`).
    Error { kind: String, message: String },
}

/// `text` in word pieces, each after `every`: a piece is a word with the
/// blanks before it (`"Hello big world"` is `"Hello"`, `" big"`,
/// `" world"`, the way models stream tokens); they concatenate to `text`.
pub fn stream_words(text: &str, every: Duration) -> Vec<(Duration, String)> {
    let mut pieces: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    for c in text.chars() {
        if c.is_whitespace() && in_word {
            pieces.push(std::mem::take(&mut current));
            in_word = false;
        } else if !c.is_whitespace() {
            in_word = true;
        }
        current.push(c);
    }
    if !current.is_empty() {
        // Blanks at the end belong to the last word.
        match pieces.last_mut() {
            Some(last) if !in_word => last.push_str(&current),
            _ => pieces.push(current),
        }
    }
    pieces.into_iter().map(|p| (every, p)).collect()
}

/// `text` streamed as OpenAI does, a word every `every`, ending well with
/// 10 prompt tokens and one completion token per word.
pub fn stream_text(text: &str, every: Duration) -> Step {
    let pieces = stream_words(text, every);
    let end = StreamEnd::Done {
        prompt_tokens: 10,
        completion_tokens: pieces.len() as u64,
    };
    Step::Stream { pieces, end }
}

/// [`stream_text`] as Anthropic streams it.
pub fn anthropic_stream_text(text: &str, every: Duration) -> Step {
    match stream_text(text, every) {
        Step::Stream { pieces, end } => Step::AnthropicStream { pieces, end },
        _ => unreachable!("stream_text streams"),
    }
}

/// A 500 with a JSON error body.
pub fn server_error() -> Step {
    status(500, "{\"error\": {\"message\": \"upstream exploded\"}}")
}

/// Any status with this body as it is.
pub fn status(code: u16, body: &str) -> Step {
    Step::Status {
        status: code,
        headers: Vec::new(),
        body: body.to_owned(),
    }
}

/// Any status with a JSON body.
pub fn json_status(code: u16, body: &Value) -> Step {
    status(code, &body.to_string())
}

/// A 200 with a JSON body: a whole completion the test wrote.
pub fn ok(body: &Value) -> Step {
    json_status(200, body)
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

/// An OpenAI chat completion from `model` answering with `message`.
pub fn completion_from(model: &str, message: Value) -> Value {
    json!({
        "id": "chatcmpl-test", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    })
}

/// An OpenAI chat completion answering with `message`.
pub fn completion(message: Value) -> Value {
    completion_from("test", message)
}

/// An assistant message with this text.
pub fn assistant(content: &str) -> Value {
    json!({"role": "assistant", "content": content})
}

/// An OpenAI assistant message calling `issue_refund(order, amount)`
/// (the tool of [`crate::plugins::REFUND_TOOL`]).
pub fn refund_call(order: &str, amount: f64) -> Value {
    let arguments = json!({"order": order, "amount": amount}).to_string();
    json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_0", "type": "function", "function": {"name": "issue_refund", "arguments": arguments}}
    ]})
}

/// The text of an OpenAI message's content, a string or parts (joined by
/// `sep`).
pub fn text_of(message: &Value, sep: &str) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(sep),
        _ => String::new(),
    }
}

/// The text of the first `user` message of a chat request body.
pub fn first_user_text(body: &Value) -> String {
    let messages = body["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    messages
        .iter()
        .find(|m| m["role"] == "user")
        .map(|m| text_of(m, " "))
        .unwrap_or_default()
}

/// A deterministic embedding of `text`: its lower-cased words hashed
/// into `dims` buckets and normalized, so texts that share words are near
/// (a stand-in for an embedding model's geometry that tests can reason about).
pub fn hashed_embedding(text: &str, dims: usize) -> Vec<f32> {
    use std::hash::{Hash, Hasher};
    let mut v = vec![0f32; dims.max(1)];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
    {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        word.to_lowercase().hash(&mut h);
        let slot = (h.finish() % v.len() as u64) as usize;
        v[slot] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x /= norm;
        }
    } else {
        v[0] = 1.0;
    }
    v
}

/// The OpenAI answer to an embeddings request (`POST …/embeddings`): a
/// [`hashed_embedding`] of each input.
pub fn embeddings(seen: &Seen, dims: usize) -> Step {
    let inputs: Vec<String> = match &seen.body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_owned())
            .collect(),
        _ => Vec::new(),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": hashed_embedding(t, dims)}))
        .collect();
    let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count()).sum();
    ok(&json!({
        "object": "list",
        "data": data,
        "model": seen.body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

/// One request the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub path: String,
    /// Names in lower case, as sent otherwise.
    pub headers: Vec<(String, String)>,
    /// The JSON body; `Null` when there was none or it was not JSON.
    pub body: Value,
}

impl Seen {
    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

type Script = Box<dyn FnMut(usize, &Seen) -> Step + Send>;

/// What the upstream has seen so far, for tests to wait on.
#[derive(Debug, Clone, Copy, Default)]
struct Events {
    received: usize,
    /// Clients that closed their connection while their answer was held.
    closed: usize,
}

/// The upstream. Dropping it stops accepting.
pub struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<Script>>,
    events: Arc<tokio::sync::watch::Sender<Events>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Upstream {
    /// Starts on 127.0.0.1 with `script(n)` deciding request `n` (0-based).
    pub async fn start(mut script: impl FnMut(usize) -> Step + Send + 'static) -> Upstream {
        Upstream::with_script(Box::new(move |n, _| script(n))).await
    }

    /// Starts with `reply(request)` deciding each answer: a model that
    /// answers what it is asked.
    pub async fn replying(mut reply: impl FnMut(&Seen) -> Step + Send + 'static) -> Upstream {
        Upstream::with_script(Box::new(move |_, seen| reply(seen))).await
    }

    async fn with_script(script: Script) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script));
        let events = Arc::new(tokio::sync::watch::Sender::new(Events::default()));
        let (log, plan, report) = (seen.clone(), script.clone(), events.clone());
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, plan, report) = (log.clone(), plan.clone(), report.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &log, &plan, &report).await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            script,
            events,
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
    pub fn set(&self, mut script: impl FnMut(usize) -> Step + Send + 'static) {
        *self.script.lock().expect("script") = Box::new(move |n, _| script(n));
    }

    /// From now on, always `step`.
    pub fn set_always(&self, step: Step) {
        self.set(move |_| step.clone());
    }

    /// `http://ADDR`, for configs that add their own path.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://ADDR/v1`, an OpenAI provider's `base_url`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.origin())
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.seen.lock().expect("seen").len()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    /// Waits until `n` requests have been received; `false` if `within`
    /// passed first.
    pub async fn wait_received(&self, n: usize, within: Duration) -> bool {
        self.wait(within, |e| e.received >= n).await
    }

    /// Waits until `n` clients have closed their connection while a
    /// [`Step::Hold`] held their answer or a stream step was streaming it
    /// (before its end); `false` if `within` passed first.
    pub async fn wait_closed(&self, n: usize, within: Duration) -> bool {
        self.wait(within, |e| e.closed >= n).await
    }

    /// Clients that closed their connection while their answer was held
    /// or streamed.
    pub fn closed(&self) -> usize {
        self.events.borrow().closed
    }

    async fn wait(&self, within: Duration, until: impl FnMut(&Events) -> bool) -> bool {
        let mut rx = self.events.subscribe();
        matches!(
            tokio::time::timeout(within, rx.wait_for(until)).await,
            Ok(Ok(_))
        )
    }

    /// The bodies of the requests received so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.seen
            .lock()
            .expect("seen")
            .iter()
            .map(|s| s.body.clone())
            .collect()
    }
}

/// Reads one HTTP/1.1 request; `None` when the client closed the connection.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Seen>> {
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
    let mut lines = head.lines();
    let path = lines
        .next()
        .unwrap_or("")
        .split(' ')
        .nth(1)
        .unwrap_or("")
        .to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
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
    Ok(Some(Seen {
        at: Instant::now(),
        path,
        headers,
        body,
    }))
}

fn head(status: u16, length: usize, headers: &[(String, String)]) -> String {
    let mut h = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n"
    );
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    h
}

/// The completion body of an [`Step::Answer`]: it names the model the
/// request asked for, as OpenAI does, so traces show the configured model.
fn answer_body(request: &Value, content: &str) -> String {
    let model = request["model"].as_str().unwrap_or("test");
    completion_from(model, assistant(content)).to_string()
}

async fn serve(
    mut stream: TcpStream,
    log: &Mutex<Vec<Seen>>,
    plan: &Mutex<Script>,
    events: &tokio::sync::watch::Sender<Events>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let Some(seen) = read_request(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        let request = seen.body.clone();
        let step = {
            let mut log = log.lock().expect("seen");
            log.push(seen.clone());
            let n = log.len() - 1;
            drop(log);
            let mut script = plan.lock().expect("script");
            (*script)(n, &seen)
        };
        events.send_modify(|e| e.received += 1);
        let flavour = match step {
            Step::AnthropicStream { .. } => Flavour::Anthropic,
            _ => Flavour::OpenAi,
        };
        match step {
            Step::Answer(content) => {
                let body = answer_body(&request, &content);
                stream
                    .write_all(format!("{}{body}", head(200, body.len(), &[])).as_bytes())
                    .await?;
            }
            Step::Slow(delay, content) => {
                tokio::time::sleep(delay).await;
                let body = answer_body(&request, &content);
                stream
                    .write_all(format!("{}{body}", head(200, body.len(), &[])).as_bytes())
                    .await?;
            }
            Step::Status {
                status,
                headers,
                body,
            } => {
                stream
                    .write_all(format!("{}{body}", head(status, body.len(), &headers)).as_bytes())
                    .await?;
            }
            Step::Bytes(body) => {
                stream
                    .write_all(head(200, body.len(), &[]).as_bytes())
                    .await?;
                stream.write_all(&body).await?;
            }
            Step::Hold(delay, content) => {
                if !held(&mut stream, &mut buf, delay).await {
                    events.send_modify(|e| e.closed += 1);
                    return Ok(());
                }
                let body = answer_body(&request, &content);
                stream
                    .write_all(format!("{}{body}", head(200, body.len(), &[])).as_bytes())
                    .await?;
            }
            Step::Hang => {
                // Bounded, so a test that forgets its client still ends.
                tokio::time::sleep(Duration::from_secs(120)).await;
                return Ok(());
            }
            Step::Trickle { content, every } => {
                let body = answer_body(&request, &content);
                stream
                    .write_all(head(200, body.len(), &[]).as_bytes())
                    .await?;
                for byte in body.as_bytes() {
                    tokio::time::sleep(every).await;
                    stream.write_all(&[*byte]).await?;
                }
            }
            Step::Truncated(content) => {
                let body = answer_body(&request, &content);
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
            Step::Stream { pieces, end } | Step::AnthropicStream { pieces, end } => {
                match streamed(&mut stream, &mut buf, &request, flavour, &pieces, &end).await {
                    Ok(Streamed::KeepAlive) => {}
                    Ok(Streamed::Closed) => return Ok(()),
                    Ok(Streamed::ClientGone) | Err(_) => {
                        events.send_modify(|e| e.closed += 1);
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Which API's events a stream step speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    OpenAi,
    Anthropic,
}

/// How a stream step left the connection.
enum Streamed {
    /// The body ended; the next request may come on it.
    KeepAlive,
    /// The upstream closed it (`Cut`, or a `Stall` that ran out).
    Closed,
    /// The client closed it before the end.
    ClientGone,
}

/// Writes one chunk of a chunked body (never empty: that would end it).
async fn write_chunk(stream: &mut TcpStream, data: &str) -> std::io::Result<()> {
    debug_assert!(!data.is_empty());
    stream
        .write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
        .await
}

/// The server-sent events of one streamed answer, in `flavour`.
struct SseEvents {
    flavour: Flavour,
    model: String,
    created: u64,
    /// OpenAI: the request asked for a usage chunk.
    include_usage: bool,
}

impl SseEvents {
    fn new(flavour: Flavour, request: &Value) -> SseEvents {
        let fallback = match flavour {
            Flavour::OpenAi => "test",
            Flavour::Anthropic => "claude-test",
        };
        SseEvents {
            flavour,
            model: request["model"].as_str().unwrap_or(fallback).to_owned(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            include_usage: request["stream_options"]["include_usage"] == json!(true),
        }
    }

    fn openai_chunk(&self, delta: Value, finish_reason: Value) -> String {
        let mut chunk = json!({
            "id": "chatcmpl-x", "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        format!("data: {chunk}\n\n")
    }

    fn anthropic_event(name: &str, data: Value) -> String {
        format!("event: {name}\ndata: {data}\n\n")
    }

    /// The events before the first piece.
    fn opening(&self, end: &StreamEnd) -> Vec<String> {
        match self.flavour {
            Flavour::OpenAi => {
                vec![self.openai_chunk(json!({"role": "assistant", "content": ""}), Value::Null)]
            }
            Flavour::Anthropic => {
                let input_tokens = match end {
                    StreamEnd::Done { prompt_tokens, .. } => *prompt_tokens,
                    _ => 0,
                };
                vec![
                    Self::anthropic_event(
                        "message_start",
                        json!({"type": "message_start", "message": {
                            "id": "msg_01", "type": "message", "role": "assistant", "model": self.model,
                            "content": [], "stop_reason": null, "stop_sequence": null,
                            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
                        }}),
                    ),
                    Self::anthropic_event(
                        "content_block_start",
                        json!({
                            "type": "content_block_start", "index": 0,
                            "content_block": {"type": "text", "text": ""},
                        }),
                    ),
                    Self::anthropic_event("ping", json!({"type": "ping"})),
                ]
            }
        }
    }

    fn piece(&self, text: &str) -> String {
        match self.flavour {
            Flavour::OpenAi => self.openai_chunk(json!({"content": text}), Value::Null),
            Flavour::Anthropic => Self::anthropic_event(
                "content_block_delta",
                json!({
                    "type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                }),
            ),
        }
    }

    /// The closing events of a stream that ends well.
    fn done(&self, prompt_tokens: u64, completion_tokens: u64) -> Vec<String> {
        match self.flavour {
            Flavour::OpenAi => {
                let mut out = vec![self.openai_chunk(json!({}), json!("stop"))];
                if self.include_usage {
                    let usage = json!({
                        "id": "chatcmpl-x", "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [],
                        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                  "total_tokens": prompt_tokens + completion_tokens},
                    });
                    out.push(format!("data: {usage}\n\n"));
                }
                out.push("data: [DONE]\n\n".to_owned());
                out
            }
            Flavour::Anthropic => vec![
                Self::anthropic_event(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 0}),
                ),
                Self::anthropic_event(
                    "message_delta",
                    json!({
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                        "usage": {"output_tokens": completion_tokens},
                    }),
                ),
                Self::anthropic_event("message_stop", json!({"type": "message_stop"})),
            ],
        }
    }

    fn error(&self, kind: &str, message: &str) -> String {
        match self.flavour {
            Flavour::OpenAi => {
                let error = json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
                format!("data: {error}\n\n")
            }
            Flavour::Anthropic => Self::anthropic_event(
                "error",
                json!({"type": "error", "error": {"type": kind, "message": message}}),
            ),
        }
    }
}

/// Plays a stream step on the connection; an `Err` is a failed write (the
/// client is gone).
async fn streamed(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    request: &Value,
    flavour: Flavour,
    pieces: &[(Duration, String)],
    end: &StreamEnd,
) -> std::io::Result<Streamed> {
    let events = SseEvents::new(flavour, request);
    // Each event leaves at once, not when Nagle sees fit.
    stream.set_nodelay(true)?;
    stream
        .write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
              transfer-encoding: chunked\r\n\r\n",
        )
        .await?;
    for event in events.opening(end) {
        write_chunk(stream, &event).await?;
    }
    for (delay, piece) in pieces {
        if !delay.is_zero() && !held(stream, buf, *delay).await {
            return Ok(Streamed::ClientGone);
        }
        write_chunk(stream, &events.piece(piece)).await?;
    }
    match end {
        StreamEnd::Done {
            prompt_tokens,
            completion_tokens,
        } => {
            for event in events.done(*prompt_tokens, *completion_tokens) {
                write_chunk(stream, &event).await?;
            }
        }
        StreamEnd::Error { kind, message } => {
            write_chunk(stream, &events.error(kind, message)).await?
        }
        StreamEnd::Cut => {
            let _ = stream.shutdown().await;
            return Ok(Streamed::Closed);
        }
        StreamEnd::Stall => {
            // Bounded, so a test that forgets its client still ends.
            if !held(stream, buf, Duration::from_secs(120)).await {
                return Ok(Streamed::ClientGone);
            }
            return Ok(Streamed::Closed);
        }
    }
    stream.write_all(b"0\r\n\r\n").await?;
    Ok(Streamed::KeepAlive)
}

/// Waits `delay` with an eye on the connection: `false` as soon as the
/// client closes it (end of stream or an error), `true` when the time is up
/// with the client still there. Bytes it sends meanwhile are kept for the
/// next request.
async fn held(stream: &mut TcpStream, buf: &mut Vec<u8>, delay: Duration) -> bool {
    let until = tokio::time::Instant::now() + delay;
    let mut chunk = [0u8; 8192];
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(until) => return true,
            read = stream.read(&mut chunk) => match read {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
        }
    }
}

/// An in-process agent model: turn n (n = `tool` messages so far) asks for
/// refund `A-n` of 1 until `steps`, then answers `{"done": steps}`.
pub struct AgentModel {
    pub steps: usize,
    /// The turn whose call fails (the model is gone).
    pub fail_at: Option<usize>,
    /// The turn that asks for a refund of 500 (an escalation) instead of 1.
    pub big_at: Option<usize>,
    /// How long each call takes.
    pub latency: Duration,
}

impl AgentModel {
    pub fn new(steps: usize) -> AgentModel {
        AgentModel {
            steps,
            fail_at: None,
            big_at: None,
            latency: Duration::ZERO,
        }
    }
}

impl reins::provider::Provider for AgentModel {
    fn name(&self) -> &str {
        "agent"
    }
    fn model(&self) -> &str {
        "agent-test"
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn complete<'a>(
        &'a self,
        request: &'a reins::provider::ChatRequest,
    ) -> reins::provider::CompletionFuture<'a> {
        use reins::provider::{ChatResponse, ProviderError, ToolCall};
        let n = request.messages.iter().filter(|m| m.role == "tool").count();
        let fail = self.fail_at == Some(n);
        let amount = if self.big_at == Some(n) { 500 } else { 1 };
        let (steps, latency) = (self.steps, self.latency);
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            if fail {
                return Err(ProviderError::BadResponse {
                    provider: "agent".into(),
                    message: "crash".into(),
                });
            }
            let (content, tool_calls) = if n < steps {
                let call = ToolCall {
                    id: None,
                    name: "issue_refund".into(),
                    arguments: json!({"order": format!("A-{n}"), "amount": amount}),
                };
                (String::new(), vec![call])
            } else {
                (json!({"done": n}).to_string(), Vec::new())
            };
            Ok(ChatResponse {
                content,
                tool_calls,
                usage: None,
                model: "agent-test".into(),
                finish_reason: None,
            })
        })
    }
}
