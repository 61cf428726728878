//! `judge`: a model-graded check. The policy (plain words, from the
//! sidecar's `config.policy`) and the answer go to the pipeline's judge
//! model through the host's `judge` import; its JSON verdict decides. A
//! fail becomes a violation whose message is the judge's reason, so the
//! repair prompt tells the model what to change.

use reins_sdk::validator::{Guest, Verdict};
use reins_sdk::{CallContext, Violation};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// What the answer must comply with, in plain words.
    policy: String,
}

#[derive(Deserialize)]
struct Judgement {
    pass: bool,
    #[serde(default)]
    reason: String,
}

const SYSTEM: &str = "You review an assistant's answer against a policy. Reply with one JSON object and nothing else: \
{\"pass\": true} if the answer complies, or {\"pass\": false, \"reason\": \"<what breaks the policy, in one sentence>\"}.";

/// The verdict out of the judge's answer: the JSON object in it, even when
/// the judge wrapped it in prose or a code fence.
fn verdict(answer: &str) -> Result<Judgement, String> {
    let start = answer.find('{');
    let end = answer.rfind('}');
    let Some((start, end)) = start.zip(end).filter(|(s, e)| s < e) else {
        return Err(format!("the judge's answer has no JSON verdict: {:?}", preview(answer)));
    };
    serde_json::from_str(&answer[start..=end])
        .map_err(|e| format!("the judge's verdict is not {{\"pass\": bool, \"reason\": string}}: {e}: {:?}", preview(answer)))
}

fn preview(s: &str) -> String {
    s.chars().take(200).collect()
}

/// What the judge is shown: the text itself, or the document as JSON.
fn answer_text(output: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(output) {
        Ok(serde_json::Value::String(text)) => text,
        _ => output.to_owned(),
    }
}

struct Judge;

/// The set-up: the config, parsed and checked once (in `init`, or on the
/// first call with this config).
static SETUP: reins_sdk::Setup<Config> = reins_sdk::Setup::new();

fn parse(config_text: &str) -> Result<Config, String> {
    let config: Config = reins_sdk::parse_config_text(config_text)?;
    if config.policy.trim().is_empty() {
        return Err("config.policy: must say what the answer must comply with".to_owned());
    }
    Ok(config)
}

impl Guest for Judge {
    fn validate(ctx: CallContext, output: String) -> Result<Verdict, String> {
        let config = SETUP.get(&ctx.config, parse)?;
        let question = format!("Policy:\n{}\n\nAnswer to review:\n{}", config.policy, answer_text(&output));
        let answer = reins_sdk::judge(SYSTEM, &question)?;
        let judgement = verdict(&answer)?;
        Ok(if judgement.pass {
            Verdict::ok()
        } else {
            let reason = if judgement.reason.trim().is_empty() {
                "the judge found that it breaks the policy".to_owned()
            } else {
                judgement.reason
            };
            Verdict::new(vec![Violation::error(
                "",
                "judge",
                format!("The answer breaks the policy: {reason}. Rewrite it so that it complies."),
            )])
        })
    }
}

impl reins_sdk::init::Guest for Judge {
    fn init(config: String) -> Result<(), String> {
        SETUP.init(&config, parse)
    }
}

reins_sdk::export_validator!(Judge);
reins_sdk::export_init!(Judge);

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> CallContext {
        CallContext::for_test(&serde_json::json!({"policy": "no competitors"}), &serde_json::json!({}))
    }

    #[test]
    fn a_pass_is_ok_and_a_fail_carries_the_reason() {
        reins_sdk::set_judge_answer(Ok("{\"pass\": true}".into()));
        assert!(Judge::validate(ctx(), "\"hello\"".into()).unwrap().violations.is_empty());
        reins_sdk::set_judge_answer(Ok("Verdict: ```json\n{\"pass\": false, \"reason\": \"it names Acme\"}\n```".into()));
        let v = Judge::validate(ctx(), "\"buy from Acme\"".into()).unwrap().violations;
        assert_eq!(v[0].code, "judge");
        assert!(v[0].message.contains("it names Acme"), "{}", v[0].message);
    }

    #[test]
    fn no_verdict_or_no_judge_is_a_refusal() {
        reins_sdk::set_judge_answer(Ok("I think it is fine".into()));
        assert!(Judge::validate(ctx(), "\"x\"".into()).unwrap_err().contains("no JSON verdict"));
        reins_sdk::set_judge_answer(Err("the judge is unavailable".into()));
        assert!(Judge::validate(ctx(), "\"x\"".into()).unwrap_err().contains("unavailable"));
    }
}
