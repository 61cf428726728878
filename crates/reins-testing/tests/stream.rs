//! The fake upstream's streamed answers ([`Step::Stream`],
//! [`Step::AnthropicStream`]): on the wire (chunk framing, the events in
//! order, keep-alive after a good end, a cut without the last chunk, a
//! stall noticed when the client leaves), and through the official OpenAI
//! and Anthropic Python clients driven by `tests/clients/stream_client.py`
//! (deltas, usage, finish reason; a cut, an error event and a stall as
//! errors the SDK raises).

use reins_testing::model::{
    Step, StreamEnd, Upstream, anthropic_stream_text, stream_text, stream_words,
};
use reins_testing::plugins;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MS: Duration = Duration::from_millis(1);

/// Sends one POST of `body` to `path` on `conn`.
async fn post(conn: &mut TcpStream, path: &str, body: &Value) {
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.expect("send");
}

/// What one streamed response came as.
#[derive(Debug)]
struct Wire {
    head: String,
    /// The chunks' data, joined.
    body: String,
    /// The last (empty) chunk came.
    ended: bool,
    /// The connection closed (or went quiet for `quiet`) before the end.
    cut: bool,
}

/// Reads one chunked response off `conn`, until its last chunk, the end of
/// the connection, or `quiet` without a byte.
async fn read_chunked(conn: &mut TcpStream, quiet: Duration) -> Wire {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut cut = false;
    loop {
        if let Some(wire) = dechunk(&raw) {
            return wire;
        }
        match tokio::time::timeout(quiet, conn.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => {
                cut = true;
            }
            Ok(Ok(n)) => raw.extend_from_slice(&chunk[..n]),
        }
        if cut {
            let text = String::from_utf8_lossy(&raw).into_owned();
            let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            let mut body = String::new();
            let mut rest = rest;
            while let Some((size, after)) = rest.split_once("\r\n") {
                let size = usize::from_str_radix(size, 16).expect("chunk size");
                if after.len() < size + 2 {
                    break;
                }
                body.push_str(&after[..size]);
                rest = &after[size + 2..];
            }
            return Wire {
                head: head.to_owned(),
                body,
                ended: false,
                cut,
            };
        }
    }
}

/// The whole response in `raw`, if its last chunk has come.
fn dechunk(raw: &[u8]) -> Option<Wire> {
    let text = std::str::from_utf8(raw).ok()?;
    let (head, mut rest) = text.split_once("\r\n\r\n")?;
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size, 16).expect("chunk size");
        if size == 0 {
            assert_eq!(after, "\r\n", "nothing after the last chunk");
            return Some(Wire {
                head: head.to_owned(),
                body,
                ended: true,
                cut: false,
            });
        }
        if after.len() < size + 2 {
            return None;
        }
        assert_eq!(&after[size..size + 2], "\r\n", "a chunk ends with CRLF");
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

/// The events of an SSE body: (event name, data).
fn events(body: &str) -> Vec<(Option<String>, String)> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = String::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = d.to_owned();
                }
            }
            (name, data)
        })
        .collect()
}

fn data(events: &[(Option<String>, String)]) -> Vec<Value> {
    events
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(_, d)| serde_json::from_str(d).expect("JSON data"))
        .collect()
}

#[test]
fn words_keep_their_blanks() {
    let pieces = stream_words("  Hello big\n world ", MS);
    let texts: Vec<&str> = pieces.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(texts, ["  Hello", " big", "\n world "]);
    assert!(pieces.iter().all(|(d, _)| *d == MS));
    assert!(stream_words("", MS).is_empty());
    assert_eq!(stream_words("one", MS), [(MS, "one".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_events_on_the_wire_then_keep_alive() {
    let up = Upstream::always(Step::Stream {
        pieces: vec![(MS, "Hel".into()), (Duration::ZERO, "lo".into())],
        end: StreamEnd::Done {
            prompt_tokens: 3,
            completion_tokens: 2,
        },
    })
    .await;
    let mut conn = TcpStream::connect(up.origin().trim_start_matches("http://"))
        .await
        .expect("connect");
    let request = json!({"model": "m-1", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hi"}]});
    post(&mut conn, "/v1/chat/completions", &request).await;
    let wire = read_chunked(&mut conn, Duration::from_secs(5)).await;
    assert!(wire.ended, "{wire:?}");
    let head = wire.head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    let evs = events(&wire.body);
    assert!(evs.iter().all(|(name, _)| name.is_none()), "{evs:?}");
    assert_eq!(evs.last().expect("events").1, "[DONE]");
    let chunks = data(&evs);
    assert_eq!(chunks.len(), 5, "{chunks:#?}");
    for c in &chunks {
        assert_eq!(
            (&c["id"], &c["object"], &c["model"]),
            (
                &json!("chatcmpl-x"),
                &json!("chat.completion.chunk"),
                &json!("m-1")
            )
        );
        assert!(c["created"].as_u64().is_some_and(|t| t > 0), "{c}");
    }
    let choice = |i: usize| chunks[i]["choices"][0].clone();
    assert_eq!(
        choice(0),
        json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null})
    );
    assert_eq!(choice(1)["delta"], json!({"content": "Hel"}));
    assert_eq!(choice(2)["delta"], json!({"content": "lo"}));
    assert_eq!(
        choice(3),
        json!({"index": 0, "delta": {}, "finish_reason": "stop"})
    );
    assert!(
        chunks[..4]
            .iter()
            .all(|c| c["usage"].is_null() && c.get("usage").is_some())
    );
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(
        chunks[4]["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
    );

    // The same connection serves the next request; without include_usage
    // there is no usage chunk and no `usage` key.
    post(
        &mut conn,
        "/v1/chat/completions",
        &json!({"model": "m-2", "stream": true}),
    )
    .await;
    let wire = read_chunked(&mut conn, Duration::from_secs(5)).await;
    assert!(wire.ended, "{wire:?}");
    let chunks = data(&events(&wire.body));
    assert_eq!(chunks.len(), 4, "{chunks:#?}");
    assert!(
        chunks
            .iter()
            .all(|c| c.get("usage").is_none() && c["model"] == "m-2")
    );
    assert_eq!(up.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_events_on_the_wire() {
    let up = Upstream::always(anthropic_stream_text("Hello big world", MS)).await;
    let mut conn = TcpStream::connect(up.origin().trim_start_matches("http://"))
        .await
        .expect("connect");
    post(
        &mut conn,
        "/v1/messages",
        &json!({"model": "claude-x", "stream": true, "max_tokens": 9}),
    )
    .await;
    let wire = read_chunked(&mut conn, Duration::from_secs(5)).await;
    assert!(wire.ended, "{wire:?}");
    let evs = events(&wire.body);
    let names: Vec<&str> = evs
        .iter()
        .map(|(n, _)| n.as_deref().expect("named"))
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let ds = data(&evs);
    for ((name, _), d) in evs.iter().zip(&ds) {
        assert_eq!(Some(d["type"].as_str().expect("type")), name.as_deref());
    }
    assert_eq!(ds[0]["message"]["model"], "claude-x");
    assert_eq!(ds[0]["message"]["content"], json!([]));
    assert_eq!(
        ds[0]["message"]["usage"],
        json!({"input_tokens": 10, "output_tokens": 1})
    );
    let texts: Vec<&Value> = ds[3..6].iter().map(|d| &d["delta"]).collect();
    assert_eq!(
        texts,
        [
            &json!({"type": "text_delta", "text": "Hello"}),
            &json!({"type": "text_delta", "text": " big"}),
            &json!({"type": "text_delta", "text": " world"})
        ]
    );
    assert_eq!(ds[7]["delta"]["stop_reason"], "end_turn");
    assert_eq!(ds[7]["usage"], json!({"output_tokens": 3}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_ends_without_the_last_chunk_and_a_stall_notices_the_client_leave() {
    let up = Upstream::steps(vec![
        Step::Stream {
            pieces: stream_words("cut here", MS),
            end: StreamEnd::Cut,
        },
        Step::AnthropicStream {
            pieces: stream_words("stalled", MS),
            end: StreamEnd::Stall,
        },
    ])
    .await;
    let addr = up.origin().trim_start_matches("http://").to_owned();
    let mut conn = TcpStream::connect(&addr).await.expect("connect");
    post(&mut conn, "/v1/chat/completions", &json!({"model": "m"})).await;
    let wire = read_chunked(&mut conn, Duration::from_secs(5)).await;
    assert!(wire.cut && !wire.ended, "{wire:?}");
    let evs = events(&wire.body);
    assert!(evs.iter().all(|(_, d)| d != "[DONE]"), "{evs:?}");
    let chunks = data(&evs);
    assert_eq!(chunks.len(), 3, "{chunks:#?}");
    assert!(
        chunks
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
    // The upstream closed it: the connection is at its end.
    let mut rest = [0u8; 16];
    assert_eq!(conn.read(&mut rest).await.expect("read"), 0);
    assert_eq!(up.closed(), 0, "the upstream, not the client, cut it");

    let mut conn = TcpStream::connect(&addr).await.expect("connect");
    post(&mut conn, "/v1/messages", &json!({"model": "c"})).await;
    let wire = read_chunked(&mut conn, Duration::from_millis(300)).await;
    assert!(!wire.ended, "{wire:?}");
    let names: Vec<String> = events(&wire.body)
        .into_iter()
        .filter_map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta"
        ]
    );
    drop(conn);
    assert!(
        up.wait_closed(1, Duration::from_secs(10)).await,
        "the client left"
    );
}

/// Runs `tests/clients/stream_client.py ARGS` and parses its JSON.
async fn driver(args: &[&str]) -> Value {
    let script = plugins::repo_root().join("tests/clients/stream_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .await
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named") {
        panic!(
            "a client package is missing: pip install -r tests/clients/requirements.txt\n{stderr}"
        );
    }
    assert!(out.status.success(), "{args:?}:\n{stdout}\n{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_reads_the_stream() {
    let step = |end| Step::Stream {
        pieces: stream_words("Hello big world", Duration::from_millis(20)),
        end,
    };
    let up = Upstream::steps(vec![
        step(StreamEnd::Done {
            prompt_tokens: 7,
            completion_tokens: 3,
        }),
        step(StreamEnd::Cut),
        step(StreamEnd::Error {
            kind: "server_error".into(),
            message: "the model fell over".into(),
        }),
        step(StreamEnd::Stall),
        stream_text("one two", MS),
    ])
    .await;
    let base = up.base_url();
    let run = |extra: &'static [&'static str]| {
        let base = base.clone();
        async move {
            let mut args = vec!["openai", base.as_str(), "key", "m-o", "say hello"];
            args.extend_from_slice(extra);
            driver(&args).await
        }
    };

    let done = run(&["--max-tokens", "50"]).await;
    assert_eq!(done["error"], Value::Null, "{done}");
    assert_eq!(done["deltas"], json!(["Hello", " big", " world"]), "{done}");
    assert_eq!(done["text"], "Hello big world");
    assert_eq!(done["finish_reason"], "stop");
    assert_eq!(
        done["usage"],
        json!({"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10})
    );
    let (ttfb, total) = (
        done["ttfb_ms"].as_f64().expect("ttfb"),
        done["total_ms"].as_f64().expect("total"),
    );
    assert!(ttfb >= 20.0 && total >= ttfb + 40.0, "{done}");
    let sent = &up.seen()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.body["stream"], true);
    assert_eq!(sent.body["stream_options"], json!({"include_usage": true}));
    assert_eq!(sent.body["max_tokens"], 50);
    assert_eq!(sent.body["model"], "m-o");

    let cut = run(&[]).await;
    assert_eq!(cut["text"], "Hello big world", "{cut}");
    assert_eq!(cut["finish_reason"], Value::Null, "{cut}");
    assert_eq!(cut["usage"], Value::Null, "{cut}");
    assert_eq!(cut["error"]["type"], "APIConnectionError", "{cut}");
    assert_eq!(up.seen()[1].body.get("max_tokens"), None);

    let failed = run(&[]).await;
    assert_eq!(failed["text"], "Hello big world", "{failed}");
    assert_eq!(failed["error"]["type"], "APIError", "{failed}");
    assert_eq!(
        failed["error"]["message"], "the model fell over",
        "{failed}"
    );
    assert_eq!(failed["error"]["body"]["type"], "server_error", "{failed}");

    let stalled = run(&["--timeout", "1"]).await;
    assert_eq!(stalled["text"], "Hello big world", "{stalled}");
    assert_eq!(stalled["error"]["type"], "APITimeoutError", "{stalled}");
    assert!(
        up.wait_closed(1, Duration::from_secs(10)).await,
        "the SDK left"
    );

    let bench = run(&["--n", "3"]).await;
    assert_eq!(
        bench["ttfb_ms"].as_array().map(Vec::len),
        Some(3),
        "{bench}"
    );
    assert_eq!(
        bench["total_ms"].as_array().map(Vec::len),
        Some(3),
        "{bench}"
    );
    assert_eq!(bench["errors"], json!([null, null, null]), "{bench}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_sdk_reads_the_stream() {
    let step = |end| Step::AnthropicStream {
        pieces: stream_words("Hello big world", Duration::from_millis(20)),
        end,
    };
    let up = Upstream::steps(vec![
        step(StreamEnd::Done {
            prompt_tokens: 7,
            completion_tokens: 3,
        }),
        step(StreamEnd::Cut),
        step(StreamEnd::Error {
            kind: "overloaded_error".into(),
            message: "Overloaded".into(),
        }),
        step(StreamEnd::Stall),
        anthropic_stream_text("one two", MS),
    ])
    .await;
    let base = up.origin();
    let run = |extra: &'static [&'static str]| {
        let base = base.clone();
        async move {
            let mut args = vec!["anthropic", base.as_str(), "key", "c-1", "say hello"];
            args.extend_from_slice(extra);
            driver(&args).await
        }
    };

    let done = run(&["--max-tokens", "50"]).await;
    assert_eq!(done["error"], Value::Null, "{done}");
    assert_eq!(done["deltas"], json!(["Hello", " big", " world"]), "{done}");
    assert_eq!(done["finish_reason"], "end_turn");
    assert_eq!(done["usage"]["input_tokens"], 7, "{done}");
    assert_eq!(done["usage"]["output_tokens"], 3, "{done}");
    assert!(done["ttfb_ms"].as_f64().expect("ttfb") >= 20.0, "{done}");
    let sent = &up.seen()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(
        (
            &sent.body["stream"],
            &sent.body["max_tokens"],
            &sent.body["model"]
        ),
        (&json!(true), &json!(50), &json!("c-1"))
    );

    let cut = run(&[]).await;
    assert_eq!(cut["text"], "Hello big world", "{cut}");
    assert_eq!(cut["finish_reason"], Value::Null, "{cut}");
    assert_eq!(cut["error"]["type"], "APIConnectionError", "{cut}");
    assert_eq!(up.seen()[1].body["max_tokens"], 1024);

    let failed = run(&[]).await;
    assert_eq!(failed["text"], "Hello big world", "{failed}");
    assert!(failed["error"].is_object(), "{failed}");
    assert_eq!(
        failed["error"]["body"]["error"]["type"], "overloaded_error",
        "{failed}"
    );

    let stalled = run(&["--timeout", "1"]).await;
    assert_eq!(stalled["text"], "Hello big world", "{stalled}");
    assert_eq!(stalled["error"]["type"], "APITimeoutError", "{stalled}");
    assert!(
        up.wait_closed(1, Duration::from_secs(10)).await,
        "the SDK left"
    );

    let bench = run(&["--n", "2"]).await;
    assert_eq!(bench["errors"], json!([null, null]), "{bench}");
}
