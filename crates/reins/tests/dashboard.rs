//! The Grafana dashboard (`deploy/grafana/reins.json`) against a real
//! `reins serve`: the file is a dashboard, and after runs that repair, fail
//! a validator, escalate to a human and spend a budget, every metric its
//! queries name is in `GET /metrics`, with every label they select or group
//! by. A panel never stays empty for a metric that was renamed, never
//! recorded, or lost a label.

use reins_testing::config::Config;
use reins_testing::model::{Step, Upstream, rate_limited};
use reins_testing::{plugins, server};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A selector: label, operator (`=`, `!=`, `=~`, `!~`), value.
type Selector = (String, String, String);

/// One PromQL query of the dashboard, as far as the test reads it.
#[derive(Debug, Default)]
struct Query {
    /// Where it is (panel title and refId, or the variable).
    place: String,
    expr: String,
    /// Metric names, `_bucket` / `_sum` / `_count` stripped, each with the
    /// selectors written right after it (`label`, `op`, `value`).
    metrics: Vec<(String, Vec<Selector>)>,
    /// Labels of `by (...)` and `label_values(.., label)`: every metric of
    /// the query must carry them.
    labels: BTreeSet<String>,
}

/// Every series of the scrape: metric name (suffixes stripped, as in
/// [`Query::metrics`]) to the label sets of its lines.
type Scrape = BTreeMap<String, Vec<BTreeMap<String, String>>>;

fn dashboard() -> Value {
    let path = plugins::repo_root().join("deploy/grafana/reins.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The name without the suffix a summary or histogram line adds.
fn base_name(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `{a="x", b=~"y"}` at the start of `s`: the selectors and the length read.
fn selectors(s: &str) -> (Vec<Selector>, usize) {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 1;
    loop {
        while i < b.len() && (b[i] == b' ' || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() || b[i] == b'}' {
            return (out, i + 1);
        }
        let start = i;
        while i < b.len() && is_ident(b[i] as char) {
            i += 1;
        }
        let label = s[start..i].to_string();
        let op_start = i;
        while i < b.len() && matches!(b[i], b'=' | b'!' | b'~') {
            i += 1;
        }
        let op = s[op_start..i].trim().to_string();
        assert!(
            i < b.len() && b[i] == b'"',
            "selector `{label}` without a quoted value in {s}"
        );
        i += 1;
        let value_start = i;
        while i < b.len() && b[i] != b'"' {
            if b[i] == b'\\' {
                i += 1;
            }
            i += 1;
        }
        out.push((label, op, s[value_start..i].to_string()));
        i += 1;
    }
}

/// What a PromQL expression names: metrics with their selectors, and the
/// labels it groups by.
fn parse(place: String, expr: &str) -> Query {
    let mut q = Query {
        place,
        expr: expr.to_string(),
        ..Query::default()
    };
    // Brackets and quotes must balance, or Grafana shows an error, not data.
    let mut depth: Vec<char> = Vec::new();
    let mut quoted = false;
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '\\') => {
                chars.next();
            }
            (true, '"') | (false, '"') => quoted = !quoted,
            (false, '(' | '[' | '{') => depth.push(c),
            (false, ')' | ']' | '}') => {
                let open = depth.pop();
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                assert_eq!(open, Some(want), "unbalanced `{c}` in {expr}");
            }
            _ => {}
        }
    }
    assert!(
        depth.is_empty() && !quoted,
        "unbalanced brackets or quotes in {expr}"
    );

    let mut rest = expr;
    let mut offset = 0;
    while let Some(at) = rest.find("reins_") {
        let abs = offset + at;
        let before = expr[..abs].chars().next_back();
        let len = expr[abs..]
            .find(|c: char| !is_ident(c))
            .unwrap_or(expr.len() - abs);
        let name = &expr[abs..abs + len];
        let mut next = abs + len;
        if before.is_none_or(|c| !is_ident(c)) {
            let sel = if expr[next..].starts_with('{') {
                let (sel, read) = selectors(&expr[next..]);
                next += read;
                sel
            } else {
                Vec::new()
            };
            q.metrics.push((base_name(name).to_string(), sel));
        }
        offset = next;
        rest = &expr[next..];
    }
    for (i, _) in expr.match_indices("by (") {
        let inside = &expr[i + 4..];
        let end = inside.find(')').expect("`by (` closes");
        q.labels.extend(
            inside[..end]
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    if let Some(args) = expr.strip_prefix("label_values(") {
        let args = args.strip_suffix(')').expect("label_values(..) closes");
        if let Some((_, label)) = args.rsplit_once(',') {
            q.labels.insert(label.trim().to_string());
        }
    }
    q
}

/// Checks the dashboard's shape and returns every query in it.
fn queries(d: &Value) -> Vec<Query> {
    assert!(
        d["uid"].as_str().is_some_and(|u| !u.is_empty()),
        "dashboard uid"
    );
    assert!(
        d["title"].as_str().is_some_and(|t| !t.is_empty()),
        "dashboard title"
    );
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {}",
        d["schemaVersion"]
    );
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable `{name}`"))
    };
    let ds = var("DS_PROMETHEUS");
    assert_eq!(ds["type"], "datasource", "{ds}");
    assert_eq!(ds["query"], "prometheus", "{ds}");
    let datasource = json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});

    let mut out = Vec::new();
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"], datasource, "variable {}", v["name"]);
        let text = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .expect("variable query");
        assert_eq!(
            v["definition"].as_str(),
            Some(text),
            "variable {}",
            v["name"]
        );
        out.push(parse(format!("variable `{}`", v["name"]), text));
    }
    let pipeline = var("pipeline");
    assert_eq!(pipeline["type"], "query");
    assert_eq!(pipeline["includeAll"], true, "{pipeline}");

    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    let mut kinds = 0;
    for p in panels {
        let title = p["title"].as_str().expect("panel title");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "id of {title}"
        );
        let grid = &p["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        assert!(
            x.zip(w).is_some_and(|(x, w)| w > 0 && x + w <= 24) && grid["h"].as_u64().is_some(),
            "gridPos of {title}: {grid}"
        );
        if p["type"] == "row" {
            continue;
        }
        kinds += 1;
        assert!(titles.insert(title), "two panels titled {title}");
        assert_eq!(p["datasource"], datasource, "datasource of {title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            let r = t["refId"].as_str().expect("refId");
            assert!(refs.insert(r), "{title}: refId {r} twice");
            assert_eq!(t["datasource"], datasource, "{title} {r}");
            let expr = t["expr"].as_str().expect("expr");
            let q = parse(format!("panel `{title}` {r}"), expr);
            assert!(!q.metrics.is_empty(), "{title} {r} names no metric: {expr}");
            out.push(q);
        }
    }
    assert!(kinds >= 8, "only {kinds} panels");
    // What the issue asks the dashboard to show.
    let shown: BTreeSet<&str> = out
        .iter()
        .flat_map(|q| q.metrics.iter().map(|(m, _)| m.as_str()))
        .collect();
    for m in [
        "reins_requests_total",
        "reins_repair_attempts_per_run",
        "reins_repair_successes_total",
        "reins_plugin_violations_total",
        "reins_plugin_call_seconds",
        "reins_breaker_state",
        "reins_approvals_pending",
        "reins_budget_used",
    ] {
        assert!(shown.contains(m), "no panel shows {m}");
    }
    out
}

/// The Prometheus text format, parsed into series by name.
fn parse_scrape(text: &str) -> Scrape {
    let mut out = Scrape::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let mut labels = BTreeMap::new();
        if line[end..].starts_with('{') {
            let (sel, _) = selectors(&line[end..]);
            for (l, op, v) in sel {
                assert_eq!(op, "=", "{line}");
                labels.insert(l, v);
            }
        }
        out.entry(base_name(&line[..end]).to_string())
            .or_default()
            .push(labels);
    }
    out
}

/// What `queries` would miss in `scrape`: one line per problem.
fn missing(queries: &[Query], scrape: &Scrape) -> Vec<String> {
    let mut out = Vec::new();
    for q in queries {
        for (metric, sel) in &q.metrics {
            let Some(series) = scrape.get(metric) else {
                out.push(format!("{}: `{metric}` is not in /metrics", q.place));
                continue;
            };
            // `le` and `quantile` belong to one form (histogram or summary)
            // each; the dashboard queries both forms.
            for label in q.labels.iter().filter(|l| *l != "le") {
                if !series.iter().any(|s| s.contains_key(label)) {
                    out.push(format!("{}: no `{metric}` has label `{label}`", q.place));
                }
            }
            for (label, op, value) in sel.iter().filter(|(l, ..)| l != "quantile" && l != "le") {
                let fits = series.iter().any(|s| match s.get(label) {
                    None => false,
                    Some(v) if op == "=" && !value.contains('$') => v == value,
                    Some(_) => true,
                });
                if !fits {
                    out.push(format!(
                        "{}: no `{metric}` series matches {label}{op}\"{value}\"",
                        q.place
                    ));
                }
            }
        }
    }
    out
}

/// The dashboard's file alone: its shape, and names documented in
/// `metric_names.rs` (where dashboards are told to look them up).
#[test]
fn dashboard_is_a_grafana_dashboard_over_documented_metrics() {
    let queries = queries(&dashboard());
    let names_rs = std::fs::read_to_string(
        plugins::repo_root().join("crates/reins-runtime/src/metric_names.rs"),
    )
    .expect("metric_names.rs");
    for q in &queries {
        for (m, _) in &q.metrics {
            assert!(
                names_rs.contains(&format!("\"{m}\"")),
                "{}: `{m}` is not a constant of reins_runtime::metric_names ({})",
                q.place,
                q.expr
            );
        }
    }
}

/// `expr` from the parser, on what the dashboard writes.
#[test]
fn queries_are_read_as_grafana_would_send_them() {
    let q = parse(
        "t".into(),
        r#"sum(rate(reins_repair_successes_total{pipeline=~"$pipeline"}[5m])) / sum by (plugin, le) (rate(reins_run_errors_total{pipeline=~"$pipeline", kind="validation_failed"}[5m]))"#,
    );
    let names: Vec<&str> = q.metrics.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        names,
        ["reins_repair_successes_total", "reins_run_errors_total"]
    );
    assert_eq!(
        q.metrics[1].1[1],
        ("kind".into(), "=".into(), "validation_failed".into())
    );
    assert_eq!(q.labels, BTreeSet::from(["le".into(), "plugin".into()]));
    let q = parse("v".into(), "label_values(reins_requests_total, pipeline)");
    assert_eq!(q.metrics[0].0, "reins_requests_total");
    assert!(q.labels.contains("pipeline"));
    assert_eq!(
        parse("s".into(), "reins_plugin_call_seconds_bucket").metrics[0].0,
        "reins_plugin_call_seconds"
    );
    let scrape = parse_scrape(
        "# TYPE x summary\nreins_x{a=\"1\",quantile=\"0.5\"} 2\nreins_x_sum{a=\"1\"} 3\nreins_y 4\n",
    );
    assert_eq!(scrape["reins_x"].len(), 2);
    assert_eq!(scrape["reins_y"], vec![BTreeMap::new()]);
}

const BAD: &str = "Put it all in: guaranteed returns within a year.";

/// Runs that feed every panel: a repair that succeeds, a validator that
/// fails a run for good, two refunds a gate escalates (spending the
/// tenant's budget), one of them approved.
#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboard_queries_is_served() {
    let queries = queries(&dashboard());

    // An HTTP upstream (scripted providers have no breaker) that pushes back once.
    let upstream = Upstream::steps(vec![
        rate_limited("retry-after-ms", "200"),
        Step::Answer("Hello from upstream.".into()),
    ])
    .await;
    let dir = plugins::plugins_dir(&["blocklist", "tool-manifest", "spend-limit"]);
    plugins::sidecar(dir.path(), "tool-manifest", plugins::REFUND_TOOL);
    plugins::sidecar(
        dir.path(),
        "spend-limit",
        "[config]\nescalate_above = 100\n",
    );
    let config = Config::new()
        .plugins_dir(".")
        .test_cache()
        .table("[state]\nkind = \"memory\"\n")
        .scripted(
            "fixable",
            &format!(
                r#"[ {{ attempt = 1, content = "{BAD}" }}, {{ attempt = 2, content = "Spread it out; no return is certain." }} ]"#
            ),
        )
        .scripted("stubborn", &format!(r#"[ "{BAD}", "{BAD}" ]"#))
        .scripted(
            "agent",
            r#"[ { match = "refund", tool_calls = [ { name = "issue_refund", arguments = { order = "A-1", amount = 500 } } ] } ]"#,
        )
        .openai("upstream", &upstream.base_url(), "chat-model", "max_retries = 2")
        .table(
            r#"[pipelines.chat]
model = "upstream"

[pipelines.advice]
model = "fixable"
validators = ["blocklist"]
repair = { max_attempts = 2 }

[pipelines.stubborn]
model = "stubborn"
validators = ["blocklist"]
repair = { max_attempts = 2 }

[pipelines.refunds]
model = "agent"
constraints = "tool-manifest"
gates = ["spend-limit"]
"#,
        )
        .write(dir.path());
    let served = server::serve(&config);
    let base = served.base.clone();
    let client = reqwest::Client::new();
    let run = |pipeline: &str, input: &str| {
        let req = client
            .post(format!("{base}/v1/pipelines/{pipeline}/runs"))
            .json(&json!({"input": input}));
        async move {
            let v: Value = req
                .send()
                .await
                .expect("post run")
                .json()
                .await
                .expect("json");
            v
        }
    };

    let chat = run("chat", "hello").await;
    assert_eq!(chat["status"], "completed", "{chat}");
    let repaired = run("advice", "where should my savings go?").await;
    assert_eq!(repaired["status"], "completed", "{repaired}");
    assert_eq!(
        repaired["attempts"].as_array().map(Vec::len),
        Some(2),
        "{repaired}"
    );
    let failed = run("stubborn", "where should my savings go?").await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let mut approvals = Vec::new();
    for _ in 0..2 {
        let held = run("refunds", "please refund order A-1").await;
        assert_eq!(held["status"], "awaiting_approval", "{held}");
        approvals.push(
            held["approvals"][0]
                .as_str()
                .expect("approval id")
                .to_string(),
        );
    }
    let decided: Value = client
        .post(format!("{base}/v1/approvals/{}", approvals[0]))
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .expect("decide")
        .json()
        .await
        .expect("json");
    assert_eq!(decided["approval"]["status"], "approved", "{decided}");

    // The pending approvals are recounted from the store every few seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (text, problems) = loop {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text");
        let scrape = parse_scrape(&text);
        let mut problems = missing(&queries, &scrape);
        let waiting = scrape
            .get("reins_approvals_pending")
            .into_iter()
            .flatten()
            .any(|s| s.get("pipeline").is_some_and(|p| p == "refunds"))
            && text
                .lines()
                .any(|l| l == r#"reins_approvals_pending{pipeline="refunds"} 1"#);
        if !waiting {
            problems.push("reins_approvals_pending{pipeline=\"refunds\"} is not 1".into());
        }
        if problems.is_empty() || Instant::now() > deadline {
            break (text, problems);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        problems.is_empty(),
        "panels would be empty:\n{}\n\n/metrics:\n{text}",
        problems.join("\n")
    );

    // The new series say what happened, not just that they exist.
    let value = |prefix: &str, needles: &[&str]| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix) && needles.iter().all(|n| l.contains(n)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} {needles:?} in\n{text}"))
    };
    // The advice run's first attempt and both of the stubborn run's.
    assert_eq!(
        value(
            "reins_plugin_violations_total{",
            &[r#"pipeline="advice""#, r#"plugin="blocklist""#]
        ),
        1.0
    );
    assert_eq!(
        value(
            "reins_plugin_violations_total{",
            &[r#"pipeline="stubborn""#, r#"plugin="blocklist""#]
        ),
        2.0
    );
    // The upstream's 429.
    assert_eq!(
        value(
            "reins_provider_saturations_total{",
            &[r#"provider="upstream""#]
        ),
        1.0
    );
    assert_eq!(
        value("reins_breaker_state{", &[r#"provider="upstream""#]),
        0.0
    );
    // Two refunds of 500.00 reserved in cents, in the anonymous tenant's budget.
    assert_eq!(
        value(
            "reins_budget_used{",
            &[r#"plugin="spend-limit""#, r#"key="spend:default""#]
        ),
        100_000.0
    );
}
