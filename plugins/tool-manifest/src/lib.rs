//! `tool-manifest`: the tools a request may use come from the operator's
//! config, not from the prompt. Each tool may be limited to some `roles`
//! and `tenants` (of the verified caller); a tool without such a list is
//! for everyone. The model never sees a tool it may not call.

use reins_sdk::constraints::{Access, Guest, Tool};
use reins_sdk::{CallContext, describe_value};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    tools: Vec<ToolConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolConfig {
    name: String,
    #[serde(default)]
    description: String,
    /// JSON Schema of the arguments: a table, or JSON text.
    #[serde(default = "any_object")]
    parameters: Value,
    /// `read`, `write` or `irreversible`.
    access: String,
    roles: Option<Vec<String>>,
    tenants: Option<Vec<String>>,
}

fn any_object() -> Value {
    serde_json::json!({"type": "object"})
}

/// One checked tool of the config, ready to hand out.
struct Prepared {
    tool: Tool,
    roles: Option<Vec<String>>,
    tenants: Option<Vec<String>>,
}

/// The set-up: the config parsed and every tool checked, once (in `init`,
/// or on the first call with this config).
static SETUP: reins_sdk::Setup<Vec<Prepared>> = reins_sdk::Setup::new();

fn prepare(config_text: &str) -> Result<Vec<Prepared>, String> {
    let config: Config = reins_sdk::parse_config_text(config_text)?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (i, t) in config.tools.into_iter().enumerate() {
        let at = format!("config.tools[{i}]");
        if t.name.trim().is_empty() {
            return Err(format!("{at}.name: must not be empty"));
        }
        if !seen.insert(t.name.clone()) {
            return Err(format!("{at}.name: the tool {:?} is listed twice", t.name));
        }
        let access = Access::parse(&t.access).map_err(|e| format!("{at}.access: {e}"))?;
        let parameters = match t.parameters {
            Value::String(text) => serde_json::from_str::<Value>(&text)
                .map_err(|e| format!("{at}.parameters: the string is not valid JSON: {e}"))?,
            p => p,
        };
        if !parameters.is_object() {
            return Err(format!(
                "{at}.parameters: must be a JSON Schema object, got {}",
                describe_value(&parameters)
            ));
        }
        out.push(Prepared {
            tool: Tool {
                name: t.name,
                description: t.description,
                parameters: parameters.to_string(),
                access,
            },
            roles: t.roles,
            tenants: t.tenants,
        });
    }
    Ok(out)
}

struct ToolManifest;

impl Guest for ToolManifest {
    fn tools(ctx: CallContext) -> Result<Vec<Tool>, String> {
        let prepared = SETUP.get(&ctx.config, prepare)?;
        // The verified caller's roles and tenant, never the body's metadata.
        let roles = &ctx.caller.roles;
        let tenant = ctx.caller.tenant.as_ref();
        Ok(prepared
            .iter()
            .filter(|p| p.roles.as_ref().is_none_or(|allowed| roles.iter().any(|r| allowed.contains(r))))
            .filter(|p| p.tenants.as_ref().is_none_or(|allowed| tenant.is_some_and(|x| allowed.contains(x))))
            .map(|p| p.tool.clone())
            .collect())
    }
}

impl reins_sdk::init::Guest for ToolManifest {
    fn init(config: String) -> Result<(), String> {
        SETUP.init(&config, prepare)
    }
}

reins_sdk::export_init!(ToolManifest);
reins_sdk::export_constraints!(ToolManifest);
