//! `tool-rules`: which tools an agent may call, and where their path
//! arguments may point, decided by the operator rather than by whatever the
//! MCP servers behind the gateway happen to offer.
//!
//! An MCP server exposes everything it can do (`fs__move_file`,
//! `db__drop_table`); an operator usually wants a subset, part of it only
//! with a human's approval. Rules are tried in order and the first match
//! decides, as in a firewall, so a narrow exception goes above a broad rule.
//!
//! Path confinement runs before the rules, so no `allow` rule can let a path
//! out. It is lexical because a plugin cannot see the filesystem: `.` and
//! `..` are resolved on the text, which a symlink inside an allowed root can
//! still defeat (the kernel follows `link` before it applies `..`). Confine
//! the MCP server itself too (its own allowed directories): this gate is the
//! second lock, the one the operator holds.

use reins_sdk::gate::{Access, Action, Decision, Guest};
use reins_sdk::{CallContext, describe_value, pointer};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// First match decides.
    rules: Vec<RuleConfig>,
    paths: Option<PathsConfig>,
    /// What happens to an action no rule matches (`allow` when absent, so
    /// that a config of a few `deny` rules reads as a blocklist).
    default: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    /// Globs; absent matches every tool.
    tools: Option<Vec<String>>,
    /// Access levels; absent matches every level.
    access: Option<Vec<String>>,
    decision: String,
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathsConfig {
    /// Globs; absent confines every tool that has one of `arguments`.
    tools: Option<Vec<String>>,
    /// Argument names (or JSON Pointers, `/options/path`) that hold a path
    /// or an array of paths.
    arguments: Vec<String>,
    /// The roots a path must be equal to or inside.
    allow: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Allow,
    Deny,
    Escalate,
}

impl Verdict {
    fn parse(s: &str, at: &str) -> Result<Self, String> {
        match s {
            "allow" => Ok(Verdict::Allow),
            "deny" => Ok(Verdict::Deny),
            "escalate" => Ok(Verdict::Escalate),
            other => Err(format!("{at}: unknown decision {other:?}; write \"allow\", \"deny\" or \"escalate\"")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Escalate => "escalate",
        }
    }
}

/// One checked rule. Keeps where it came from (`config.rules[2]`) because
/// the default reason has to tell the operator which rule fired.
struct Rule {
    at: String,
    tools: Option<Vec<String>>,
    access: Option<Vec<Access>>,
    verdict: Verdict,
    reason: Option<String>,
}

/// Path confinement with its roots already normalized, so a call compares
/// normalized paths with normalized roots (`/srv/data/` in the config still
/// means `/srv/data`).
struct Paths {
    tools: Option<Vec<String>>,
    arguments: Vec<String>,
    roots: Vec<String>,
}

struct Rules {
    rules: Vec<Rule>,
    paths: Option<Paths>,
    default: Verdict,
}

/// The set-up: the config parsed and checked once (in `init`, or on the
/// first call with this config), so a bad rule refuses the plugin at load
/// instead of surfacing on the first matching call.
static SETUP: reins_sdk::Setup<Rules> = reins_sdk::Setup::new();

fn prepare(config_text: &str) -> Result<Rules, String> {
    let config: Config = reins_sdk::parse_config_text(config_text)?;
    let mut rules = Vec::with_capacity(config.rules.len());
    for (i, r) in config.rules.into_iter().enumerate() {
        let at = format!("config.rules[{i}]");
        let tools = globs(r.tools, &format!("{at}.tools"), "the rule")?;
        let access = match r.access {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(format!(
                    "{at}.access: the list is empty, so the rule matches nothing; list levels \
                     (\"read\", \"write\", \"irreversible\") or leave access out to match every level"
                ));
            }
            Some(list) => Some(
                list.iter()
                    .enumerate()
                    .map(|(j, a)| Access::parse(a).map_err(|e| format!("{at}.access[{j}]: {e}")))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let verdict = Verdict::parse(&r.decision, &format!("{at}.decision"))?;
        if r.reason.as_ref().is_some_and(|s| s.trim().is_empty()) {
            return Err(format!("{at}.reason: must not be empty; leave it out to get a reason naming the rule"));
        }
        rules.push(Rule { at, tools, access, verdict, reason: r.reason });
    }
    let paths = config.paths.map(prepare_paths).transpose()?;
    let default = match &config.default {
        None => Verdict::Allow,
        Some(d) => Verdict::parse(d, "config.default")?,
    };
    Ok(Rules { rules, paths, default })
}

fn prepare_paths(p: PathsConfig) -> Result<Paths, String> {
    let tools = globs(p.tools, "config.paths.tools", "confinement")?;
    if p.arguments.is_empty() {
        return Err("config.paths.arguments: the list is empty, so no argument is checked; name the arguments \
                    that hold paths, like [\"path\", \"source\", \"destination\"]"
            .to_string());
    }
    for (i, name) in p.arguments.iter().enumerate() {
        if name.trim().is_empty() {
            return Err(format!(
                "config.paths.arguments[{i}]: must not be empty; write an argument name like \"path\" \
                 or a JSON Pointer like \"/options/path\""
            ));
        }
    }
    if p.allow.is_empty() {
        return Err("config.paths.allow: the list is empty, so every path would be refused; list the allowed \
                    roots, like [\"/srv/data\"], or leave [config.paths] out"
            .to_string());
    }
    let mut roots = Vec::with_capacity(p.allow.len());
    for (i, root) in p.allow.iter().enumerate() {
        let at = format!("config.paths.allow[{i}]");
        if root.contains('\\') || root.contains('\0') {
            return Err(format!("{at}: {root:?} has a backslash or NUL; write a POSIX path like \"/srv/data\""));
        }
        match normalize(root) {
            Some(r) => roots.push(r),
            None => {
                return Err(format!(
                    "{at}: {root:?} is not an absolute path; write it from the root, like \"/srv/data\""
                ));
            }
        }
    }
    Ok(Paths { tools, arguments: p.arguments, roots })
}

/// Checks a list of tool globs; `what` is what would match nothing if the
/// list were empty, for the message.
fn globs(list: Option<Vec<String>>, at: &str, what: &str) -> Result<Option<Vec<String>>, String> {
    let Some(list) = list else { return Ok(None) };
    if list.is_empty() {
        return Err(format!(
            "{at}: the list is empty, so {what} applies to no tool; list tool names or globs \
             (like \"fs__*\"), or leave tools out to cover every tool"
        ));
    }
    for (i, g) in list.iter().enumerate() {
        if g.trim().is_empty() {
            return Err(format!("{at}[{i}]: must not be empty; write a tool name or a glob like \"fs__*\""));
        }
    }
    Ok(Some(list))
}


fn any_glob(patterns: &[String], tool: &str) -> bool {
    patterns.iter().any(|p| reins_sdk::glob_match(p, tool))
}

/// `path` made absolute-normalized on its text (`//`, `.`, `..` and a
/// trailing `/` resolved; `..` above the root stays at the root, as the
/// kernel does); `None` for a relative path, whose meaning depends on a
/// working directory the gate cannot know.
fn normalize(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// Whether the normalized `path` is `root` or below it. Compares whole
/// segments, so `/srv/data2` is not inside `/srv/data`.
fn inside(path: &str, root: &str) -> bool {
    root == "/" || path == root || path.strip_prefix(root).is_some_and(|rest| rest.starts_with('/'))
}

/// A path as quoted in a reason: a model or a person reads it, so control
/// characters are escaped (a newline in a path must not forge a line of
/// the reason) and a huge path is cut.
fn show(path: &str) -> String {
    const MAX: usize = 160;
    let mut out = String::new();
    for (n, c) in path.chars().enumerate() {
        if n == MAX {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl Paths {
    fn applies(&self, tool: &str) -> bool {
        self.tools.as_ref().is_none_or(|t| any_glob(t, tool))
    }

    /// Why the action must be denied: the first path argument that is not
    /// a path inside a root. `None` when every one is (or none is given).
    fn check(&self, arguments: &Value) -> Option<String> {
        if arguments.is_null() {
            return None;
        }
        if !arguments.is_object() {
            // A server could read paths out of any shape; only an object's
            // named arguments can be checked.
            return Some(format!(
                "the arguments must be a JSON object to check their paths, got {}",
                describe_value(arguments)
            ));
        }
        for name in &self.arguments {
            let found = if name.starts_with('/') {
                pointer::resolve(arguments, name)
            } else {
                arguments.get(name)
            };
            let Some(value) = found else { continue };
            let problem = match value {
                Value::String(path) => self.check_one(name, path),
                Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| match item {
                    Value::String(path) => self.check_one(&format!("{name}[{i}]"), path),
                    other => Some(format!("`{name}[{i}]` must be a path string, got {}", describe_value(other))),
                }),
                other => Some(format!(
                    "`{name}` must be a path string or an array of path strings, got {}",
                    describe_value(other)
                )),
            };
            if problem.is_some() {
                return problem;
            }
        }
        None
    }

    fn check_one(&self, label: &str, path: &str) -> Option<String> {
        let roots = self.roots.join(", ");
        if path.is_empty() {
            return Some(format!(
                "`{label}` is an empty path; give an absolute path inside the allowed paths ({roots})"
            ));
        }
        let shown = show(path);
        if path.contains('\0') {
            return Some(format!("`{label}` = {shown} contains a NUL character, which no real path has"));
        }
        if path.contains('\\') {
            // Windows servers read `\` as a separator, so `/srv/data\..\..`
            // would climb out there while looking like one name here.
            return Some(format!(
                "`{label}` = {shown} contains a backslash; write the path with / separators, inside the \
                 allowed paths ({roots})"
            ));
        }
        let Some(resolved) = normalize(path) else {
            return Some(format!(
                "`{label}` = {shown} is a relative path; give an absolute path inside the allowed paths ({roots})"
            ));
        };
        if self.roots.iter().any(|root| inside(&resolved, root)) {
            return None;
        }
        let that_is = if resolved == path {
            String::new()
        } else {
            format!(" (that is {})", show(&resolved))
        };
        Some(format!("`{label}` = {shown}{that_is} is outside the allowed paths ({roots})"))
    }
}

fn access_name(access: Access) -> &'static str {
    match access {
        Access::Read => "read",
        Access::Write => "write",
        Access::Irreversible => "irreversible",
    }
}

impl Rule {
    fn matches(&self, action: &Action) -> bool {
        self.tools.as_ref().is_none_or(|t| any_glob(t, &action.tool))
            && self.access.as_ref().is_none_or(|a| a.contains(&action.access))
    }

    /// The rule as an operator wrote it, so a default reason points at it.
    fn describe(&self) -> String {
        let mut what = Vec::new();
        if let Some(tools) = &self.tools {
            what.push(format!("tools {}", tools.join(", ")));
        }
        if let Some(access) = &self.access {
            let names: Vec<&str> = access.iter().map(|a| access_name(*a)).collect();
            what.push(format!("access {}", names.join(", ")));
        }
        if what.is_empty() {
            self.at.clone()
        } else {
            format!("{} ({})", self.at, what.join("; "))
        }
    }

    fn decide(&self, tool: &str) -> Decision {
        let reason = || {
            self.reason.clone().unwrap_or_else(|| match self.verdict {
                Verdict::Escalate => format!("{tool} needs a human's approval under {}", self.describe()),
                _ => format!("{tool} is denied by {}", self.describe()),
            })
        };
        match self.verdict {
            Verdict::Allow => Decision::Allow,
            Verdict::Deny => Decision::Deny(reason()),
            Verdict::Escalate => Decision::Escalate(reason()),
        }
    }
}

fn decide(rules: &Rules, action: &Action) -> Result<Decision, String> {
    if let Some(paths) = &rules.paths
        && paths.applies(&action.tool)
    {
        let arguments = action.arguments_value()?;
        if let Some(reason) = paths.check(&arguments) {
            return Ok(Decision::Deny(reason));
        }
    }
    if let Some(rule) = rules.rules.iter().find(|r| r.matches(action)) {
        return Ok(rule.decide(&action.tool));
    }
    let tool = &action.tool;
    Ok(match rules.default {
        Verdict::Allow => Decision::Allow,
        Verdict::Deny => Decision::Deny(format!(
            "{tool} matches no rule in config.rules, and config.default is \"{}\"",
            rules.default.name()
        )),
        Verdict::Escalate => Decision::Escalate(format!(
            "{tool} matches no rule in config.rules, and config.default is \"{}\": a human must approve it",
            rules.default.name()
        )),
    })
}

struct ToolRules;

impl Guest for ToolRules {
    fn check(ctx: CallContext, action: Action) -> Result<Decision, String> {
        let rules = SETUP.get(&ctx.config, prepare)?;
        decide(&rules, &action)
    }
}

impl reins_sdk::init::Guest for ToolRules {
    fn init(config: String) -> Result<(), String> {
        SETUP.init(&config, prepare)
    }
}

reins_sdk::export_gate!(ToolRules);
reins_sdk::export_init!(ToolRules);

#[cfg(test)]
mod tests;
