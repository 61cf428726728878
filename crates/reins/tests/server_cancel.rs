//! Cancellation on disconnect, end to end: a real `reins serve` on
//! loopback, raw HTTP clients that hang up, a fake upstream that holds its
//! answer and reports when the harness closed its connection, and a webhook
//! sink. Every wait is for an event, bounded by one generous timeout; no
//! assertion depends on how fast anything is.

use reins::pipeline::RunStatus;
use reins::state::StateStore;
use reins_testing::config::Config;
use reins_testing::model::{self, Step, Upstream};
use reins_testing::plugins;
use reins_testing::server::{self, Served};
use reins_testing::webhook::Sink;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long any one event may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(90);
/// How long the upstream holds an answer that nobody should receive.
const LONG: Duration = Duration::from_secs(300);

struct Fixture {
    _dir: tempfile::TempDir,
    served: Served,
    /// The server's own SQLite file, opened a second time: how a test finds
    /// a run whose id its client never received.
    store: Arc<dyn StateStore>,
}

/// A `reins serve` over `pipelines` (TOML text) with provider `up` on
/// `upstream`; `plugin_names` go into its plugins directory, with
/// `sidecars` (plugin, text) over theirs.
async fn serve(
    upstream: &Upstream,
    plugin_names: &[&str],
    sidecars: &[(&str, &str)],
    pipelines: &str,
) -> Fixture {
    let dir = plugins::plugins_dir(plugin_names);
    for (name, text) in sidecars {
        plugins::sidecar(dir.path(), name, text);
    }
    let config = Config::new()
        .plugins_dir(dir.path())
        .test_cache()
        .openai(
            "up",
            &upstream.base_url(),
            "m",
            "max_retries = 0\ntimeout_ms = 600000",
        )
        .table(pipelines);
    let path = config.write(dir.path());
    let served = server::serve(&path);
    let store = reins::state::open(&reins::state::StateSettings::default(), dir.path())
        .await
        .expect("the server's store");
    Fixture {
        _dir: dir,
        served,
        store,
    }
}

/// Sends `body` to `path` on a raw connection, left open: dropping it is
/// the client hanging up.
async fn send(f: &Fixture, path: &str, body: &Value) -> TcpStream {
    let addr = f.served.base.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await.expect("send");
    conn
}

/// [`send`], hanging up once the upstream has received call number `n`
/// (the run is then waiting on it); when it hung up.
async fn hang_up_once_upstream_has(
    f: &Fixture,
    path: &str,
    body: &Value,
    upstream: &Upstream,
    n: usize,
) -> Instant {
    let conn = send(f, path, body).await;
    assert!(
        upstream.wait_received(n, WAIT).await,
        "the upstream never received call {n}"
    );
    drop(conn);
    Instant::now()
}

/// Waits until the store holds `n` runs with `status`; their ids.
async fn runs_with(f: &Fixture, status: RunStatus, n: usize) -> Vec<String> {
    let give_up = Instant::now() + WAIT;
    loop {
        let runs = f
            .store
            .runs_with_status(status, 1_000)
            .await
            .expect("store");
        if runs.len() >= n {
            return runs.into_iter().map(|r| r.run_id).collect();
        }
        assert!(
            Instant::now() < give_up,
            "no {n} runs {status} in the store"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /v1/runs/{id}`: the stored run and its `X-Reins-Status`.
async fn read_run(f: &Fixture, id: &str) -> (String, Value) {
    let resp = reqwest::get(format!("{}/v1/runs/{id}", f.served.base))
        .await
        .expect("GET run");
    assert_eq!(resp.status(), 200);
    let status = resp.headers()["x-reins-status"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    (status, resp.json().await.expect("JSON"))
}

async fn assert_cancelled(f: &Fixture, id: &str) {
    let (status, run) = read_run(f, id).await;
    assert_eq!(status, "cancelled", "{run}");
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["error"]["kind"], "cancelled", "{run}");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("disconnected"),
        "{run}"
    );
    // Nothing is left `running` for a takeover to pick up.
    assert!(
        f.store
            .runs_with_status(RunStatus::Running, 1_000)
            .await
            .expect("store")
            .is_empty()
    );
}

const CHAT: &str = "[pipelines.chat]\nmodel = \"up\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_chat_client_that_hangs_up_cancels_its_run_and_the_upstream_call() {
    let upstream = Upstream::always(Step::Hold(LONG, "never delivered".into())).await;
    let f = serve(&upstream, &[], &[], CHAT).await;
    for (n, stream) in [(1, false), (2, true)] {
        let body = json!({"model": "chat", "stream": stream, "messages": [{"role": "user", "content": "hello"}]});
        let hung_up =
            hang_up_once_upstream_has(&f, "/v1/chat/completions", &body, &upstream, n).await;
        assert!(
            upstream.wait_closed(n, WAIT).await,
            "the upstream never saw its connection close (stream: {stream})"
        );
        // Reported, not asserted: how long the upstream kept generating for nobody.
        eprintln!(
            "stream: {stream}: hang-up to upstream close in {:?}",
            hung_up.elapsed()
        );
        let cancelled = runs_with(&f, RunStatus::Cancelled, n).await;
        for id in &cancelled {
            assert_cancelled(&f, id).await;
        }
    }
    let metrics = reqwest::get(format!("{}/metrics", f.served.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("reins_runs_cancelled_total{pipeline=\"chat\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("reins_requests_total{pipeline=\"chat\",status=\"cancelled\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_anthropic_client_that_hangs_up_cancels_its_run() {
    let upstream = Upstream::always(Step::Hold(LONG, "never delivered".into())).await;
    let f = serve(&upstream, &[], &[], CHAT).await;
    let body = json!({"model": "chat", "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]});
    hang_up_once_upstream_has(&f, "/v1/messages", &body, &upstream, 1).await;
    assert!(
        upstream.wait_closed(1, WAIT).await,
        "the upstream never saw its connection close"
    );
    let cancelled = runs_with(&f, RunStatus::Cancelled, 1).await;
    assert_cancelled(&f, &cancelled[0]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_durable_run_finishes_without_its_client_unless_its_pipeline_cancels() {
    // `finish` is answered after a few seconds, long after the client left;
    // anything else is held until the harness lets go.
    let upstream = Upstream::replying(|seen| {
        if model::first_user_text(&seen.body).contains("finish") {
            Step::Hold(
                Duration::from_secs(3),
                "finished without anyone waiting".into(),
            )
        } else {
            Step::Hold(LONG, "never delivered".into())
        }
    })
    .await;
    let pipelines = "[pipelines.durable]\nmodel = \"up\"\n\n[pipelines.impatient]\nmodel = \"up\"\non_disconnect = \"cancel\"\n";
    let f = serve(&upstream, &[], &[], pipelines).await;

    hang_up_once_upstream_has(
        &f,
        "/v1/pipelines/durable/runs",
        &json!({"input": "finish"}),
        &upstream,
        1,
    )
    .await;
    let completed = runs_with(&f, RunStatus::Completed, 1).await;
    let (status, run) = read_run(&f, &completed[0]).await;
    assert_eq!(status, "completed", "{run}");
    assert_eq!(run["output"], "finished without anyone waiting", "{run}");
    assert_eq!(
        upstream.closed(),
        0,
        "the default run let its model call finish"
    );

    hang_up_once_upstream_has(
        &f,
        "/v1/pipelines/impatient/runs",
        &json!({"input": "stop"}),
        &upstream,
        2,
    )
    .await;
    assert!(
        upstream.wait_closed(1, WAIT).await,
        "on_disconnect = \"cancel\" dropped the model call"
    );
    let cancelled = runs_with(&f, RunStatus::Cancelled, 1).await;
    assert_cancelled(&f, &cancelled[0]).await;
}

/// The model proposes two refunds; the sink holds the first one's delivery.
/// The client hangs up while it is being sent: that one is finished (cutting
/// a webhook mid-call would leave it neither applied nor refused), the
/// second is never sent, and the run ends cancelled.
#[tokio::test(flavor = "multi_thread")]
async fn actions_not_yet_started_are_never_sent_once_the_client_is_gone() {
    let sink = Sink::with_delay(|d| {
        if d.order() == "A-1" {
            Duration::from_secs(3)
        } else {
            Duration::ZERO
        }
    })
    .await;
    let call = |id: &str, order: &str| {
        let arguments = json!({"order": order, "amount": 5}).to_string();
        json!({"id": id, "type": "function", "function": {"name": "issue_refund", "arguments": arguments}})
    };
    let message = json!({"role": "assistant", "content": null, "tool_calls": [call("call_1", "A-1"), call("call_2", "A-2")]});
    let upstream = Upstream::always(model::ok(&model::completion(message))).await;
    let pipelines = format!(
        "[pipelines.refunds]\nmodel = \"up\"\nconstraints = \"tool-manifest\"\n\n\
         [pipelines.refunds.executors.issue_refund]\nkind = \"webhook\"\nurl = \"{}\"\ntimeout_ms = 60000\nretries = 0\n",
        sink.url()
    );
    let f = serve(
        &upstream,
        &["tool-manifest"],
        &[("tool-manifest", plugins::REFUND_TOOL)],
        &pipelines,
    )
    .await;

    let body =
        json!({"model": "refunds", "messages": [{"role": "user", "content": "refund both"}]});
    let conn = send(&f, "/v1/chat/completions", &body).await;
    let give_up = Instant::now() + WAIT;
    while sink.deliveries().is_empty() {
        assert!(Instant::now() < give_up, "the first refund was never sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(conn);

    let cancelled = runs_with(&f, RunStatus::Cancelled, 1).await;
    assert_cancelled(&f, &cancelled[0]).await;
    let orders: Vec<String> = sink
        .deliveries()
        .iter()
        .map(|d| d.order().to_owned())
        .collect();
    assert_eq!(
        orders,
        vec!["A-1"],
        "only the refund already being sent went out"
    );
    let (_, run) = read_run(&f, &cancelled[0]).await;
    let executions = run["executions"].as_array().cloned().unwrap_or_default();
    assert_eq!(executions.len(), 1, "{run}");
    assert_eq!(executions[0]["status"], "done", "{run}");
    let not_sent = run["trace"].as_array().into_iter().flatten().any(|s| {
        s["layer"] == "execute"
            && s["result"]
                .as_str()
                .unwrap_or_default()
                .starts_with("not sent")
    });
    assert!(
        not_sent,
        "the trace says the second refund was not sent: {run}"
    );
}
