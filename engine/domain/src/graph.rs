//! The step graph of a definition: which step follows which, which fork or decision owns which
//! join, and which steps lie between them.
//!
//! Two kinds of edges:
//! - *flow* edges ([`successors`]): what may run after a step: `nextStepId` (task, wait,
//!   workflow, join), every branch (fork), every case and the default (decision);
//! - *structural* edges ([`structural_successors`]): the flow edges plus fork/decision →
//!   `joinStepId`, since the join follows its fork even when branch tails end without naming it.
//!
//! References to unknown step ids are ignored here (validation reports them).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::definition::{DefinitionSpec, StepDefinition, StepType};

/// The steps that may run after `step` (flow edges), in document order; may name unknown ids.
pub fn successors(step: &StepDefinition) -> Vec<&str> {
    match step.step_type {
        StepType::Fork | StepType::Decision => branch_starts(step),
        _ => step.next_step_id().into_iter().collect(),
    }
}

/// [`successors`] plus the `joinStepId` of a fork or decision.
pub fn structural_successors(step: &StepDefinition) -> Vec<&str> {
    let mut next = successors(step);
    if let Some(join) = step.join_step_id().filter(|j| !j.is_empty()) {
        next.push(join);
    }
    next
}

/// The first steps of a fork's branches, or of a decision's cases then its default step.
pub fn branch_starts(step: &StepDefinition) -> Vec<&str> {
    match step.step_type {
        StepType::Fork => step
            .fork_config
            .iter()
            .flat_map(|c| c.branches.iter().map(|b| b.next_step_id.as_str()))
            .collect(),
        StepType::Decision => step
            .decision_config
            .iter()
            .flat_map(|c| {
                c.cases
                    .iter()
                    .map(|case| case.next_step_id.as_str())
                    .chain(c.default_step_id.as_deref())
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A definition's steps indexed for graph queries. Steps are addressed by id; when an id is
/// duplicated, the first step with it is the one edges lead to.
#[derive(Debug, Clone)]
pub struct Graph<'a> {
    spec: &'a DefinitionSpec,
    index: HashMap<&'a str, usize>,
    /// Structural edges, by step position.
    structural: Vec<Vec<usize>>,
    /// Reversed dependency edges: structural edges plus join ← each of its incoming steps.
    dependencies: Vec<Vec<usize>>,
}

impl<'a> Graph<'a> {
    /// Indexes `spec`.
    pub fn new(spec: &'a DefinitionSpec) -> Self {
        let mut index = HashMap::with_capacity(spec.steps.len());
        for (i, step) in spec.steps.iter().enumerate() {
            index.entry(step.step_definition_id.as_str()).or_insert(i);
        }
        let mut structural = vec![Vec::new(); spec.steps.len()];
        let mut dependencies = vec![Vec::new(); spec.steps.len()];
        for (i, step) in spec.steps.iter().enumerate() {
            for next in structural_successors(step) {
                if let Some(&j) = index.get(next) {
                    structural[i].push(j);
                    dependencies[j].push(i);
                }
            }
            if let (StepType::Join, Some(join)) = (step.step_type, &step.join_config) {
                for incoming in &join.incoming_step_ids {
                    if let Some(&k) = index.get(incoming.as_str()) {
                        dependencies[i].push(k);
                    }
                }
            }
        }
        Self {
            spec,
            index,
            structural,
            dependencies,
        }
    }

    /// The definition this graph indexes.
    pub fn spec(&self) -> &'a DefinitionSpec {
        self.spec
    }

    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&'a StepDefinition> {
        self.position(id).map(|i| &self.spec.steps[i])
    }

    /// The position of the step with this id in `steps`.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    fn id(&self, i: usize) -> &'a str {
        &self.spec.steps[i].step_definition_id
    }

    /// The existing steps that may run after step `id` (flow edges).
    pub fn successors(&self, id: &str) -> Vec<&'a str> {
        self.step(id)
            .map(|s| {
                successors(s)
                    .into_iter()
                    .filter(|n| self.index.contains_key(n))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The steps with a flow edge to step `id`, in document order.
    pub fn predecessors(&self, id: &str) -> Vec<&'a str> {
        self.spec
            .steps
            .iter()
            .filter(|s| successors(s).contains(&id))
            .map(|s| s.step_definition_id.as_str())
            .collect()
    }

    /// For each join step, the fork and decision steps whose `joinStepId` names it (a valid
    /// definition has exactly one per join).
    pub fn join_owners(&self) -> BTreeMap<&'a str, Vec<&'a str>> {
        let mut owners: BTreeMap<&'a str, Vec<&'a str>> = BTreeMap::new();
        for step in &self.spec.steps {
            if step.step_type == StepType::Join {
                owners.entry(step.step_definition_id.as_str()).or_default();
            }
        }
        for step in &self.spec.steps {
            if let Some(list) = step.join_step_id().and_then(|j| owners.get_mut(j)) {
                list.push(step.step_definition_id.as_str());
            }
        }
        owners
    }

    /// The single fork or decision owning join `join_id`, if there is exactly one.
    pub fn join_owner(&self, join_id: &str) -> Option<&'a str> {
        match self.join_owners().get(join_id).map(Vec::as_slice) {
            Some([owner]) => Some(owner),
            _ => None,
        }
    }

    /// The steps reachable from `starts` (included) along structural edges, never entering
    /// `stop`.
    pub fn reachable<'s>(
        &self,
        starts: impl IntoIterator<Item = &'s str>,
        stop: Option<&str>,
    ) -> BTreeSet<&'a str> {
        let stop = stop.and_then(|s| self.position(s));
        let mut seen = vec![false; self.spec.steps.len()];
        let mut queue: VecDeque<usize> = VecDeque::new();
        for start in starts {
            if let Some(i) = self.position(start).filter(|&i| Some(i) != stop)
                && !seen[i]
            {
                seen[i] = true;
                queue.push_back(i);
            }
        }
        while let Some(i) = queue.pop_front() {
            for &j in &self.structural[i] {
                if !seen[j] && Some(j) != stop {
                    seen[j] = true;
                    queue.push_back(j);
                }
            }
        }
        seen.iter()
            .enumerate()
            .filter(|(_, s)| **s)
            .map(|(i, _)| self.id(i))
            .collect()
    }

    /// The steps between fork or decision `owner_id` and its join: reachable from its branch
    /// starts without passing through the join (the join excluded).
    pub fn region(&self, owner_id: &str) -> BTreeSet<&'a str> {
        match self.step(owner_id) {
            Some(owner) => self.reachable(branch_starts(owner), owner.join_step_id()),
            None => BTreeSet::new(),
        }
    }

    /// The steps whose output step `id` may read: those it is reachable from along structural
    /// edges and from the incoming steps of every join on the way (itself excluded unless it
    /// lies on a cycle).
    pub fn upstream(&self, id: &str) -> BTreeSet<&'a str> {
        let Some(start) = self.position(id) else {
            return BTreeSet::new();
        };
        let mut seen = vec![false; self.spec.steps.len()];
        let mut queue = VecDeque::from([start]);
        while let Some(i) = queue.pop_front() {
            for &j in &self.dependencies[i] {
                if !seen[j] {
                    seen[j] = true;
                    queue.push_back(j);
                }
            }
        }
        seen.iter()
            .enumerate()
            .filter(|(_, s)| **s)
            .map(|(i, _)| self.id(i))
            .collect()
    }

    /// Every cycle along structural edges, one per strongly connected component: the ids on
    /// one cycle of it, starting from its first step in document order.
    pub fn cycles(&self) -> Vec<Vec<&'a str>> {
        strongly_connected(&self.structural)
            .into_iter()
            .filter_map(|component| {
                let first = *component.iter().min()?;
                let is_cycle = component.len() > 1 || self.structural[first].contains(&first);
                if !is_cycle {
                    return None;
                }
                let members: BTreeSet<usize> = component.iter().copied().collect();
                Some(
                    self.cycle_through(first, &members)
                        .into_iter()
                        .map(|i| self.id(i))
                        .collect(),
                )
            })
            .collect()
    }

    /// A shortest cycle from `start` back to itself within `members` (a strongly connected set).
    fn cycle_through(&self, start: usize, members: &BTreeSet<usize>) -> Vec<usize> {
        let mut parent: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(i) = queue.pop_front() {
            for &j in &self.structural[i] {
                if j == start {
                    let mut path = vec![i];
                    let mut at = i;
                    while let Some(&p) = parent.get(&at) {
                        path.push(p);
                        at = p;
                    }
                    if at != start {
                        path.push(start);
                    }
                    path.reverse();
                    path.dedup();
                    return path;
                }
                if members.contains(&j) && !parent.contains_key(&j) {
                    parent.insert(j, i);
                    queue.push_back(j);
                }
            }
        }
        vec![start]
    }
}

/// Tarjan's strongly connected components, iteratively (no recursion on user-sized input).
fn strongly_connected(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNVISITED: usize = usize::MAX;
    let n = edges.len();
    let mut index = vec![UNVISITED; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut components = Vec::new();
    let mut counter = 0;
    for root in 0..n {
        if index[root] != UNVISITED {
            continue;
        }
        // (node, next edge to look at)
        let mut work = vec![(root, 0usize)];
        index[root] = counter;
        low[root] = counter;
        counter += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut next)) = work.last_mut() {
            if let Some(&w) = edges[v].get(*next) {
                *next += 1;
                if index[w] == UNVISITED {
                    index[w] = counter;
                    low[w] = counter;
                    counter += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(steps: serde_json::Value) -> DefinitionSpec {
        serde_json::from_value(json!({"name": "g", "steps": steps})).unwrap()
    }

    fn task(id: &str, next: Option<&str>) -> serde_json::Value {
        json!({"stepDefinitionId": id, "type": "task",
               "taskConfig": {"taskDefinitionId": "add", "nextStepId": next}})
    }

    fn fork_join() -> DefinitionSpec {
        spec(json!([
            task("start", Some("f")),
            {"stepDefinitionId": "f", "type": "fork", "forkConfig": {"joinStepId": "j",
                "branches": [{"nextStepId": "a"}, {"nextStepId": "b"}]}},
            task("a", Some("j")),
            task("b", None),
            {"stepDefinitionId": "j", "type": "join",
             "joinConfig": {"incomingStepIds": ["a", "b"], "nextStepId": "end"}},
            task("end", None),
        ]))
    }

    #[test]
    fn successors_and_predecessors() {
        let s = fork_join();
        let g = Graph::new(&s);
        assert_eq!(g.successors("f"), vec!["a", "b"]);
        assert_eq!(
            structural_successors(g.step("f").unwrap()),
            vec!["a", "b", "j"]
        );
        assert_eq!(g.successors("b"), Vec::<&str>::new());
        assert_eq!(g.predecessors("j"), vec!["a"]);
        assert_eq!(g.predecessors("a"), vec!["f"]);
        assert_eq!(g.successors("nope"), Vec::<&str>::new());
    }

    #[test]
    fn join_owners_and_region() {
        let s = fork_join();
        let g = Graph::new(&s);
        assert_eq!(g.join_owners(), BTreeMap::from([("j", vec!["f"])]));
        assert_eq!(g.join_owner("j"), Some("f"));
        assert_eq!(g.region("f"), BTreeSet::from(["a", "b"]));
    }

    #[test]
    fn reachability_and_upstream() {
        let s = fork_join();
        let g = Graph::new(&s);
        assert_eq!(g.reachable(["start"], None).len(), 6);
        assert_eq!(
            g.upstream("end"),
            BTreeSet::from(["start", "f", "a", "b", "j"])
        );
        assert_eq!(g.upstream("b"), BTreeSet::from(["start", "f"]));
        assert_eq!(g.upstream("start"), BTreeSet::new());
    }

    #[test]
    fn cycles_found_once_each() {
        let s = spec(json!([
            task("a", Some("b")),
            task("b", Some("c")),
            task("c", Some("a")),
            task("d", Some("d")),
            task("e", None),
        ]));
        let g = Graph::new(&s);
        let mut cycles = g.cycles();
        cycles.sort();
        assert_eq!(cycles, vec![vec!["a", "b", "c"], vec!["d"]]);
    }

    #[test]
    fn long_chain_does_not_overflow_the_stack() {
        let n = 50_000;
        let steps: Vec<_> = (0..n)
            .map(|i| {
                let next = if i + 1 < n {
                    Some(format!("s{}", i + 1))
                } else {
                    Some("s0".to_owned())
                };
                task(&format!("s{i}"), next.as_deref())
            })
            .collect();
        let s = spec(serde_json::Value::Array(steps));
        let g = Graph::new(&s);
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].len(), n);
    }
}
