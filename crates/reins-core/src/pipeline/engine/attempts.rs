//! Stage 4, the attempt loop: ask the model, validate, gate; repair with the
//! violations (and the next repair strategy) until an answer passes or the
//! attempts run out.

use super::*;

impl Run<'_> {
    /// The attempt loop: call, validate, gate, repair.
    pub(super) async fn attempts(
        &mut self,
        base: Vec<Message>,
        tools: Vec<Tool>,
    ) -> Result<(), RunError> {
        let max_attempts = self.p.config.repair.max_attempts;
        let budget = self.p.config.repair.token_budget;
        // Prompt-token estimates: the base conversation is counted once.
        let mut base_tokens: Option<u64> = None;
        let mut estimate_prompt = |repair: Option<&(String, String)>| {
            let base_count =
                *base_tokens.get_or_insert_with(|| self.p.tokens.count_messages(&base));
            base_count
                + repair.map_or(0, |(answer, prompt)| {
                    2 * tokens::MESSAGE_OVERHEAD
                        + 2
                        + self.p.tokens.count(answer)
                        + self.p.tokens.count(prompt)
                })
        };
        let mut messages = base.clone();
        // The previous answer and the repair message on top of `base`.
        let mut repair_turn: Option<(String, String)> = None;
        let mut previous: Option<Vec<Violation>> = None;
        let mut strategies = self.p.config.repair.strategies.clone().into_iter();
        let mut attempt = 1;
        loop {
            self.ctx.attempt = attempt;
            let ModelAnswer {
                response,
                provider,
                latency_us,
                validation: checked,
            } = self.call_model(attempt, messages, &tools).await?;
            let tokens = match response.usage {
                Some(u) => Tokens {
                    prompt: u.prompt_tokens,
                    completion: u.completion_tokens,
                    total: u.total_tokens.max(u.prompt_tokens + u.completion_tokens),
                    estimated: false,
                },
                None => {
                    let prompt = estimate_prompt(repair_turn.as_ref());
                    let completion = self.p.tokens.count(&response.content)
                        + response
                            .tool_calls
                            .iter()
                            .map(|c| {
                                tokens::count(&c.name) + tokens::count(&c.arguments.to_string())
                            })
                            .sum::<u64>();
                    Tokens {
                        prompt,
                        completion,
                        total: prompt + completion,
                        estimated: true,
                    }
                }
            };
            self.result.tokens.add(tokens);

            // Validate the answer text (an answer of tool calls only has none).
            let tools_only = response.content.trim().is_empty() && !response.tool_calls.is_empty();
            let validation = if let Some(checked) = checked {
                checked
            } else if tools_only {
                Validation {
                    doc: None,
                    findings: Vec::new(),
                    fixed_by: Vec::new(),
                }
            } else {
                self.go_on()?;
                self.validate(&response.content).await?
            };
            self.note_judge_calls();
            let mut findings = validation.findings;
            let mut gated = Gated::default();
            // Proposed actions: the model's tool calls, then any listed in
            // the output's `actions_field`.
            let mut calls = response.tool_calls.clone();
            if let (Some(field), Some(doc)) = (&self.p.config.actions_field, &validation.doc) {
                match actions_in_output(doc, field) {
                    Ok(listed) => calls.extend(listed),
                    Err(v) => findings.push(finding("constraints", v)),
                }
            }
            let decided_before = self.result.decisions.len();
            if !findings.iter().any(is_blocking) && !calls.is_empty() {
                self.go_on()?;
                gated = self.gate(&calls, &tools).await?;
                findings.append(&mut gated.findings);
            }
            let blocking: Vec<Violation> = findings
                .iter()
                .filter(|f| is_blocking(f))
                .map(|f| f.violation.clone())
                .collect();
            let fail_fast = findings
                .iter()
                .any(|f| is_blocking(f) && self.on_fail(&f.source) == OnFail::Fail);
            let denied_only = !blocking.is_empty() && blocking.iter().all(|v| v.code == "denied");
            let answer = if tools_only {
                serde_json::json!({"tool_calls": response.tool_calls}).to_string()
            } else {
                response.content.clone()
            };
            let fixers = validation.fixed_by.join(", ");
            self.result.attempts.push(Attempt {
                attempt,
                provider,
                model: response.model,
                raw: response.content,
                tool_calls: response.tool_calls,
                violations: findings,
                fixed_by: validation.fixed_by,
                tokens,
                latency_us,
            });
            if self.rc.journals(StepKind::Attempt) {
                let decided =
                    &self.result.decisions[decided_before.min(self.result.decisions.len())..];
                let step = serde_json::json!({"attempt": self.result.attempts.last(), "decisions": decided});
                if let Err(e) = self.rc.checkpoint(StepKind::Attempt, step).await {
                    gated.release_all();
                    return Err(self.lost(e));
                }
            }

            if blocking.is_empty()
                && !fixers.is_empty()
                && let Some(s) = self.stream.as_ref().filter(|s| s.released_any())
            {
                // A validator's fix would be an answer other than the one
                // the client was sent.
                gated.release_all();
                return Err(RunError::StreamCut {
                    checker: fixers.clone(),
                    reason: format!(
                        "validator(s) {fixers} changed the answer after {} bytes of it were streamed; stream it through a stream checker that masks the same, or use stream = \"buffered\"",
                        s.released().len()
                    ),
                });
            }
            if blocking.is_empty() {
                self.result.output = validation.doc;
                self.result.actions = gated.approved.iter().map(|(_, a)| a.clone()).collect();
                self.result.action_indices = gated.approved.iter().map(|(i, _)| *i).collect();
                self.result.reservations = std::mem::take(&mut gated.reservations);
                if gated.pending.is_empty() {
                    self.result.status = RunStatus::Completed;
                    return self.execute_actions(attempt, &gated.approved).await;
                }
                self.result.pending = gated.pending;
                self.result.status = RunStatus::AwaitingApproval;
                return Ok(());
            }
            gated.release_all();

            // Repair, or stop?
            let spent = self.result.tokens.total;
            let repeated = previous.as_ref() == Some(&blocking);
            // Text the client already has can be neither taken back nor repaired.
            let streamed = self.stream.as_ref().is_some_and(|s| s.released_any());
            let mut stop = if streamed {
                Some(StopReason::Streamed)
            } else if fail_fast {
                Some(StopReason::FailFast)
            } else if repeated
                && (attempt >= max_attempts || !self.change_strategy(&mut strategies))
            {
                Some(StopReason::Repeated)
            } else if attempt >= max_attempts {
                Some(StopReason::MaxAttempts)
            } else if budget.is_some_and(|b| spent >= b) {
                Some(StopReason::TokenBudget)
            } else {
                None
            };
            let mut next_turn = None;
            if stop.is_none() {
                let prompt = self.p.template_for(self.mode).render(
                    &blocking,
                    attempt + 1,
                    max_attempts,
                    self.model_schema.as_deref(),
                );
                let turn = (answer, prompt);
                // Not even the next prompt fits what is left of the budget.
                if let Some(b) = budget
                    && spent + estimate_prompt(Some(&turn)) > b
                {
                    stop = Some(StopReason::TokenBudget);
                }
                next_turn = Some(turn);
            }
            let now = Instant::now();
            match (stop, next_turn) {
                (None, Some(turn)) => {
                    self.trace(
                        "repair",
                        "",
                        format!("{} violation(s) sent back", blocking.len()),
                        now,
                        now,
                    );
                    messages = repair::repair_messages(&base, &turn.0, turn.1.clone());
                    repair_turn = Some(turn);
                    previous = Some(blocking);
                    attempt += 1;
                }
                (stop, _) => {
                    let stop = stop.unwrap_or(StopReason::MaxAttempts);
                    self.trace("repair", "", format!("stop: {stop}"), now, now);
                    if denied_only && stop != StopReason::FailFast {
                        let denial =
                            self.result
                                .decisions
                                .iter()
                                .rev()
                                .find_map(|d| match &d.decision {
                                    Decision::Deny(reason) if d.attempt == attempt => {
                                        Some((d.gate.clone(), d.tool.clone(), reason.clone()))
                                    }
                                    _ => None,
                                });
                        if let Some((gate, tool, reason)) = denial {
                            return Err(RunError::Denied { gate, tool, reason });
                        }
                    }
                    let summary = blocking
                        .iter()
                        .map(|v| {
                            let path = if v.path.is_empty() {
                                "(document)"
                            } else {
                                v.path.as_str()
                            };
                            format!("{path} [{}]: {}", v.code, v.message)
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    return Err(RunError::ValidationFailed {
                        attempts: attempt,
                        stop,
                        summary,
                    });
                }
            }
        }
    }

    /// The provider the next repair attempt asks first.
    pub(super) fn next_provider(&self) -> Option<&Arc<crate::provider::Breaker>> {
        self.p.repair_providers.get(self.chain_offset)
    }

    /// Counts the judge's tokens in the run's usage and traces each question
    /// with its answer.
    pub(super) fn note_judge_calls(&mut self) {
        let Some(judge) = &self.judge else { return };
        for call in judge.drain() {
            let (prompt, completion) = match call.usage {
                Some(u) => (u.prompt_tokens, u.completion_tokens),
                None => {
                    let answer = call.answer.as_deref().unwrap_or_default();
                    self.result.tokens.estimated = true;
                    (tokens::count(&call.question), tokens::count(answer))
                }
            };
            self.result.tokens.add(Tokens {
                prompt,
                completion,
                total: prompt + completion,
                estimated: false,
            });
            let shown = |s: &str| -> String {
                let s = s.trim();
                match s.char_indices().nth(120) {
                    Some((i, _)) => format!("{}…", &s[..i]),
                    None => s.to_owned(),
                }
            };
            let result = match &call.answer {
                Ok(a) => format!("asked {:?} -> {:?}", shown(&call.question), shown(a)),
                Err(e) => format!("asked {:?} -> failed: {}", shown(&call.question), shown(e)),
            };
            self.trace("judge", &call.provider, result, call.start, call.end);
        }
    }

    /// The answer repeated the previous one's violations: change what the
    /// next attempt does, by the next strategy that can change anything.
    /// `false` when every strategy is spent.
    pub(super) fn change_strategy(
        &mut self,
        strategies: &mut impl Iterator<Item = RepairStrategy>,
    ) -> bool {
        for strategy in strategies.by_ref() {
            let what = match strategy {
                RepairStrategy::StrictFormat
                    if self.mode == OutputMode::Json
                        && !self.strict
                        && self
                            .next_provider()
                            .is_some_and(|b| b.provider().can_tighten()) =>
                {
                    self.strict = true;
                    "the strictest structured-output mode".to_owned()
                }
                RepairStrategy::Temperature => {
                    let from = self.sampling.temperature.unwrap_or(0.0);
                    let to = (from + self.p.config.repair.temperature_step).min(2.0);
                    if to <= from {
                        continue;
                    }
                    self.sampling.temperature = Some(to);
                    format!("temperature {from} -> {to}")
                }
                RepairStrategy::Model if self.p.repair_providers.len() > self.chain_offset + 1 => {
                    self.chain_offset += 1;
                    let next = self.p.repair_providers[self.chain_offset]
                        .provider()
                        .name()
                        .to_owned();
                    format!("model `{next}`")
                }
                _ => continue,
            };
            let now = Instant::now();
            self.trace(
                "repair",
                strategy.as_str(),
                format!("answers repeat; next attempt: {what}"),
                now,
                now,
            );
            return true;
        }
        false
    }
}
