//! Graph rules: forks and decisions closed by their joins, joins waiting for the right steps,
//! every step reachable from the entry, no cycles.

use std::collections::BTreeSet;

use super::{Validator, codes, steps_pointer};
use crate::definition::{StepDefinition, StepType};
use crate::graph;
use crate::pointer::Pointer;

impl<'a> Validator<'a> {
    pub(super) fn check_flow(&mut self) {
        let cycles = self.graph.cycles();
        self.check_join_steps_of_owners();
        self.check_join_owners();
        self.check_regions(cycles.is_empty());
        self.check_reachability();
        for cycle in cycles {
            let Some(position) = cycle.first().and_then(|id| self.graph.position(id)) else {
                continue;
            };
            let mut shown: Vec<&str> = cycle.clone();
            shown.push(cycle[0]);
            self.report(
                &steps_pointer(position),
                codes::CYCLE,
                format!(
                    "steps form a cycle: {} (use a retry policy to repeat a step)",
                    shown.join(" → ")
                ),
            );
        }
    }

    /// `fork_without_join` / `decision_without_join`.
    fn check_join_steps_of_owners(&mut self) {
        for (i, step) in self.spec.steps.iter().enumerate() {
            let (code, kind) = match step.step_type {
                StepType::Fork => (codes::FORK_WITHOUT_JOIN, "fork"),
                StepType::Decision => (codes::DECISION_WITHOUT_JOIN, "decision"),
                _ => continue,
            };
            let Some(join_id) = step.join_step_id() else {
                continue; // missing config, reported already
            };
            let path = steps_pointer(i)
                .child(step.step_type.config_key())
                .child("joinStepId");
            let problem = if join_id.is_empty() {
                format!("a {kind} needs a joinStepId naming the join step that closes it")
            } else {
                match self.graph.step(join_id) {
                    None => format!("the {kind}'s joinStepId `{join_id}` names no step"),
                    Some(j) if j.step_type != StepType::Join => format!(
                        "the {kind}'s joinStepId `{join_id}` is a {} step, not a join",
                        j.step_type.as_str()
                    ),
                    Some(_) => continue,
                }
            };
            self.report(&path, code, problem);
        }
    }

    /// `join_without_fork`.
    fn check_join_owners(&mut self) {
        let owners = self.graph.join_owners();
        for (i, step) in self.spec.steps.iter().enumerate() {
            let id = step.step_definition_id.as_str();
            if step.step_type != StepType::Join || self.graph.position(id) != Some(i) {
                continue;
            }
            let message = match owners.get(id).map(Vec::as_slice).unwrap_or_default() {
                [] => format!("no fork or decision names the join `{id}` as its joinStepId"),
                [_] => continue,
                several => format!(
                    "the join `{id}` closes several forks or decisions ({}); each needs its own join",
                    several.join(", ")
                ),
            };
            self.report(&steps_pointer(i), codes::JOIN_WITHOUT_FORK, message);
        }
    }

    /// `join_not_reachable`, `join_missing_incoming`, `branch_not_joined`,
    /// `branch_escapes_join`, for every join with exactly one owner.
    fn check_regions(&mut self, acyclic: bool) {
        for (join_id, owners) in self.graph.join_owners() {
            let [owner_id] = owners.as_slice() else {
                continue;
            };
            let (Some(join_pos), Some(owner_pos)) =
                (self.graph.position(join_id), self.graph.position(owner_id))
            else {
                continue;
            };
            let join = &self.spec.steps[join_pos];
            let owner = &self.spec.steps[owner_pos];
            let Some(config) = &join.join_config else {
                continue;
            };
            let region = self.graph.region(owner_id);
            let incoming: BTreeSet<&str> = config
                .incoming_step_ids
                .iter()
                .map(String::as_str)
                .collect();
            let list_path = steps_pointer(join_pos)
                .child("joinConfig")
                .child("incomingStepIds");

            for (k, s) in config.incoming_step_ids.iter().enumerate() {
                let Some(step) = self.graph.step(s) else {
                    continue; // unknown_step, reported already
                };
                let problem = if !region.contains(s.as_str()) {
                    format!(
                        "the join `{join_id}` waits for `{s}`, which is not inside the branches of `{owner_id}`"
                    )
                } else if let Some(other) =
                    graph::successors(step).into_iter().find(|n| *n != join_id)
                {
                    format!(
                        "the join `{join_id}` waits for `{s}`, but `{s}` continues to `{other}` instead of ending its branch or going to the join"
                    )
                } else {
                    continue;
                };
                self.report(&list_path.child(k), codes::JOIN_NOT_REACHABLE, problem);
            }

            for s in self.in_document_order(&region) {
                if !incoming.contains(s.step_definition_id.as_str())
                    && graph::successors(s).contains(&join_id)
                {
                    self.report(
                        &list_path,
                        codes::JOIN_MISSING_INCOMING,
                        format!(
                            "`{}` continues to the join `{join_id}`, which does not list it in incomingStepIds",
                            s.step_definition_id
                        ),
                    );
                }
            }

            for (path, start) in branch_paths(owner_pos, owner) {
                if start == join_id || self.graph.position(start).is_none() {
                    continue;
                }
                let branch = self.graph.reachable([start], Some(join_id));
                if branch.is_disjoint(&incoming) {
                    self.report(
                        &path,
                        codes::BRANCH_NOT_JOINED,
                        format!(
                            "the join `{join_id}` waits for none of the steps of the branch starting at `{start}`"
                        ),
                    );
                }
            }

            if acyclic {
                let after_join = self.graph.reachable([join_id], None);
                let escaped: BTreeSet<&str> = region.intersection(&after_join).copied().collect();
                for s in self.in_document_order(&escaped) {
                    let position = self
                        .graph
                        .position(&s.step_definition_id)
                        .unwrap_or_default();
                    self.report(
                        &steps_pointer(position),
                        codes::BRANCH_ESCAPES_JOIN,
                        format!(
                            "`{}` is inside the branches of `{owner_id}` and also after its join `{join_id}`",
                            s.step_definition_id
                        ),
                    );
                }
            }
        }
    }

    /// The steps named in `ids`, in document order.
    fn in_document_order(&self, ids: &BTreeSet<&str>) -> Vec<&'a StepDefinition> {
        let mut positions: Vec<usize> = ids
            .iter()
            .filter_map(|id| self.graph.position(id))
            .collect();
        positions.sort_unstable();
        positions.into_iter().map(|p| &self.spec.steps[p]).collect()
    }

    /// `unreachable_step`.
    fn check_reachability(&mut self) {
        let Some(entry) = self.spec.entry_step() else {
            return;
        };
        let reached = self
            .graph
            .reachable([entry.step_definition_id.as_str()], None);
        for (i, step) in self.spec.steps.iter().enumerate() {
            let id = step.step_definition_id.as_str();
            if self.graph.position(id) == Some(i) && !reached.contains(id) {
                self.report(
                    &steps_pointer(i),
                    codes::UNREACHABLE_STEP,
                    format!(
                        "step `{id}` cannot be reached from the entry step `{}`",
                        entry.step_definition_id
                    ),
                );
            }
        }
    }
}

/// Each branch start of a fork or decision with the pointer of the branch (or case, or
/// `defaultStepId`), in the order of [`graph::branch_starts`].
fn branch_paths(position: usize, owner: &StepDefinition) -> Vec<(Pointer, &str)> {
    let config = steps_pointer(position).child(owner.step_type.config_key());
    let mut paths = Vec::new();
    if let Some(fork) = owner
        .fork_config
        .as_ref()
        .filter(|_| owner.step_type == StepType::Fork)
    {
        for (b, branch) in fork.branches.iter().enumerate() {
            paths.push((
                config.child("branches").child(b),
                branch.next_step_id.as_str(),
            ));
        }
    }
    if let Some(decision) = owner
        .decision_config
        .as_ref()
        .filter(|_| owner.step_type == StepType::Decision)
    {
        for (c, case) in decision.cases.iter().enumerate() {
            paths.push((config.child("cases").child(c), case.next_step_id.as_str()));
        }
        if let Some(default) = &decision.default_step_id {
            paths.push((config.child("defaultStepId"), default.as_str()));
        }
    }
    paths
}
