//! Stage 6, gates: every proposed action passes each gate, which allows,
//! denies or escalates it (to a human approval), reserving budget as it goes.

use super::*;

/// What the gates made of an attempt's actions.
#[derive(Default)]
pub(super) struct Gated {
    pub(super) findings: Vec<Finding>,
    /// (index among the proposed actions, action) that every gate allowed.
    pub(super) approved: Vec<(usize, Action)>,
    pub(super) pending: Vec<PendingApproval>,
    /// Budget the gates reserved for approved and pending actions.
    pub(super) reservations: Vec<(usize, reins_runtime::Reservation)>,
    /// Reservations of the action being gated right now.
    pub(super) held: Vec<reins_runtime::Reservation>,
}

impl Gated {
    /// The attempt is discarded (it goes back for repair): nothing it
    /// reserved may stay spent.
    pub(super) fn release_all(&mut self) {
        for (_, r) in &mut self.reservations {
            r.release();
        }
        for r in &mut self.held {
            r.release();
        }
    }
}

impl Run<'_> {
    /// Constraint check and gates for each proposed action.
    pub(super) async fn gate(
        &mut self,
        calls: &[ToolCall],
        tools: &[Tool],
    ) -> Result<Gated, RunError> {
        let mut out = Gated::default();
        match self.gate_into(calls, tools, &mut out).await {
            Ok(()) => Ok(out),
            Err(e) => {
                // The run fails: no reservation of it may stay spent.
                out.release_all();
                Err(e)
            }
        }
    }

    pub(super) async fn gate_into(
        &mut self,
        calls: &[ToolCall],
        tools: &[Tool],
        out: &mut Gated,
    ) -> Result<(), RunError> {
        let p = self.p;
        for (i, call) in calls.iter().enumerate() {
            let at = format!("/actions/{i}");
            let start = Instant::now();
            let Some(tool) = tools.iter().find(|t| t.name == call.name) else {
                let available = if tools.is_empty() {
                    "this request has no tools".to_owned()
                } else {
                    format!(
                        "the tools are: {}",
                        tools
                            .iter()
                            .map(|t| t.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                out.findings.push(finding(
                    "constraints",
                    violation(
                        at,
                        "tool-not-allowed",
                        format!("`{}` is not an available tool; {available}", call.name),
                    ),
                ));
                self.trace(
                    "action",
                    &call.name,
                    "not an available tool".to_owned(),
                    start,
                    Instant::now(),
                );
                continue;
            };
            let problems = self.check_arguments(tool, &call.arguments, &at);
            self.trace(
                "action",
                &call.name,
                count_summary(&problems),
                start,
                Instant::now(),
            );
            if !problems.is_empty() {
                out.findings.extend(problems);
                continue;
            }
            let mut action = Action {
                tool: call.name.clone(),
                arguments: call.arguments.clone(),
                access: tool.access,
            };
            let mut allowed = true;
            let mut escalated = false;
            for gate in &p.config.gates {
                let gate = &gate.plugin;
                let plugin = self.plugin(Layer::Gate, gate)?;
                let ctx = self.ctx.clone();
                let input = action.clone();
                let timed = blocking(&plugin, move |p| p.check_reserving(&ctx, &input)).await;
                let Some((decision, reservation)) =
                    self.settle(Layer::Gate, &plugin, timed, |(d, _)| d.kind().to_owned())?
                else {
                    continue;
                };
                if !reservation.is_empty() {
                    out.held.push(reservation);
                }
                self.result.decisions.push(GateDecision {
                    attempt: self.ctx.attempt,
                    action: i,
                    tool: action.tool.clone(),
                    gate: gate.clone(),
                    decision: decision.clone(),
                });
                match decision {
                    Decision::Allow => {}
                    Decision::Deny(reason) => {
                        out.findings.push(finding(
                            gate,
                            violation(
                                at.clone(),
                                "denied",
                                format!("`{}` was denied: {reason}", action.tool),
                            ),
                        ));
                        allowed = false;
                        // What earlier gates reserved for this action is not spent.
                        for mut r in out.held.drain(..) {
                            r.release();
                        }
                        break;
                    }
                    Decision::Escalate(reason) => {
                        out.pending.push(PendingApproval {
                            index: i,
                            action: action.clone(),
                            gate: gate.clone(),
                            reason,
                        });
                        escalated = true;
                        break;
                    }
                    Decision::Rewrite(arguments) => {
                        let problems = self.check_arguments(tool, &arguments, &at);
                        if !problems.is_empty() {
                            // A gate's rewrite must still fit the tool: a broken gate fails closed.
                            return Err(RunError::Plugin {
                                layer: Layer::Gate.as_str(),
                                plugin: gate.clone(),
                                kind: "bad_rewrite",
                                message: format!(
                                    "gate `{gate}` rewrote `{}` to arguments that fail its schema: {}",
                                    action.tool, problems[0].violation.message
                                ),
                            });
                        }
                        action.arguments = arguments;
                    }
                }
            }
            if allowed {
                let held = std::mem::take(&mut out.held);
                out.reservations.extend(held.into_iter().map(|r| (i, r)));
                if !escalated {
                    out.approved.push((i, action));
                }
            }
        }
        Ok(())
    }
}
