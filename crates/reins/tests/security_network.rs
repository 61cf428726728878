//! Safe network and browser defaults, against real `reins serve` processes
//! on loopback: the `Host` / `Origin` guard of an open server, CORS, the
//! browser security headers, slowing repeated bad tokens, and HTTPS with a
//! certificate generated here (no files from anywhere else), with the same
//! connection limits as plain HTTP.

use reins_testing::config::Config;
use reins_testing::model::{Step, Upstream};
use reins_testing::server::{self, Served};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const TOKEN: &str = "network-test-token";

/// A config with one pipeline on `upstream` and more `[server]` text.
fn config(dir: &Path, upstream: &Upstream, server: &str) -> PathBuf {
    Config::new()
        .plugins_dir(".")
        .test_cache()
        .openai("up", &upstream.base_url(), "fake", "")
        .table("[pipelines.echo]\nmodel = \"up\"\n")
        .table(server)
        .write(dir)
}

/// A fake model, the config's directory and `reins serve` on it: kept
/// together, since the server lives only as long as all three.
struct Started {
    upstream: Upstream,
    _dir: tempfile::TempDir,
    served: Served,
}

async fn start(server: &str) -> Started {
    let upstream = Upstream::always(Step::Answer("hello".into())).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let served = server::serve(&config(dir.path(), &upstream, server));
    Started {
        upstream,
        _dir: dir,
        served,
    }
}

/// `POST /v1/pipelines/echo/runs` with the test token.
fn run_with_token(client: &reqwest::Client, base: &str) -> reqwest::RequestBuilder {
    client
        .post(format!("{base}/v1/pipelines/echo/runs"))
        .bearer_auth(TOKEN)
        .json(&json!({"input": "hi"}))
}

fn tokens() -> String {
    let hash = hex::encode(Sha256::digest(TOKEN.as_bytes()));
    format!(
        "[[server.tokens]]\nname = \"ci\"\nsha256 = \"{hash}\"\nscopes = [\"run\", \"approve\", \"admin\"]\n"
    )
}

/// One request; the status, headers and body (JSON, else its text as a string).
async fn send(req: reqwest::RequestBuilder) -> (u16, HeaderMap, Value) {
    let resp = req.send().await.expect("request");
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn assert_refused(status: u16, body: &Value, kind: &str, named: &str) {
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert_eq!(
        body["error"]["header"],
        named.split(' ').next().unwrap_or(named),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(named),
        "the message names {named:?}: {message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_server_answers_only_loopback_names_and_allowed_origins() {
    let started = start("[server]\nallowed_hosts = [\"reins.internal\"]\n").await;
    let (upstream, base) = (&started.upstream, &started.served.base);
    let port = base.rsplit(':').next().expect("port");
    let client = reqwest::Client::new();
    let run = |host: &str| {
        client
            .post(format!("{base}/v1/pipelines/echo/runs"))
            .header("host", host)
            .json(&json!({"input": "hi"}))
    };

    // DNS rebinding: a page on evil.example whose name now points here.
    let (status, _, body) = send(run("evil.example")).await;
    assert_refused(status, &body, "forbidden_host", "Host `evil.example`");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("[server] allowed_hosts"),
        "{body}"
    );
    let (status, _, body) = send(run(&format!("evil.example:{port}"))).await;
    assert_refused(status, &body, "forbidden_host", "Host `evil.example:");
    assert_eq!(upstream.count(), 0, "a refused request runs nothing");

    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "[::1]:9".into(),
        "reins.internal:8080".into(),
    ] {
        let (status, _, body) = send(run(&host)).await;
        assert_eq!(status, 200, "Host {host}: {body}");
        assert_eq!(body["status"], "completed", "{body}");
    }
    assert_eq!(upstream.count(), 4, "each admitted request ran once");

    // Origin: a foreign page is refused; loopback pages and our own are not.
    let with_origin = |origin: &str| {
        client
            .get(format!("{base}/v1/pipelines"))
            .header("origin", origin)
    };
    for origin in [
        "https://evil.example",
        "null",
        "http://localhost.evil.example",
    ] {
        let (status, _, body) = send(with_origin(origin)).await;
        assert_refused(
            status,
            &body,
            "forbidden_origin",
            &format!("Origin `{origin}`"),
        );
    }
    for origin in [
        "http://localhost:3000",
        "https://127.0.0.1",
        "http://[::1]:5173",
        base.as_str(),
    ] {
        let (status, _, body) = send(with_origin(origin)).await;
        assert_eq!(status, 200, "Origin {origin}: {body}");
    }
    // No CORS configured: a preflight from another site is refused outright.
    let (status, headers, body) = send(
        client
            .request(
                reqwest::Method::OPTIONS,
                format!("{base}/v1/chat/completions"),
            )
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST"),
    )
    .await;
    assert_refused(
        status,
        &body,
        "forbidden_origin",
        "Origin `https://app.example`",
    );
    assert!(
        header(&headers, "access-control-allow-origin").is_none(),
        "{headers:?}"
    );

    let (_, _, metrics) = send(client.get(format!("{base}/metrics"))).await;
    let metrics = metrics.as_str().unwrap_or("");
    assert!(
        metrics.contains(r#"reins_requests_refused_total{header="host"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"reins_requests_refused_total{header="origin"} 4"#),
        "{metrics}"
    );
}

fn preflight(client: &reqwest::Client, base: &str, origin: &str) -> reqwest::RequestBuilder {
    client
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/v1/chat/completions"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_is_off_unless_configured_and_then_only_for_listed_origins() {
    let client = reqwest::Client::new();

    // Tokens, no CORS: a preflight gets no CORS headers, so a browser sends nothing.
    let plain = start(&tokens()).await;
    let (status, headers, _) = send(preflight(
        &client,
        &plain.served.base,
        "https://app.example",
    ))
    .await;
    assert!(
        !(200..300).contains(&status),
        "refused, not answered: {status}"
    );
    assert!(
        header(&headers, "access-control-allow-origin").is_none(),
        "{headers:?}"
    );

    let cors_table = format!(
        "{}\n[server.cors]\nallowed_origins = [\"https://app.example\"]\n",
        tokens()
    );
    let started = start(&cors_table).await;
    let cors = &started.served;
    let (status, headers, _) = send(preflight(&client, &cors.base, "https://app.example")).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://app.example")
    );
    let methods = header(&headers, "access-control-allow-methods").unwrap_or("");
    assert!(methods.contains("POST"), "{methods}");
    let allowed = header(&headers, "access-control-allow-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");

    // The real request from the listed origin, with its token, is readable.
    let with_token = |origin: &str| {
        client
            .get(format!("{}/v1/pipelines", cors.base))
            .header("origin", origin)
            .bearer_auth(TOKEN)
    };
    let (status, headers, body) = send(with_token("https://app.example")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://app.example")
    );

    // The server's own pages, under whatever name it is reached by, are not cross-origin.
    let (status, _, body) =
        send(with_token("https://reins.example:8443").header("host", "reins.example:8443")).await;
    assert_eq!(status, 200, "{body}");

    // With CORS on, an unlisted origin is refused even with a valid token.
    let (status, _, body) = send(preflight(&client, &cors.base, "https://other.example")).await;
    assert_refused(
        status,
        &body,
        "forbidden_origin",
        "Origin `https://other.example`",
    );
    let (status, _, body) = send(with_token("https://other.example")).await;
    assert_refused(
        status,
        &body,
        "forbidden_origin",
        "Origin `https://other.example`",
    );
}

fn assert_security_headers(what: &str, headers: &HeaderMap) {
    let csp = header(headers, "content-security-policy").unwrap_or("");
    assert!(csp.contains("default-src 'self'"), "{what}: CSP {csp:?}");
    assert!(
        csp.contains("frame-ancestors 'none'"),
        "{what}: CSP {csp:?}"
    );
    assert_eq!(header(headers, "x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(
        header(headers, "x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        header(headers, "referrer-policy"),
        Some("no-referrer"),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_and_the_api_carry_the_browser_security_headers() {
    let started = start(&tokens()).await;
    let client = reqwest::Client::new();
    let base = &started.served.base;

    let (status, headers, page) = send(client.get(format!("{base}/ui/approvals"))).await;
    assert_eq!(status, 200);
    assert_security_headers("the approvals page", &headers);
    // Under `default-src 'self'` inline code would not run: the page loads its own files.
    let page = page.as_str().unwrap_or("");
    assert!(
        page.contains(r#"<script src="/ui/approvals.js">"#) && !page.contains("<script>"),
        "{page}"
    );
    assert!(
        !page.contains("<style") && !page.contains("style="),
        "{page}"
    );
    for (path, kind) in [
        ("/ui/approvals.js", "text/javascript"),
        ("/ui/approvals.css", "text/css"),
    ] {
        let (status, headers, _) = send(client.get(format!("{base}{path}"))).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            header(&headers, "content-type")
                .unwrap_or("")
                .starts_with(kind),
            "{path}: {headers:?}"
        );
        assert_security_headers(path, &headers);
    }

    let (status, headers, body) = send(run_with_token(&client, base)).await;
    assert_eq!(status, 200, "{body}");
    assert_security_headers("an API answer", &headers);
    let (status, headers, _) = send(client.get(format!("{base}/v1/pipelines"))).await;
    assert_eq!(status, 401);
    assert_security_headers("an error answer", &headers);
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_bad_tokens_from_one_address_are_slowed_but_a_valid_token_is_not() {
    let started = start(&tokens()).await;
    let client = reqwest::Client::new();
    let base = &started.served.base;
    let bad = || {
        client
            .get(format!("{base}/v1/pipelines"))
            .bearer_auth("guess")
    };

    // The burst (5) goes through at full speed; past it, 401s are held back
    // and marked. Each held one waits for the next allowance, so at most a
    // few more requests pass before one is held, however slow this machine.
    let mut slowed_at = None;
    for i in 1..=30 {
        let (status, headers, body) = send(bad()).await;
        assert_eq!(status, 401, "{body}");
        if header(&headers, "x-reins-auth-slowed") == Some("true") {
            slowed_at = Some(i);
            break;
        }
    }
    let slowed_at = slowed_at.expect("a bad token past the burst is slowed");
    assert!(
        slowed_at > 5,
        "the first five failures are not slowed (slowed at {slowed_at})"
    );

    // Same address, valid token, right after: answered at once, not marked.
    let (status, headers, body) = send(
        client
            .get(format!("{base}/v1/pipelines"))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        header(&headers, "x-reins-auth-slowed").is_none(),
        "{headers:?}"
    );
    let (status, headers, body) = send(run_with_token(&client, base)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("completed")),
        "{body}"
    );
    assert!(
        header(&headers, "x-reins-auth-slowed").is_none(),
        "{headers:?}"
    );

    let (_, _, metrics) = send(client.get(format!("{base}/metrics"))).await;
    let metrics = metrics.as_str().unwrap_or("");
    assert!(
        metrics.contains("reins_auth_failures_slowed_total 1"),
        "{metrics}"
    );
}

/// A test CA and a certificate for localhost / 127.0.0.1 it signed, as PEM
/// files in `dir`: (ca, cert, key).
fn certificates(dir: &Path) -> (String, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Reins test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params");
    let cert = params.signed_by(&key, &issuer).expect("certificate");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    (ca.pem(), cert_path, key_path)
}

/// A client that trusts the test CA (PEM).
fn trusting(ca: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA PEM"))
        .build()
        .expect("client")
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

#[tokio::test(flavor = "multi_thread")]
async fn https_with_a_generated_certificate_serves_and_shuts_down_gracefully() {
    let upstream = Upstream::always(Step::Answer("hello".into())).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = certificates(dir.path());
    let config_path = config(dir.path(), &upstream, &tokens());
    let mut served = server::serve_with(
        &config_path,
        &["--tls-cert", arg(&cert), "--tls-key", arg(&key)],
    );
    assert!(
        served.base.starts_with("https://127.0.0.1:"),
        "{}",
        served.base
    );

    let client = trusting(&ca);
    let (status, headers, body) = send(client.get(format!("{}/healthz", served.base))).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ok")),
        "{body}"
    );
    assert_security_headers("/healthz over HTTPS", &headers);
    let (status, _, body) = send(run_with_token(&client, &served.base)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("completed")),
        "{body}"
    );

    // A client that does not trust the test CA is refused by TLS itself.
    let stranger = reqwest::Client::new();
    assert!(
        stranger
            .get(format!("{}/healthz", served.base))
            .send()
            .await
            .is_err()
    );

    let signal = std::process::Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(signal.success());
    let exit = served.child.wait().expect("wait");
    assert!(
        exit.success(),
        "SIGTERM ends the HTTPS server cleanly: {exit}"
    );
    drop(served);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_certificate_files_fail_with_a_message_naming_the_file() {
    let upstream = Upstream::always(Step::Answer("hello".into())).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, cert, key) = certificates(dir.path());
    let other = tempfile::tempdir().expect("tempdir");
    let (_, _, other_key) = certificates(other.path());
    let config_path = config(dir.path(), &upstream, "");
    let missing = dir.path().join("missing.pem");

    let err = server::serve_fails(
        &config_path,
        &["--tls-cert", arg(&missing), "--tls-key", arg(&key)],
    );
    assert!(
        err.contains(arg(&missing)) && err.contains("cannot read it"),
        "{err}"
    );

    // The key given as the certificate: no certificate in it.
    let err = server::serve_fails(
        &config_path,
        &["--tls-cert", arg(&key), "--tls-key", arg(&key)],
    );
    assert!(
        err.contains(&format!("TLS certificate {}", arg(&key)))
            && err.contains("BEGIN CERTIFICATE"),
        "{err}"
    );

    let err = server::serve_fails(
        &config_path,
        &["--tls-cert", arg(&cert), "--tls-key", arg(&cert)],
    );
    assert!(
        err.contains(&format!("TLS key {}", arg(&cert))) && err.contains("PRIVATE KEY"),
        "{err}"
    );

    let err = server::serve_fails(
        &config_path,
        &["--tls-cert", arg(&cert), "--tls-key", arg(&other_key)],
    );
    assert!(
        err.contains("does not go with") && err.contains(arg(&other_key)),
        "{err}"
    );

    let err = server::serve_fails(&config_path, &["--tls-cert", arg(&cert)]);
    assert!(err.contains("only the certificate is given"), "{err}");

    // From the config, relative to it.
    std::fs::write(
        &config_path,
        std::fs::read_to_string(&config_path).expect("config")
            + "\n[server]\ntls_cert = \"nope.pem\"\ntls_key = \"key.pem\"\n",
    )
    .expect("config");
    let err = server::serve_fails(&config_path, &[]);
    assert!(err.contains(arg(&dir.path().join("nope.pem"))), "{err}");

    // An unknown key in [server.cors] is refused, named.
    let bad_dir = tempfile::tempdir().expect("tempdir");
    let bad = config(
        bad_dir.path(),
        &upstream,
        "[server.cors]\nallowed_origins = []\nallow_all = true\n",
    );
    let err = server::serve_fails(&bad, &[]);
    assert!(err.contains("allow_all"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn https_has_the_connection_limits_too_a_stalled_handshake_is_closed() {
    use tokio::io::AsyncReadExt;
    let upstream = Upstream::always(Step::Answer("hello".into())).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = certificates(dir.path());
    let config_path = config(
        dir.path(),
        &upstream,
        "[server]\nheader_read_timeout_ms = 300\n",
    );
    let served = server::serve_with(
        &config_path,
        &["--tls-cert", arg(&cert), "--tls-key", arg(&key)],
    );
    let addr = served.base.trim_start_matches("https://").to_owned();

    // A client that connects and never starts its handshake is closed (EOF or reset).
    let mut stalled = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let mut buf = [0u8; 16];
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(20), stalled.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the server closed it: {read:?}"
    );

    let client = trusting(&ca);
    let (status, _, body) = send(client.get(format!("{}/healthz", served.base))).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ok")),
        "{body}"
    );
    // Counted just after the socket closes: look again until it shows.
    let counted = r#"reins_connections_closed_total{reason="tls_handshake"} 1"#;
    let mut metrics = String::new();
    for _ in 0..100 {
        let (_, _, text) = send(client.get(format!("{}/metrics", served.base))).await;
        metrics = text.as_str().unwrap_or("").to_owned();
        if metrics.contains(counted) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(metrics.contains(counted), "{metrics}");
}
