//! Who a run belongs to. The caller is resolved from a credential before a
//! run starts (the server does it from the bearer token or JWT); everything
//! that is scoped to a caller — rate limits, idempotency keys, sessions, run
//! and approval ownership — asks this module, so the rules live in one place.

use reins_runtime::Caller;
use serde_json::Value;

/// A body `metadata` key that says something else than the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata.{key} contradicts the credential ({credential}): {message}")]
pub struct Contradiction {
    pub key: String,
    pub credential: String,
    pub message: String,
}

/// The caller the pipeline's plugins see. A pipeline that trusts metadata
/// (open local development) fills the tenant and roles the credential
/// leaves empty from `metadata.tenant` and `metadata.role`/`roles`; every
/// other pipeline sees exactly the credential.
pub fn effective(caller: &Caller, metadata: &Value, trust_metadata: bool) -> Caller {
    if !trust_metadata {
        return caller.clone();
    }
    let mut out = caller.clone();
    let mut filled = false;
    if out.tenant.is_none()
        && let Some(t) = scalar(metadata.get("tenant"))
    {
        out.tenant = Some(t);
        filled = true;
    }
    if out.roles.is_empty() {
        out.roles = claim_strings(metadata.get("roles").or_else(|| metadata.get("role")));
        filled |= !out.roles.is_empty();
    }
    if filled && !out.is_verified() {
        out.credential = "metadata".to_owned();
    }
    out
}

/// Refuses a body `metadata` that claims another tenant, role or claim than
/// the credential carries: a caller cannot talk its way into a role. Keys
/// the credential says nothing about (a channel, an end user's id) pass.
pub fn check_metadata(caller: &Caller, metadata: &Value) -> Result<(), Contradiction> {
    if !caller.is_verified() {
        return Ok(());
    }
    let Some(map) = metadata.as_object() else {
        return Ok(());
    };
    let conflict = |key: &str, message: String| Contradiction {
        key: key.to_owned(),
        credential: caller.credential.clone(),
        message,
    };
    for (key, said) in map {
        match key.as_str() {
            // A credential that carries no roles (or no tenant) has nothing
            // to contradict: the body's word stays a hint, identity only
            // where the pipeline trusts metadata (`effective`).
            "role" | "roles" if !caller.roles.is_empty() => {
                let claimed = claim_strings(Some(said));
                if let Some(r) = claimed.iter().find(|r| !caller.roles.contains(r)) {
                    return Err(conflict(
                        key,
                        format!(
                            "the credential does not hold the role {r:?} (it holds {:?})",
                            caller.roles
                        ),
                    ));
                }
            }
            "role" | "roles" => {}
            "tenant" if caller.tenant.is_some() => {
                if let Some(t) = scalar(Some(said))
                    && caller.tenant.as_deref() != Some(t.as_str())
                {
                    return Err(conflict(
                        key,
                        format!(
                            "the credential is for tenant {:?}, not {t:?}",
                            caller.tenant.as_deref().unwrap_or_default()
                        ),
                    ));
                }
            }
            "tenant" => {}
            // `user`/`user_id` name the application's end user (as OpenAI
            // and Anthropic clients send them), not the credential: only
            // a claim the credential carries is compared.
            other => {
                if let Some(claim) = caller.claims.get(other)
                    && claim != said
                {
                    return Err(conflict(
                        key,
                        format!("the credential's claim is {claim}, not {said}"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Whose turn a call is in a provider's queue: the tenant, else the
/// subject (each token or user apart), so one cannot crowd out another.
pub fn queue_key(caller: &Caller) -> String {
    caller
        .tenant
        .clone()
        .unwrap_or_else(|| caller.subject.clone())
}

/// Who owns what a caller creates: its tenant, else (a verified caller
/// without one) itself, else nobody in particular (anonymous, open mode).
pub fn owner_scope(caller: &Caller) -> Option<String> {
    match (&caller.tenant, caller.is_verified()) {
        (Some(t), _) => Some(format!("tenant:{t}")),
        (None, true) => Some(format!("subject:{}:{}", caller.credential, caller.subject)),
        (None, false) => None,
    }
}

/// A caller's idempotency key or session id, scoped to its owner so that
/// two tenants using the same key get two runs and two memories. The owner
/// is length-prefixed, so no key can be made to look like another owner's.
pub fn scoped(caller: &Caller, key: &str) -> String {
    match owner_scope(caller) {
        Some(scope) => format!("{}:{scope}|{key}", scope.len()),
        None => key.to_owned(),
    }
}

/// Whether `viewer` may see what `owner` created: the same tenant, or the
/// same verified subject when there is no tenant. What an anonymous caller
/// created (open mode) is everyone's.
pub fn may_see(viewer: &Caller, owner: &Caller) -> bool {
    match owner_scope(owner) {
        None => true,
        Some(scope) => owner_scope(viewer).as_deref() == Some(scope.as_str()),
    }
}

/// The owner recorded in a stored run's JSON (`caller`), anonymous when the
/// run has none.
pub fn owner_of(stored_result: &Value) -> Caller {
    stored_result
        .get("caller")
        .and_then(|c| serde_json::from_value(c.clone()).ok())
        .unwrap_or_default()
}

fn scalar(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A claim as a list of strings: one string, or the scalars of a list
/// (roles are written both ways).
pub fn claim_strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(|x| scalar(Some(x))).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn support(tenant: &str) -> Caller {
        Caller {
            subject: "alice".into(),
            tenant: Some(tenant.into()),
            roles: vec!["support".into()],
            credential: "token:alice".into(),
            claims: Default::default(),
        }
    }

    #[test]
    fn a_claimed_role_the_credential_lacks_is_a_contradiction_naming_the_key() {
        let e = check_metadata(&support("acme"), &json!({"role": "manager"}))
            .expect_err("contradiction");
        assert_eq!(e.key, "role");
        assert!(e.to_string().contains("manager"), "{e}");
        let e = check_metadata(&support("acme"), &json!({"tenant": "globex"}))
            .expect_err("contradiction");
        assert_eq!(e.key, "tenant");
        assert!(
            check_metadata(
                &support("acme"),
                &json!({"tenant": "acme", "role": "support", "channel": "web"})
            )
            .is_ok()
        );
        // An end user's id is the application's to send, not an identity claim.
        assert!(
            check_metadata(
                &support("acme"),
                &json!({"user_id": "u-1", "user": "someone"})
            )
            .is_ok()
        );
    }

    #[test]
    fn metadata_is_identity_only_where_the_pipeline_trusts_it() {
        let md = json!({"tenant": "acme", "role": "manager"});
        let anon = Caller::anonymous();
        assert_eq!(effective(&anon, &md, false), anon);
        let trusted = effective(&anon, &md, true);
        assert_eq!(trusted.tenant.as_deref(), Some("acme"));
        assert_eq!(trusted.roles, vec!["manager".to_string()]);
        assert_eq!(trusted.credential, "metadata");
        // A credential's own tenant always wins.
        assert_eq!(
            effective(&support("globex"), &md, true).tenant.as_deref(),
            Some("globex")
        );
    }

    #[test]
    fn keys_are_scoped_per_tenant_and_cannot_be_forged() {
        let a = scoped(&support("acme"), "k1");
        let b = scoped(&support("globex"), "k1");
        assert_ne!(a, b);
        assert_ne!(scoped(&support("x|y"), "k"), scoped(&support("x"), "y|k"));
        assert_eq!(scoped(&Caller::anonymous(), "k1"), "k1");
        assert!(may_see(&support("acme"), &support("acme")));
        assert!(!may_see(&support("globex"), &support("acme")));
        assert!(may_see(&support("globex"), &Caller::anonymous()));
    }
}
