//! `spend-limit`: money an agent moves must be a sane amount, large amounts
//! need a human, and each tenant has a daily budget.
//!
//! The budget lives in the host (`counter-add`), not in the plugin: every
//! call may run in a fresh instance, and many hosts may share one store. The
//! amount is reserved when the action is allowed or escalated (an escalated
//! payment that a human approves must already count), and released again
//! when the reservation would overrun the budget.

use reins_sdk::gate::{Action, Decision, Guest};
use reins_sdk::{CallContext, Level, describe_value, log, pointer};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// The argument holding the amount: a top-level key, or a JSON Pointer
    /// (`/payment/amount`).
    amount_field: String,
    /// Amounts above this escalate to a human.
    escalate_above: f64,
    /// Most a tenant may spend in `window_seconds`.
    daily_budget: f64,
    /// The budget's sliding window.
    window_seconds: u32,
    /// Only check these tools (default: every action that has the field).
    tools: Option<Vec<String>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            amount_field: "amount".to_string(),
            escalate_above: 1000.0,
            daily_budget: 5000.0,
            window_seconds: 86_400,
            tools: None,
        }
    }
}

struct SpendLimit;

/// The set-up: the config, parsed and checked once (in `init`, or on the
/// first call with this config).
static SETUP: reins_sdk::Setup<Config> = reins_sdk::Setup::new();

fn parse(config_text: &str) -> Result<Config, String> {
    let config: Config = reins_sdk::parse_config_text(config_text)?;
    if config.daily_budget.is_nan() || config.daily_budget < 0.0 {
        return Err("config.daily_budget: must be a number >= 0".to_string());
    }
    Ok(config)
}

impl Guest for SpendLimit {
    fn check(ctx: CallContext, action: Action) -> Result<Decision, String> {
        let config = SETUP.get(&ctx.config, parse)?;
        if let Some(tools) = &config.tools
            && !tools.contains(&action.tool) {
                return Ok(Decision::Allow);
            }
        let arguments = action.arguments_value()?;
        let (field, found) = if config.amount_field.starts_with('/') {
            (config.amount_field.clone(), pointer::resolve(&arguments, &config.amount_field))
        } else {
            (format!("/{}", pointer::escape(&config.amount_field)), arguments.get(&config.amount_field))
        };
        let Some(raw) = found else {
            return Ok(Decision::Allow);
        };
        let name = format!("arguments{}", field.replace('/', "."));
        let amount = match raw {
            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            other => {
                return Ok(Decision::Deny(format!(
                    "{name} must be a number like 125.50, got {}",
                    describe_value(other)
                )));
            }
        };
        if !amount.is_finite() {
            return Ok(Decision::Deny(format!("{name} must be a finite number, got {raw}")));
        }
        if amount < 0.0 {
            return Ok(Decision::Deny(format!(
                "{name} is negative ({raw}); amounts must be positive, use the matching refund or reversal tool instead"
            )));
        }
        let cents = (amount * 100.0).round();
        let budget_cents = (config.daily_budget * 100.0).round();
        if cents > budget_cents {
            return Ok(Decision::Deny(format!(
                "{name} ({raw}) is more than the whole daily budget of {}",
                money(budget_cents as i64)
            )));
        }
        if cents == 0.0 {
            return Ok(Decision::Allow);
        }
        let cents = cents as i64;
        // The verified tenant (the host fills it from `metadata` only on a
        // pipeline that trusts metadata): a caller cannot pick its budget.
        let tenant = ctx.caller.tenant.clone().unwrap_or_else(|| "default".to_string());
        let key = format!("spend:{tenant}");
        let total = reins_sdk::counter_add(&key, cents, config.window_seconds);
        if total as f64 > budget_cents {
            reins_sdk::counter_add(&key, -cents, config.window_seconds);
            let spent = total - cents;
            log(Level::Info, &format!("tenant {tenant}: denied {} over budget", money(cents)));
            return Ok(Decision::Deny(format!(
                "the daily budget of tenant {tenant} would be exceeded: {} already spent of {}, this {} would make {}; \
                 at most {} is left",
                money(spent),
                money(budget_cents as i64),
                money(cents),
                money(total),
                money((budget_cents as i64 - spent).max(0))
            )));
        }
        if amount > config.escalate_above {
            return Ok(Decision::Escalate(format!(
                "{name} ({raw}) is above the approval threshold of {}; a human must approve it",
                config.escalate_above
            )));
        }
        Ok(Decision::Allow)
    }
}

impl reins_sdk::init::Guest for SpendLimit {
    fn init(config: String) -> Result<(), String> {
        SETUP.init(&config, parse)
    }
}

reins_sdk::export_gate!(SpendLimit);
reins_sdk::export_init!(SpendLimit);

/// Cents as `1234.50`.
fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}
