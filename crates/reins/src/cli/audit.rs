//! `reins audit`: read and check the audit log in the config's `[state]`
//! store directly, so it works with the server down (and from any host on a
//! PostgreSQL store).

use crate::config::Config;
use crate::state::{AuditFilter, AuditRow, StateStore, audit::parse_time, now_ms};
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Print rows, oldest first: seq, time, subject, tenant, action, target, outcome, detail.
    List(ListArgs),
    /// Print new rows as they are appended (polls the store) until interrupted.
    Follow(FollowArgs),
    /// Every matching row as one JSON object per line, on stdout.
    Export(ListArgs),
    /// Check the hash chain: exit 0 and "audit log intact: N rows", or exit 1
    /// naming the first row that was edited or follows a removed one.
    Verify(ConfigArg),
}

#[derive(clap::Args)]
pub struct ConfigArg {
    /// The configuration whose `[state]` holds the log.
    #[arg(short, long, default_value = "reins.toml")]
    config: PathBuf,
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Rows at or after this time: milliseconds since the epoch, or an age (90s, 15m, 2h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Rows at or before this time (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
    /// An action (`gate.deny`) or a prefix ending in `.` (`gate.`).
    #[arg(long)]
    action: Option<String>,
    /// Rows after this seq.
    #[arg(long)]
    after: Option<i64>,
    /// At most this many rows (list: default 100; export: all).
    #[arg(long)]
    limit: Option<u32>,
}

#[derive(clap::Args)]
pub struct FollowArgs {
    #[command(flatten)]
    list: ListArgs,
    /// How often to look for new rows, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

pub async fn run(cmd: AuditCommand) -> anyhow::Result<u8> {
    match cmd {
        AuditCommand::List(args) => {
            let (store, mut filter) = open(&args).await?;
            filter.limit = args.limit.unwrap_or(AuditFilter::DEFAULT_LIMIT);
            print(&store.audit_list(&filter).await?, false)?;
        }
        AuditCommand::Export(args) => {
            let (store, mut filter) = open(&args).await?;
            let mut left = args.limit.map(u64::from);
            loop {
                filter.limit = AuditFilter::MAX_LIMIT;
                let mut rows = store.audit_list(&filter).await?;
                if let Some(n) = left {
                    rows.truncate(usize::try_from(n).unwrap_or(usize::MAX));
                    left = Some(n - rows.len() as u64);
                }
                print(&rows, true)?;
                match rows.last() {
                    Some(last)
                        if rows.len() == AuditFilter::MAX_LIMIT as usize && left != Some(0) =>
                    {
                        filter.after = Some(last.seq)
                    }
                    _ => break,
                }
            }
        }
        AuditCommand::Follow(args) => {
            let (store, mut filter) = open(&args.list).await?;
            filter.limit = AuditFilter::MAX_LIMIT;
            loop {
                let rows = store.audit_list(&filter).await?;
                print(&rows, false)?;
                match rows.last() {
                    Some(last) => filter.after = Some(last.seq),
                    None => {
                        tokio::time::sleep(Duration::from_millis(args.interval_ms.max(10))).await
                    }
                }
            }
        }
        AuditCommand::Verify(args) => {
            let store = store(&args).await?;
            let report = store.audit_verify().await?;
            println!("{report}");
            return Ok(if report.is_intact() { 0 } else { 1 });
        }
    }
    Ok(0)
}

async fn store(args: &ConfigArg) -> anyhow::Result<Arc<dyn StateStore>> {
    let config = Config::from_file(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    crate::state::open(&config.state, &config.base_dir)
        .await
        .with_context(|| format!("opening the [state] store of {}", args.config.display()))
}

async fn open(args: &ListArgs) -> anyhow::Result<(Arc<dyn StateStore>, AuditFilter)> {
    let now = now_ms();
    let time = |flag: &str, v: &Option<String>| {
        v.as_deref()
            .map(|t| {
                parse_time(t, now).with_context(|| {
                    format!("--{flag} {t}: milliseconds or an age like 15m, 2h, 7d")
                })
            })
            .transpose()
    };
    let filter = AuditFilter {
        since_ms: time("since", &args.since)?,
        until_ms: time("until", &args.until)?,
        tenant: args.tenant.clone(),
        action: args.action.clone(),
        after: args.after,
        limit: 0,
    };
    Ok((store(&args.config).await?, filter))
}

/// Rows as JSON lines (`json`), else one tab-separated line each.
fn print(rows: &[AuditRow], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for r in rows {
        if json {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        } else {
            let e = &r.entry;
            writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                r.seq,
                e.time_ms,
                e.subject,
                e.tenant.as_deref().unwrap_or("-"),
                e.action,
                e.target,
                e.outcome,
                e.detail
            )?;
        }
    }
    out.flush()?;
    Ok(())
}
