//! Who is calling, end to end over HTTP against a real `reins serve`: two
//! tenants, each with a static token (claims in `[[server.tokens]]`) and a
//! JWT signed here with a test key (verified against a JWKS file), the
//! bundled `tool-manifest` and `spend-limit` plugins, and a fake upstream
//! model that records what it was offered.
//!
//! The keys in `security_support/` exist only for these tests.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reins_testing::config::Config;
use reins_testing::model::{self, Step, Upstream};
use reins_testing::webhook::Sink;
use reins_testing::{plugins, server};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const ISSUER: &str = "https://id.example.test";
const AUDIENCE: &str = "reins";
const UPSTREAM_KEY: &str = "sk-upstream-secret-5b0e7c1d";

/// Secrets of the static tokens (only their sha256 is in the config).
const ALICE: &str = "tok-alice-acme-support-1f2e3d";
const BOB: &str = "tok-bob-globex-support-9a8b7c";
const CAROL: &str = "tok-carol-acme-runs-and-approves-4d5e";
const ACME_APPROVER: &str = "tok-acme-approver-77aa";
const GLOBEX_APPROVER: &str = "tok-globex-approver-88bb";
const ADMIN: &str = "tok-admin-0c0c";

fn support_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/security_support")
        .join(name)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A JWT over `claims`, signed with the test key `file` as `alg` under `kid`.
fn jwt(alg: Algorithm, file: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = std::fs::read(support_file(file)).expect("test key");
    let key = match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => panic!("not a test algorithm"),
    }
    .expect("encoding key");
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &key).expect("sign")
}

fn good_claims(sub: &str, org: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "org_id": org, "roles": ["support"],
           "exp": now() + 600, "iat": now()})
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The model: `refund AMOUNT ORDER` → one refund call; anything else is
/// echoed back (so session memory shows in what it is sent).
fn model_step(body: &Value) -> Step {
    let user = model::first_user_text(body);
    let words: Vec<&str> = user.split_whitespace().collect();
    let message = match words.as_slice() {
        ["refund", amount, order] => model::refund_call(order, amount.parse().unwrap_or(1.0)),
        _ => model::assistant(&format!("noted: {user}")),
    };
    model::ok(&model::completion(message))
}

struct World {
    served: server::Served,
    upstream: Upstream,
    _sink: Sink,
    dir: tempfile::TempDir,
    _plugins: tempfile::TempDir,
    client: reqwest::Client,
}

impl World {
    async fn start() -> World {
        let upstream = Upstream::replying(|seen| model_step(&seen.body)).await;
        let sink = Sink::start().await;
        let plugins = plugins::plugins_dir(&["tool-manifest", "spend-limit"]);
        std::fs::write(
            plugins.path().join("tool-manifest.toml"),
            r#"
[[config.tools]]
name = "issue_refund"
description = "Refund an order"
access = "write"
roles = ["support", "manager"]
[config.tools.parameters]
type = "object"
required = ["order", "amount"]
properties = { order = { type = "string" }, amount = { type = "number" } }
[[config.tools]]
name = "delete_customer"
description = "Delete a customer"
access = "irreversible"
roles = ["manager"]
[[config.tools]]
name = "run_sql"
description = "Run SQL"
access = "irreversible"
roles = ["manager"]
"#,
        )
        .expect("sidecar");
        std::fs::write(
            plugins.path().join("spend-limit.toml"),
            "[config]\nescalate_above = 450\ndaily_budget = 1000\n",
        )
        .expect("sidecar");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(support_file("jwks.json"), dir.path().join("jwks.json")).expect("jwks");
        let token = |name: &str, secret: &str, scopes: &str, claims: &str| {
            format!(
                "[[server.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = {scopes}\nclaims = {claims}\n",
                hex::encode(Sha256::digest(secret.as_bytes()))
            )
        };
        let tokens = [
            token(
                "alice",
                ALICE,
                r#"["run"]"#,
                r#"{ tenant = "acme", roles = ["support"] }"#,
            ),
            token(
                "bob",
                BOB,
                r#"["run"]"#,
                r#"{ tenant = "globex", roles = ["support"] }"#,
            ),
            token(
                "carol",
                CAROL,
                r#"["run", "approve"]"#,
                r#"{ tenant = "acme", roles = ["support"] }"#,
            ),
            token(
                "acme-approver",
                ACME_APPROVER,
                r#"["approve"]"#,
                r#"{ tenant = "acme" }"#,
            ),
            token(
                "globex-approver",
                GLOBEX_APPROVER,
                r#"["approve"]"#,
                r#"{ tenant = "globex" }"#,
            ),
            token("admin", ADMIN, r#"["run", "approve", "admin"]"#, "{}"),
        ]
        .concat();
        let config = Config::new()
            .plugins_dir(plugins.path())
            .test_cache()
            .table(&format!(
                "[state]\nkind = \"sqlite\"\npath = \"state.db\"\n[server]\nrequest_timeout_ms = 30000\n{tokens}\n\
                 [server.jwt]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_file = \"jwks.json\"\n\
                 claims = {{ tenant = \"org_id\" }}\n"
            ))
            .openai("model", &upstream.base_url(), "m", "api_key_env = \"SECURITY_TEST_UPSTREAM_KEY\"")
            .table(&format!(
                r#"[pipelines.refunds]
model = "model"
constraints = "tool-manifest"
gates = ["spend-limit"]
limits = {{ requests = 1000, window_seconds = 60 }}
[pipelines.refunds.executors.issue_refund]
kind = "webhook"
url = "{sink}"
[pipelines.chat]
model = "model"
output = "text"
[pipelines.chat.memory]
budget_tokens = 2000
"#,
                sink = sink.url()
            ))
            .write(dir.path());
        let served = server::serve_env(
            &config,
            &[],
            &[
                ("SECURITY_TEST_UPSTREAM_KEY", UPSTREAM_KEY),
                ("REINS_LOG", "debug"),
            ],
            Some(&dir.path().join("server.log")),
        );
        World {
            served,
            upstream,
            _sink: sink,
            dir,
            _plugins: plugins,
            client: reqwest::Client::new(),
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.served.base);
        let mut req = match method {
            "GET" => self.client.get(url),
            _ => self.client.post(url),
        };
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn run(&self, bearer: &str, pipeline: &str, body: Value) -> (u16, Value) {
        self.send(
            "POST",
            &format!("/v1/pipelines/{pipeline}/runs"),
            Some(bearer),
            Some(body),
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jwts_are_refused_each_with_its_reason_and_good_ones_resolve_a_tenant() {
    let w = World::start().await;
    let ok = json!({"input": "hello"});

    // Each accepted algorithm, with its key from the JWKS file.
    for (alg, file, kid) in [
        (Algorithm::EdDSA, "ed25519.pem", "ed-1"),
        (Algorithm::RS256, "rsa.pem", "rsa-1"),
        (Algorithm::ES256, "p256.pem", "ec-1"),
    ] {
        let token = jwt(alg, file, Some(kid), &good_claims("dave", "acme"));
        let (status, body) = w.run(&token, "chat", ok.clone()).await;
        assert_eq!(status, 200, "{alg:?}: {body}");
        assert_eq!(body["caller"]["tenant"], "acme", "{body}");
        assert_eq!(body["caller"]["subject"], "dave", "{body}");
        assert_eq!(
            body["caller"]["credential"],
            format!("jwt:{ISSUER}"),
            "{body}"
        );
    }

    let ed = |claims: Value| jwt(Algorithm::EdDSA, "ed25519.pem", Some("ed-1"), &claims);
    let mut claims = good_claims("dave", "acme");
    let with = |k: &str, v: Value| {
        let mut c = good_claims("dave", "acme");
        c[k] = v;
        c
    };
    let rsa_public = std::fs::read(support_file("rsa.pub.pem")).expect("public key");
    let hs256_with_public_key = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        encode(
            &header,
            &good_claims("dave", "acme"),
            &EncodingKey::from_secret(&rsa_public).expect("hmac key"),
        )
        .expect("sign")
    };
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(good_claims("dave", "acme").to_string().as_bytes())
    );
    claims.as_object_mut().expect("object").remove("org_id");
    let no_tenant = ed(claims);
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", ed(with("exp", json!(now() - 3600))), "expired"),
        (
            "not yet valid",
            ed(with("nbf", json!(now() + 3600))),
            "not valid yet",
        ),
        (
            "wrong issuer",
            ed(with("iss", json!("https://evil.example"))),
            "issuer",
        ),
        (
            "wrong audience",
            ed(with("aud", json!("someone-else"))),
            "audience",
        ),
        ("alg none", alg_none, "`none` is refused"),
        ("HS256 with the public key", hs256_with_public_key, "HS256"),
        (
            "unknown kid",
            jwt(
                Algorithm::EdDSA,
                "ed25519.pem",
                Some("nope"),
                &good_claims("dave", "acme"),
            ),
            "unknown key id",
        ),
        (
            "wrong key",
            jwt(
                Algorithm::EdDSA,
                "ed25519-other.pem",
                Some("ed-1"),
                &good_claims("dave", "acme"),
            ),
            "signature",
        ),
        ("missing tenant claim", no_tenant, "org_id"),
        ("broken segment", "abc.%%%.def".to_owned(), "malformed"),
    ];
    for (what, token, reason) in &cases {
        let (status, body) = w.run(token, "chat", ok.clone()).await;
        assert_eq!(status, 401, "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(reason),
            "{what}: expected the reason {reason:?} in {message:?}"
        );
        assert!(
            !body.to_string().contains(token.as_str()),
            "{what}: the token is echoed: {body}"
        );
    }
    // A malformed Authorization header says what the header must be.
    let resp = w
        .client
        .post(format!("{}/v1/pipelines/chat/runs", w.served.base))
        .header("authorization", "Token abc")
        .json(&ok)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.expect("json");
    assert!(body.to_string().contains("Bearer TOKEN"), "{body}");

    // A JWKS file that stops parsing keeps the last good keys.
    std::fs::write(w.dir.path().join("jwks.json"), "{ not json").expect("break jwks");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let token = ed(good_claims("dave", "acme"));
    let (status, body) = w.run(&token, "chat", ok.clone()).await;
    assert_eq!(status, 200, "the last good keys still verify: {body}");
    let log = std::fs::read_to_string(w.dir.path().join("server.log")).expect("log");
    assert!(
        log.contains("keeping the last good keys"),
        "the log says so"
    );
    // A JWKS without the key (rotated away) refuses the token once re-read.
    std::fs::write(w.dir.path().join("jwks.json"), r#"{"keys": []}"#).expect("rotate jwks");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (status, body) = w.run(&token, "chat", ok).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.to_string().contains("unknown key id"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_budgets_come_from_the_credential_not_the_body() {
    let w = World::start().await;

    // The support token is offered the support tool only.
    let (status, body) = w
        .run(ALICE, "refunds", json!({"input": "refund 100 o1"}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "completed", "{body}");
    let offered: Vec<String> = w.upstream.bodies().last().expect("a model call")["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        offered,
        vec!["issue_refund".to_string()],
        "the manager's tools never reach the model"
    );

    // Claiming a role in the body is a 403 naming the key; the model is not called.
    let calls = w.upstream.count();
    let (status, body) = w
        .run(
            ALICE,
            "refunds",
            json!({"input": "delete customer c1", "metadata": {"role": "manager"}}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["param"], "metadata.role", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("manager"),
        "{body}"
    );
    assert_eq!(w.upstream.count(), calls, "nothing reached the model");

    // The budget (1000 a day) is the verified tenant's: 100 + 400 spent,
    // another tenant named in the body is refused, and 600 more is over.
    let (_, body) = w
        .run(ALICE, "refunds", json!({"input": "refund 400 o2"}))
        .await;
    assert_eq!(body["status"], "completed", "{body}");
    for fake in ["tenant-1", "tenant-2", "tenant-3"] {
        let (status, body) = w
            .run(
                ALICE,
                "refunds",
                json!({"input": "refund 400 o3", "metadata": {"tenant": fake}}),
            )
            .await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"]["param"], "metadata.tenant", "{body}");
    }
    let (_, body) = w
        .run(ALICE, "refunds", json!({"input": "refund 400 o4"}))
        .await;
    assert_eq!(body["status"], "completed", "900 of 1000 spent: {body}");
    let (_, body) = w
        .run(ALICE, "refunds", json!({"input": "refund 400 o6"}))
        .await;
    assert_ne!(body["status"], "completed", "{body}");
    assert!(
        body.to_string().contains("daily budget of tenant acme"),
        "{body}"
    );
    // Another tenant's budget is its own.
    let (_, body) = w
        .run(BOB, "refunds", json!({"input": "refund 440 o5"}))
        .await;
    assert_eq!(body["status"], "completed", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_keys_sessions_and_approvals_belong_to_their_tenant() {
    let w = World::start().await;

    // Runs: another tenant reads, lists steps of and resumes nothing.
    let (_, mine) = w
        .run(ALICE, "chat", json!({"input": "private note 7781"}))
        .await;
    let run_id = mine["run_id"].as_str().expect("run id").to_owned();
    for (method, path) in [
        ("GET", format!("/v1/runs/{run_id}")),
        ("GET", format!("/v1/runs/{run_id}/steps")),
        ("POST", format!("/v1/runs/{run_id}/resume")),
    ] {
        let (status, body) = w.send(method, &path, Some(BOB), None).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert!(!body.to_string().contains("7781"), "{body}");
    }
    let (status, body) = w
        .send("GET", &format!("/v1/runs/{run_id}"), Some(ALICE), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = w
        .send("GET", &format!("/v1/runs/{run_id}"), Some(CAROL), None)
        .await;
    assert_eq!(status, 200, "the same tenant sees it");
    let (status, _) = w
        .send("GET", &format!("/v1/runs/{run_id}"), Some(ADMIN), None)
        .await;
    assert_eq!(status, 200, "admin sees all");

    // Idempotency keys: one key, two tenants, two runs; a retry replays.
    let body = json!({"input": "hello", "idempotency_key": "k-1"});
    let (_, a1) = w.run(ALICE, "chat", body.clone()).await;
    let (_, b1) = w.run(BOB, "chat", body.clone()).await;
    let (_, a2) = w.run(ALICE, "chat", body).await;
    assert_ne!(a1["run_id"], b1["run_id"], "two tenants, two runs");
    assert_eq!(
        a1["run_id"], a2["run_id"],
        "the same tenant's retry replays"
    );

    // Sessions: one session id, two tenants, two memories.
    let (_, _) = w
        .run(
            ALICE,
            "chat",
            json!({"input": "my secret is tulip-42", "session_id": "s-1"}),
        )
        .await;
    let (_, _) = w
        .run(
            BOB,
            "chat",
            json!({"input": "what did I say?", "session_id": "s-1"}),
        )
        .await;
    let sent_for_bob = w.upstream.bodies().last().expect("call").to_string();
    assert!(
        !sent_for_bob.contains("tulip-42"),
        "B's run saw A's memory: {sent_for_bob}"
    );
    let (_, _) = w
        .run(
            ALICE,
            "chat",
            json!({"input": "what did I say?", "session_id": "s-1"}),
        )
        .await;
    let sent_for_alice = w.upstream.bodies().last().expect("call").to_string();
    assert!(
        sent_for_alice.contains("tulip-42"),
        "A's own memory: {sent_for_alice}"
    );

    // Approvals: B's approver neither sees nor decides A's.
    let (_, held) = w
        .run(ALICE, "refunds", json!({"input": "refund 500 o9"}))
        .await;
    assert_eq!(held["status"], "awaiting_approval", "{held}");
    let approval = held["approvals"][0].as_str().expect("approval").to_owned();
    let (_, list) = w
        .send(
            "GET",
            "/v1/approvals?status=pending",
            Some(GLOBEX_APPROVER),
            None,
        )
        .await;
    assert!(!list.to_string().contains(&approval), "{list}");
    let decide = json!({"decision": "approve"});
    let (status, body) = w
        .send(
            "POST",
            &format!("/v1/approvals/{approval}"),
            Some(GLOBEX_APPROVER),
            Some(decide.clone()),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (_, list) = w
        .send(
            "GET",
            "/v1/approvals?status=pending",
            Some(ACME_APPROVER),
            None,
        )
        .await;
    assert!(list.to_string().contains(&approval), "{list}");

    // The caller who started a run cannot approve its own escalation.
    let (_, own) = w
        .run(CAROL, "refunds", json!({"input": "refund 500 o10"}))
        .await;
    let own_approval = own["approvals"][0].as_str().expect("approval").to_owned();
    let (status, body) = w
        .send(
            "POST",
            &format!("/v1/approvals/{own_approval}"),
            Some(CAROL),
            Some(decide.clone()),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains("own escalation"), "{body}");
    let (status, body) = w
        .send(
            "POST",
            &format!("/v1/approvals/{own_approval}"),
            Some(ACME_APPROVER),
            Some(decide),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["run"]["status"], "completed", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_no_log_line_no_store_row_and_no_error_body() {
    let w = World::start().await;
    let jwt_token = jwt(
        Algorithm::EdDSA,
        "ed25519.pem",
        Some("ed-1"),
        &good_claims("dave", "acme"),
    );
    let wrong = "tok-wrong-guess-0000";
    let mut bodies = Vec::new();
    for token in [ALICE, BOB, jwt_token.as_str(), wrong] {
        let (_, body) = w
            .run(token, "refunds", json!({"input": "refund 10 o1"}))
            .await;
        bodies.push(body.to_string());
        let (_, body) = w
            .run(
                token,
                "chat",
                json!({"input": "hi", "metadata": {"role": "manager"}}),
            )
            .await;
        bodies.push(body.to_string());
    }
    assert!(
        w.upstream
            .seen()
            .iter()
            .any(|s| s.header("authorization") == Some(&format!("Bearer {UPSTREAM_KEY}")))
    );
    drop(w.served);
    let log = std::fs::read_to_string(w.dir.path().join("server.log")).expect("log");
    assert!(log.lines().count() > 10, "the server logged at debug level");
    // The database and its write-ahead log, byte for byte.
    let mut store = Vec::new();
    for file in ["state.db", "state.db-wal"] {
        store.extend(std::fs::read(w.dir.path().join(file)).unwrap_or_default());
    }
    assert!(!store.is_empty(), "the store was written");
    let store = String::from_utf8_lossy(&store);
    for secret in [ALICE, BOB, jwt_token.as_str(), wrong, UPSTREAM_KEY] {
        assert!(!log.contains(secret), "a secret in the log: {secret}");
        assert!(!store.contains(secret), "a secret in the store: {secret}");
        for body in &bodies {
            assert!(!body.contains(secret), "a secret in an answer: {body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_a_jwks_url_are_fetched_cached_and_kept_when_the_issuer_fails() {
    use std::sync::{Arc, Mutex};
    // The issuer's JWKS endpoint: a real HTTP server on loopback that can be
    // made to fail, counting its fetches.
    let jwks = std::fs::read_to_string(support_file("jwks.json")).expect("jwks");
    let state = Arc::new(Mutex::new((jwks, 200u16, 0usize)));
    let shared = state.clone();
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let shared = shared.clone();
            async move {
                let mut s = shared.lock().expect("lock");
                s.2 += 1;
                let status = axum::http::StatusCode::from_u16(s.1).expect("status");
                (status, s.0.clone())
            }
        }),
    );
    let issuer = server::listen(app).await;
    let upstream = Upstream::replying(|seen| model_step(&seen.body)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::new()
        .plugins_dir(dir.path())
        .test_cache()
        .table(&format!(
            "[state]\nkind = \"memory\"\n[server.jwt]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n\
             jwks_url = \"{issuer}/jwks.json\"\njwks_timeout_ms = 2000\njwks_refresh_s = 1\nclaims = {{ tenant = \"org_id\" }}\n"
        ))
        .openai("model", &upstream.base_url(), "m", "")
        .table("[pipelines.chat]\nmodel = \"model\"\noutput = \"text\"\n")
        .write(dir.path());
    let served = server::serve_env(
        &config,
        &[],
        &[("REINS_LOG", "info")],
        Some(&dir.path().join("server.log")),
    );
    let client = reqwest::Client::new();
    let run = |token: String| {
        let (client, url) = (
            client.clone(),
            format!("{}/v1/pipelines/chat/runs", served.base),
        );
        async move {
            let resp = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"input": "hi"}))
                .send()
                .await
                .expect("request");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let good = jwt(
        Algorithm::RS256,
        "rsa.pem",
        Some("rsa-1"),
        &good_claims("erin", "globex"),
    );
    for _ in 0..3 {
        let (status, body) = run(good.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["caller"]["tenant"], "globex", "{body}");
    }
    assert_eq!(
        state.lock().expect("lock").2,
        1,
        "the keys are fetched once and cached"
    );
    // The issuer fails. Unknown kids do not make the server hammer it (a
    // refetch for them waits 30 s after the last fetch).
    state.lock().expect("lock").1 = 500;
    for _ in 0..3 {
        let (status, body) = run(jwt(
            Algorithm::RS256,
            "rsa.pem",
            Some("rotated"),
            &good_claims("erin", "globex"),
        ))
        .await;
        assert_eq!(status, 401, "{body}");
        assert!(body.to_string().contains("unknown key id"), "{body}");
    }
    assert_eq!(state.lock().expect("lock").2, 1, "no refetch per bad token");
    // Past `jwks_refresh_s` the keys are refreshed; the refresh fails, and
    // the last good keys still verify.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    for i in 0..3 {
        // New tokens each time (a token verified once is not checked again).
        let fresh = jwt(
            Algorithm::RS256,
            "rsa.pem",
            Some("rsa-1"),
            &good_claims(&format!("frank-{i}"), "globex"),
        );
        let (status, body) = run(fresh).await;
        assert_eq!(status, 200, "the last good keys still verify: {body}");
    }
    let (status, body) = run(good).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        state.lock().expect("lock").2,
        2,
        "one refresh attempt, not one per request"
    );
    let log = std::fs::read_to_string(dir.path().join("server.log")).expect("log");
    assert!(
        log.contains("keeping the last good keys"),
        "the log says so"
    );
}
