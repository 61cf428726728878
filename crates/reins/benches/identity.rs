//! What resolving the caller costs on every request (see BENCHMARKS.md,
//! "Identity"): one harnessed request (`POST /v1/pipelines/extract/runs`: a
//! scripted model, the JSON Schema check, a `normalize-text` plugin call),
//! through the whole router without a socket, with no authentication (open
//! mode), with a static bearer token (one of 50 configured) and with an
//! EdDSA JWT verified against a JWKS file (keys cached). The three run
//! interleaved, round after round, so drift hits them alike.
//!
//! cargo bench -p reins --bench identity

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reins::Host;
use reins::server::{AppState, ServerSettings};
use reins_testing::{bench, plugins, server};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const ROUNDS: usize = 7;

fn support(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/security_support")
        .join(name)
}

async fn state(dir: &Path, plugins_dir: &Path, server_section: &str) -> AppState {
    let config = format!(
        r#"plugins_dir = {plugins:?}
[state]
kind = "memory"
[server]
{server_section}
[providers.replay]
kind = "scripted"
responses = ['{{"total": 12}}']
[pipelines.extract]
model = "replay"
normalizers = ["normalize-text"]
schema = {{ type = "object", required = ["total"], properties = {{ total = {{ type = "number" }} }} }}
"#,
        plugins = plugins_dir.display().to_string()
    );
    let host = Host::builder()
        .config_str(&config, dir)
        .build()
        .await
        .expect("host");
    let settings = ServerSettings::from_config(host.boot()).expect("[server]");
    AppState::new(Arc::new(host), &settings).expect("state")
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let plugins = plugins::plugins_dir(&["normalize-text"]);
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::copy(support("jwks.json"), dir.path().join("jwks.json")).expect("jwks");

    let mut tokens = String::new();
    for i in 0..50 {
        let secret = format!("bench-token-{i}");
        tokens.push_str(&format!(
            "[[server.tokens]]\nname = \"t{i}\"\nsha256 = \"{}\"\nscopes = [\"run\"]\nclaims = {{ tenant = \"acme\", roles = [\"support\"] }}\n",
            hex::encode(Sha256::digest(secret.as_bytes()))
        ));
    }
    let jwt_section = "[server.jwt]\nissuer = \"https://id.bench\"\naudience = \"reins\"\njwks_file = \"jwks.json\"\n";
    let open = rt.block_on(state(dir.path(), plugins.path(), ""));
    let with_tokens = rt.block_on(state(dir.path(), plugins.path(), &tokens));
    let with_jwt = rt.block_on(state(dir.path(), plugins.path(), jwt_section));

    let now = jsonwebtoken::get_current_timestamp();
    let key = EncodingKey::from_ed_pem(&std::fs::read(support("ed25519.pem")).expect("key"))
        .expect("pem");
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("ed-1".into());
    let jwt = encode(
        &header,
        &json!({"iss": "https://id.bench", "aud": "reins", "sub": "bench", "tenant": "acme", "exp": now + 3600}),
        &key,
    )
    .expect("sign");
    let token_header = "Bearer bench-token-37".to_string();
    let jwt_header = format!("Bearer {jwt}");

    let body = json!({"input": "Total due: 12 EUR"})
        .to_string()
        .into_bytes();
    let sampling = bench::Sampling {
        warmup: 200,
        batch: 50,
        budget: Duration::from_secs(2),
    };
    let measure = |state: &AppState, auth: Option<&str>| {
        let headers: Vec<(&str, &str)> =
            auth.map(|a| vec![("authorization", a)]).unwrap_or_default();
        bench::median_ns(&sampling, || {
            let (status, _, _) = rt.block_on(server::call(
                state,
                "POST",
                "/v1/pipelines/extract/runs",
                &headers,
                Some(body.clone()),
                1 << 20,
            ));
            assert_eq!(status, 200);
        })
    };
    let mut rows: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        rows[0].push(measure(&open, None));
        rows[1].push(measure(&with_tokens, Some(&token_header)));
        rows[2].push(measure(&with_jwt, Some(&jwt_header)));
    }
    let medians: Vec<f64> = rows
        .iter_mut()
        .map(|v| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        })
        .collect();
    let base = medians[0];
    println!("| request | µs per request (median of {ROUNDS} rounds) | vs no authentication |");
    println!("|---|---:|---:|");
    let names = [
        "no authentication (open mode)",
        "static bearer token (1 of 50)",
        "EdDSA JWT, JWKS file (keys cached)",
    ];
    for (name, m) in names.iter().zip(medians) {
        println!(
            "| {name} | {:.1} | {:+.1} % |",
            m / 1000.0,
            (m / base - 1.0) * 100.0
        );
    }
}
