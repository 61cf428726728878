//! `sql-guard`: look at the SQL an agent wants to run before it runs.
//!
//! * `DELETE` / `UPDATE` without a `WHERE`, or with one that is always true
//!   (`1=1`, `TRUE`, `'a'='a'`, `1`, `x = x`, `... OR 1=1`): **deny**, with a
//!   reason the model can act on.
//! * `DROP`, `TRUNCATE`, `ALTER`, `GRANT`, `REVOKE`: **escalate** to a human.
//! * Reads and inserts: **allow**. Any other statement: escalate (an unknown
//!   verb is not known to be safe).
//!
//! The SQL is tokenized, not pattern-matched: comments (`--`, `/* */`),
//! string literals (`'...'`, `$$...$$`), quoted identifiers, case, spacing and
//! several statements separated by `;` are handled, so `SELECT 'DROP TABLE'`
//! is a read and `DELETE/**/FROM t` is a delete.

use reins_sdk::gate::{Action, Decision, Guest};
use reins_sdk::{CallContext, describe_value};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// The argument holding the SQL text.
    field: String,
    /// Only check these tools (default: every action that has `field`).
    tools: Option<Vec<String>>,
    /// Statements a human must approve.
    escalate_statements: Vec<String>,
    /// Statements allowed as they are; anything not listed here, not in
    /// `escalate_statements` and not DELETE/UPDATE escalates.
    allow_statements: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect();
        Config {
            field: "sql".to_string(),
            tools: None,
            escalate_statements: words(&["DROP", "TRUNCATE", "ALTER", "GRANT", "REVOKE"]),
            allow_statements: words(&[
                "SELECT", "INSERT", "VALUES", "TABLE", "SHOW", "DESCRIBE", "DESC", "CREATE", "BEGIN", "START",
                "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE",
            ]),
        }
    }
}

struct SqlGuard;

/// The set-up: the config, parsed and checked once (in `init`, or on the
/// first call with this config).
static SETUP: reins_sdk::Setup<Config> = reins_sdk::Setup::new();

fn parse(config_text: &str) -> Result<Config, String> {
    let config: Config = reins_sdk::parse_config_text(config_text)?;
    Ok(config)
}

impl Guest for SqlGuard {
    fn check(ctx: CallContext, action: Action) -> Result<Decision, String> {
        let config = SETUP.get(&ctx.config, parse)?;
        if let Some(tools) = &config.tools
            && !tools.contains(&action.tool) {
                return Ok(Decision::Allow);
            }
        let arguments = action.arguments_value()?;
        let sql = match arguments.get(&config.field) {
            None => return Ok(Decision::Allow),
            Some(Value::String(sql)) => sql.clone(),
            Some(other) => {
                return Ok(Decision::Deny(format!(
                    "arguments.{} must be a string of SQL, got {}",
                    config.field,
                    describe_value(other)
                )));
            }
        };
        Ok(judge(&sql, &config))
    }
}

impl reins_sdk::init::Guest for SqlGuard {
    fn init(config: String) -> Result<(), String> {
        SETUP.init(&config, parse)
    }
}

reins_sdk::export_gate!(SqlGuard);
reins_sdk::export_init!(SqlGuard);

/// The decision for one SQL text: the worst over its statements.
fn judge(sql: &str, config: &Config) -> Decision {
    let lexed = match lex(sql) {
        Ok(lexed) => lexed,
        Err(why) => return Decision::Deny(format!("the SQL cannot be checked: {why}")),
    };
    let mut denials = Vec::new();
    let mut escalations = Vec::new();
    if lexed.backslash_quote {
        escalations.push(
            "a string literal contains \\' which databases read differently; a human must check it".to_string(),
        );
    }
    let statements: Vec<&[Tok]> = lexed.tokens.split(|t| *t == Tok::Semi).filter(|s| !s.is_empty()).collect();
    let many = statements.len() > 1;
    for (i, stmt) in statements.iter().enumerate() {
        let label = if many { format!("statement {}: ", i + 1) } else { String::new() };
        for finding in statement(stmt, config) {
            match finding {
                Finding::Deny(why) => denials.push(format!("{label}{why}")),
                Finding::Escalate(why) => escalations.push(format!("{label}{why}")),
            }
        }
    }
    if !denials.is_empty() {
        Decision::Deny(denials.join("; "))
    } else if !escalations.is_empty() {
        Decision::Escalate(escalations.join("; "))
    } else {
        Decision::Allow
    }
}

enum Finding {
    Deny(String),
    Escalate(String),
}

fn statement(tokens: &[Tok], config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    // Data-modifying statements nested in parentheses (CTEs, rules).
    for (i, pair) in tokens.windows(2).enumerate() {
        if pair[0] == Tok::Open && (pair[1].is_word("DELETE") || pair[1].is_word("UPDATE")) {
            out.extend(modification(&tokens[i + 1..]));
        }
    }
    let start = tokens.iter().position(|t| *t != Tok::Open).unwrap_or(tokens.len());
    let Some(Tok::Word(verb)) = tokens.get(start) else {
        return out;
    };
    let rest = &tokens[start..];
    match verb.as_str() {
        "EXPLAIN" => {
            // EXPLAIN ANALYZE runs the statement: judge what it explains.
            let inner = rest[1..]
                .iter()
                .position(|t| matches!(t, Tok::Word(w) if is_statement_verb(w)))
                .map_or(&[][..], |p| &rest[1 + p..]);
            out.extend(statement(inner, config));
        }
        "WITH" => {
            let mut depth = 0i32;
            let main = rest.iter().enumerate().skip(1).find(|(_, t)| {
                match t {
                    Tok::Open => depth += 1,
                    Tok::Close => depth -= 1,
                    Tok::Word(w) if depth == 0 && is_statement_verb(w) => return true,
                    _ => {}
                }
                false
            });
            if let Some((p, _)) = main {
                out.extend(statement(&rest[p..], config));
            }
        }
        "DELETE" | "UPDATE" => out.extend(modification(rest)),
        v if config.escalate_statements.iter().any(|e| e.eq_ignore_ascii_case(v)) => {
            out.push(Finding::Escalate(format!("{} needs human approval: {}", v, render(rest, 8))));
        }
        v if config.allow_statements.iter().any(|a| a.eq_ignore_ascii_case(v)) => {}
        v => out.push(Finding::Escalate(format!(
            "{v} is not a statement this gate knows to be safe; a human must approve it"
        ))),
    }
    out
}

fn is_statement_verb(w: &str) -> bool {
    matches!(w, "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "VALUES")
}

/// A DELETE or UPDATE starting at `tokens[0]`, up to the end of the
/// statement or the parenthesis that closes it.
fn modification(tokens: &[Tok]) -> Vec<Finding> {
    let verb = match &tokens[0] {
        Tok::Word(w) => w.as_str(),
        _ => return Vec::new(),
    };
    let mut depth = 0i32;
    let mut end = tokens.len();
    let mut where_at = None;
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Tok::Open => depth += 1,
            Tok::Close if depth == 0 => {
                end = i;
                break;
            }
            Tok::Close => depth -= 1,
            t if depth == 0 && where_at.is_none() && t.is_word("WHERE") => where_at = Some(i),
            _ => {}
        }
    }
    let span = &tokens[..end];
    let target = target_table(span);
    let (action, every) = if verb == "DELETE" { ("delete", "delete") } else { ("update", "change") };
    let Some(w) = where_at else {
        return vec![Finding::Deny(format!(
            "{verb} on {target} has no WHERE clause and would {every} every row; \
             add a WHERE that selects only the rows to {action}"
        ))];
    };
    let mut depth = 0i32;
    let cond_end = span[w + 1..]
        .iter()
        .position(|t| {
            match t {
                Tok::Open => depth += 1,
                Tok::Close => depth -= 1,
                Tok::Word(word) if depth == 0 => {
                    return matches!(word.as_str(), "RETURNING" | "ORDER" | "LIMIT" | "OFFSET");
                }
                _ => {}
            }
            false
        })
        .map_or(span.len(), |p| w + 1 + p);
    let condition = &span[w + 1..cond_end];
    if condition.is_empty() || always_true(condition) {
        return vec![Finding::Deny(format!(
            "{verb} on {target} has a WHERE that is always true ({}) and would {every} every row; \
             use a condition on a key that selects only the rows to {action}",
            render(condition, 12)
        ))];
    }
    Vec::new()
}

/// `orders` in `DELETE FROM orders ...` / `UPDATE ONLY orders SET ...`.
fn target_table(span: &[Tok]) -> String {
    let after = if span[0].is_word("DELETE") {
        span.iter().position(|t| t.is_word("FROM")).map(|p| p + 1)
    } else {
        Some(1)
    };
    let mut i = after.unwrap_or(1);
    if span.get(i).is_some_and(|t| t.is_word("ONLY")) {
        i += 1;
    }
    let mut name = String::new();
    while let Some(t) = span.get(i) {
        match t {
            Tok::Word(w) | Tok::Quoted(w) if name.is_empty() || name.ends_with('.') => name.push_str(w),
            Tok::Sym(s) if s == "." && !name.is_empty() => name.push('.'),
            _ => break,
        }
        i += 1;
    }
    if name.is_empty() { "the table".to_string() } else { name.to_ascii_lowercase() }
}

/// Whether a WHERE condition selects every row whatever the data.
fn always_true(cond: &[Tok]) -> bool {
    constant(cond) == Some(true)
}

/// The value of a condition that does not depend on the row: `Some(true)`
/// for `1=1`, `TRUE`, `NOT 0`, `id = id`, `x OR 1=1`; `Some(false)` for
/// `1=0`, `FALSE`; `None` when the data decides. (`id = id` is false for
/// NULL ids, but no one writes it to select non-null rows.)
fn constant(cond: &[Tok]) -> Option<bool> {
    let cond = strip_parens(cond);
    let ors = split_top(cond, "OR");
    if ors.len() > 1 {
        let values: Vec<Option<bool>> = ors.iter().map(|d| constant(d)).collect();
        return if values.contains(&Some(true)) {
            Some(true)
        } else if values.iter().all(|v| *v == Some(false)) {
            Some(false)
        } else {
            None
        };
    }
    let ands = split_top(cond, "AND");
    // `x BETWEEN 1 AND 2` also splits here; its halves are never constant.
    if ands.len() > 1 {
        let values: Vec<Option<bool>> = ands.iter().map(|c| constant(c)).collect();
        return if values.contains(&Some(false)) {
            Some(false)
        } else if values.iter().all(|v| *v == Some(true)) {
            Some(true)
        } else {
            None
        };
    }
    match cond {
        [t] if t.is_word("TRUE") => Some(true),
        [t] if t.is_word("FALSE") => Some(false),
        [not, rest @ ..] if not.is_word("NOT") => constant(rest).map(|v| !v),
        [lhs @ .., is, not, null] if is.is_word("IS") && not.is_word("NOT") && null.is_word("NULL") => {
            literal(lhs).map(|_| true)
        }
        _ => {
            // A bare literal: databases read non-zero numbers as true.
            if let Some(lit) = literal(cond) {
                return match lit {
                    Lit::Num(n) => Some(n != 0.0),
                    Lit::Text(t) => t.trim().parse::<f64>().ok().map(|n| n != 0.0),
                };
            }
            let op_at = cond.iter().position(|t| t.is_comparison())?;
            let (l, r) = (&cond[..op_at], &cond[op_at + 1..]);
            let op = match &cond[op_at] {
                Tok::Sym(s) => s.as_str(),
                Tok::Word(w) => w.as_str(),
                _ => return None,
            };
            if op == "LIKE" {
                let all = matches!(r, [Tok::Str(p)] if !p.is_empty() && p.chars().all(|c| c == '%'));
                return (all || (!l.is_empty() && l == r)).then_some(true);
            }
            if !l.is_empty() && l == r {
                return Some(matches!(op, "=" | "==" | "<=" | ">="));
            }
            Some(compare_literals(&literal(l)?, op, &literal(r)?))
        }
    }
}

enum Lit {
    Num(f64),
    Text(String),
}

fn literal(side: &[Tok]) -> Option<Lit> {
    match side {
        [Tok::Num(n)] => n.parse().ok().map(Lit::Num),
        [Tok::Sym(m), Tok::Num(n)] if m == "-" => n.parse::<f64>().ok().map(|n| Lit::Num(-n)),
        [Tok::Str(s)] => Some(Lit::Text(s.clone())),
        _ => None,
    }
}

fn compare_literals(a: &Lit, op: &str, b: &Lit) -> bool {
    use std::cmp::Ordering;
    let ord = match (a, b) {
        (Lit::Num(x), Lit::Num(y)) => x.partial_cmp(y),
        (Lit::Text(x), Lit::Text(y)) => Some(x.cmp(y)),
        // '1' = 1: databases cast; equal text means equal.
        (Lit::Num(x), Lit::Text(s)) | (Lit::Text(s), Lit::Num(x)) => s.trim().parse::<f64>().ok().and_then(|y| x.partial_cmp(&y)),
    };
    let Some(ord) = ord else { return false };
    match op {
        "=" | "==" => ord == Ordering::Equal,
        "<>" | "!=" => ord != Ordering::Equal,
        "<" => ord == Ordering::Less,
        ">" => ord == Ordering::Greater,
        "<=" => ord != Ordering::Greater,
        ">=" => ord != Ordering::Less,
        _ => false,
    }
}

fn strip_parens(mut cond: &[Tok]) -> &[Tok] {
    while cond.len() >= 2 && cond[0] == Tok::Open && cond[cond.len() - 1] == Tok::Close {
        // Only if the first '(' closes at the very end: `(a) OR (b)` stays.
        let mut depth = 0;
        let closes_at_end = cond.iter().enumerate().all(|(i, t)| {
            match t {
                Tok::Open => depth += 1,
                Tok::Close => depth -= 1,
                _ => {}
            }
            depth > 0 || i == cond.len() - 1
        });
        if !closes_at_end {
            break;
        }
        cond = &cond[1..cond.len() - 1];
    }
    cond
}

fn split_top<'a>(cond: &'a [Tok], word: &str) -> Vec<&'a [Tok]> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut from = 0;
    for (i, t) in cond.iter().enumerate() {
        match t {
            Tok::Open => depth += 1,
            Tok::Close => depth -= 1,
            t if depth == 0 && t.is_word(word) => {
                parts.push(&cond[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&cond[from..]);
    parts
}

/// Tokens back to text for a reason, at most `max` of them.
fn render(tokens: &[Tok], max: usize) -> String {
    let mut out: Vec<String> = tokens
        .iter()
        .take(max)
        .map(|t| match t {
            Tok::Word(w) | Tok::Num(w) | Tok::Sym(w) => w.clone(),
            Tok::Quoted(q) => format!("\"{q}\""),
            Tok::Str(s) => format!("'{}'", s.replace('\'', "''")),
            Tok::Open => "(".to_string(),
            Tok::Close => ")".to_string(),
            Tok::Semi => ";".to_string(),
        })
        .collect();
    if tokens.len() > max {
        out.push("...".to_string());
    }
    out.join(" ").replace("( ", "(").replace(" )", ")").replace(" . ", ".")
}

// ---------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A keyword or bare identifier, upper-cased.
    Word(String),
    /// A `"quoted"`, `` `quoted` `` or `[quoted]` identifier (never a keyword).
    Quoted(String),
    /// A string literal's content.
    Str(String),
    Num(String),
    Sym(String),
    Open,
    Close,
    Semi,
}

impl Tok {
    fn is_word(&self, w: &str) -> bool {
        matches!(self, Tok::Word(x) if x == w)
    }

    fn is_comparison(&self) -> bool {
        match self {
            Tok::Sym(s) => matches!(s.as_str(), "=" | "==" | "<>" | "!=" | "<" | ">" | "<=" | ">="),
            Tok::Word(w) => w == "LIKE",
            _ => false,
        }
    }
}

struct Lexed {
    tokens: Vec<Tok>,
    /// A `\'` inside a literal: MySQL reads it as an escaped quote, standard
    /// SQL as the end of the string, so what runs depends on the database.
    backslash_quote: bool,
}

fn lex(sql: &str) -> Result<Lexed, String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut tokens = Vec::new();
    let mut backslash_quote = false;
    let mut i = 0;
    let n = chars.len();
    let until = |from: usize, close: char, what: &str| -> Result<(String, usize), String> {
        let mut j = from;
        let mut text = String::new();
        while j < n {
            if chars[j] == close {
                // A doubled closing character is an escaped one.
                if j + 1 < n && chars[j + 1] == close && close != ']' {
                    text.push(close);
                    j += 2;
                    continue;
                }
                return Ok((text, j + 1));
            }
            text.push(chars[j]);
            j += 1;
        }
        Err(format!("unterminated {what}"))
    };
    while i < n {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            c if c.is_whitespace() => i += 1,
            '-' if next == Some('-') => {
                while i < n && chars[i] != '\n' {
                    i += 1;
                }
            }
            '#' => {
                // MySQL line comment.
                while i < n && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                let close = (i + 2..n.saturating_sub(1)).find(|&j| chars[j] == '*' && chars[j + 1] == '/');
                match close {
                    Some(j) => i = j + 2,
                    None => return Err("unterminated /* comment".to_string()),
                }
            }
            '\'' => {
                let (text, j) = until(i + 1, '\'', "string literal")?;
                if text.contains('\\') && chars[i + 1..j - 1].windows(2).any(|w| w == ['\\', '\'']) {
                    backslash_quote = true;
                }
                if chars[i + 1..j.saturating_sub(1)].last() == Some(&'\\') {
                    backslash_quote = true;
                }
                tokens.push(Tok::Str(text));
                i = j;
            }
            '"' | '`' | '[' => {
                let close = match c {
                    '[' => ']',
                    other => other,
                };
                let (text, j) = until(i + 1, close, "quoted identifier")?;
                tokens.push(Tok::Quoted(text));
                i = j;
            }
            '$' if next.is_some_and(|d| d.is_ascii_digit()) => {
                let start = i;
                i += 1;
                while i < n && chars[i].is_ascii_digit() {
                    i += 1;
                }
                tokens.push(Tok::Sym(chars[start..i].iter().collect()));
            }
            '$' => {
                // $tag$ ... $tag$ (PostgreSQL dollar quoting).
                let tag_end = (i + 1..n).find(|&j| !(chars[j].is_alphanumeric() || chars[j] == '_'));
                match tag_end {
                    Some(t) if chars[t] == '$' => {
                        let tag: String = chars[i..=t].iter().collect();
                        let body_start = t + 1;
                        let rest: String = chars[body_start..].iter().collect();
                        let Some(end) = rest.find(&tag) else {
                            return Err("unterminated dollar-quoted string".to_string());
                        };
                        let body = rest[..end].to_string();
                        i = body_start + body.chars().count() + tag.chars().count();
                        tokens.push(Tok::Str(body));
                    }
                    _ => {
                        tokens.push(Tok::Sym("$".to_string()));
                        i += 1;
                    }
                }
            }
            '(' => {
                tokens.push(Tok::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Tok::Close);
                i += 1;
            }
            ';' => {
                tokens.push(Tok::Semi);
                i += 1;
            }
            c if c.is_ascii_digit() || (c == '.' && next.is_some_and(|d| d.is_ascii_digit())) => {
                let start = i;
                while i < n && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                tokens.push(Tok::Num(chars[start..i].iter().collect()));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < n && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                tokens.push(Tok::Word(word.to_uppercase()));
            }
            _ => {
                let two: String = chars[i..(i + 2).min(n)].iter().collect();
                if matches!(two.as_str(), "<=" | ">=" | "<>" | "!=" | "==" | "||" | "::") {
                    tokens.push(Tok::Sym(two));
                    i += 2;
                } else {
                    tokens.push(Tok::Sym(c.to_string()));
                    i += 1;
                }
            }
        }
    }
    Ok(Lexed { tokens, backslash_quote })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(sql: &str) -> &'static str {
        match judge(sql, &Config::default()) {
            Decision::Allow => "allow",
            Decision::Deny(_) => "deny",
            Decision::Escalate(_) => "escalate",
            Decision::Rewrite(_) => "rewrite",
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(kind("SELECT * FROM t WHERE a = 'DELETE FROM x'"), "allow");
        assert_eq!(kind("delete from t"), "deny");
        assert_eq!(kind("DELETE/**/FROM t -- WHERE id = 1"), "deny");
        assert_eq!(kind("DELETE FROM t WHERE id = 4"), "allow");
        assert_eq!(kind("DELETE FROM t WHERE 1=1"), "deny");
        assert_eq!(kind("DELETE FROM t WHERE (1 = 1)"), "deny");
        assert_eq!(kind("UPDATE t SET a = 1 WHERE id = 3 OR 'a'='a'"), "deny");
        assert_eq!(kind("UPDATE t SET a = 1 WHERE true"), "deny");
        assert_eq!(kind("UPDATE t SET a = 1 WHERE 1"), "deny");
        assert_eq!(kind("UPDATE t SET a = (SELECT b FROM u WHERE u.id = 1)"), "deny");
        assert_eq!(kind("UPDATE t SET a = 1 WHERE id = id"), "deny");
        assert_eq!(kind("UPDATE t SET a = 1 WHERE id = 7 AND 1=1"), "allow");
        assert_eq!(kind("SELECT 1; DROP TABLE users"), "escalate");
        assert_eq!(kind("truncate orders"), "escalate");
        assert_eq!(kind("SELECT 1; DELETE FROM t; DROP TABLE x"), "deny");
        assert_eq!(kind("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"), "deny");
        assert_eq!(kind("WITH x AS (SELECT 1) DELETE FROM t"), "deny");
        assert_eq!(kind("SELECT * FROM t FOR UPDATE"), "allow");
        assert_eq!(kind("EXPLAIN ANALYZE DELETE FROM t"), "deny");
        assert_eq!(kind("SELECT 'it''s; DROP TABLE x'"), "allow");
        assert_eq!(kind("SELECT $$ DROP TABLE x $$"), "allow");
        assert_eq!(kind("SELECT 'a"), "deny");
        assert_eq!(kind("CALL do_things()"), "escalate");
        assert_eq!(kind("DELETE FROM t WHERE -1"), "deny");
        assert_eq!(kind("DELETE FROM t WHERE NOT (1 = 0)"), "deny");
        assert_eq!(kind("DELETE FROM t WHERE 1 = 0 OR 2 > 1"), "deny");
        assert_eq!(kind("DELETE FROM t WHERE name LIKE '%'"), "deny");
        assert_eq!(kind("DELETE FROM t WHERE id BETWEEN 1 AND 5"), "allow");
        assert_eq!(kind("DELETE FROM t WHERE NOT id = 5"), "allow");
        assert_eq!(kind("SELECT 'a\\' ; DROP TABLE x; --'"), "escalate");
    }
}
