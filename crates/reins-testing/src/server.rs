//! Servers on loopback for tests: any axum app on an ephemeral port, a
//! `reins serve` child process, and one-shot requests to the HTTP router
//! (no socket at all) for the tests of the API surface.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use reins::server::AppState;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tower::ServiceExt;

/// Serves `app` on an ephemeral loopback port and returns `http://ADDR`.
/// Port 0 lets tests run in parallel without choosing ports.
pub async fn listen(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A loopback URL nothing listens on: the port was bound and released, so
/// a connection to it is refused instead of reaching another test.
pub fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}", l.local_addr().expect("addr"))
}

/// The `reins` binary next to the running test: cargo builds a package's
/// binaries before its integration tests and benches, into the directory
/// above their `deps/`.
pub fn reins_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = dir.join(format!("reins{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.is_file(), "no reins binary at {}", bin.display());
    bin
}

/// A `reins serve` child process; killed (SIGKILL) on drop, which is what
/// the crash tests rely on.
pub struct Served {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `reins serve --config CONFIG --listen 127.0.0.1:0` and waits for
/// the line that names the bound address.
pub fn serve(config: &Path) -> Served {
    serve_with(config, &[])
}

/// [`serve`] with more arguments (e.g. `--node-id`). Its stdout is drained
/// by a thread, so a chatty server never blocks on a full pipe.
pub fn serve_with(config: &Path, args: &[&str]) -> Served {
    serve_env(config, args, &[], None)
}

/// [`serve_with`] with environment variables for the child (e.g. an
/// upstream's API key) and, with `log`, its stderr (the log) written to
/// that file instead of the test's, so a test can search what it logged.
pub fn serve_env(config: &Path, args: &[&str], env: &[(&str, &str)], log: Option<&Path>) -> Served {
    let mut command = Command::new(reins_exe());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .args(args);
    start(command, env, log)
}

/// [`serve`] with the open-file limit lowered to `limit` (through `sh -c
/// 'ulimit -n'`), for what the server does when descriptors run out.
#[cfg(unix)]
pub fn serve_with_file_limit(config: &Path, limit: u32) -> Served {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
        .arg(reins_exe())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config);
    start(command, &[], None)
}

/// Spawns `command` (a `reins serve`) and waits for the line that names the bound address.
fn start(mut command: Command, env: &[(&str, &str)], log: Option<&Path>) -> Served {
    let stderr = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
        None => Stdio::inherit(),
    };
    let mut child = command
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start reins serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("listening on ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(base) => Served { child, base },
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let logged = log
                .and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default();
            panic!(
                "reins serve did not start listening{}",
                if logged.is_empty() {
                    String::new()
                } else {
                    format!(":\n{logged}")
                }
            );
        }
    }
}

/// `reins serve --config CONFIG` with these arguments, which must fail to
/// start: its stderr, for the test to look for the reason in.
pub fn serve_fails(config: &Path, args: &[&str]) -> String {
    let out = Command::new(reins_exe())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .args(args)
        .output()
        .expect("run reins serve");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "must not start: {stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "{stderr}"
    );
    stderr
}

/// One request to the router of `state` without a socket: the status, the
/// headers and the body (JSON, else its text as a JSON string, so a test
/// asserts on an HTML page or an event stream the same way). A body is
/// sent as JSON; `headers` come after, so they may override its type.
pub async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
    body_limit: usize,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = axum::http::Request::builder().method(method).uri(uri);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(body.map_or_else(Body::empty, Body::from))
        .expect("request");
    let resp = reins::server::router(state.clone(), body_limit)
        .oneshot(req)
        .await
        .expect("infallible");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, value)
}

/// The value of one line of `GET {base}/metrics` (`name{labels}` as
/// Prometheus prints it), 0 when absent.
pub async fn metric(base: &str, key: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|line| {
            line.strip_prefix(key)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// [`metric`] once it reaches `want` (what is counted just after the
/// event a test waits on), or its last value when it does not within `within`.
pub async fn metric_reaches(base: &str, key: &str, want: f64, within: Duration) -> f64 {
    let give_up = tokio::time::Instant::now() + within;
    loop {
        let value = metric(base, key).await;
        if value >= want || tokio::time::Instant::now() > give_up {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
