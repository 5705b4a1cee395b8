//! Parsing, round trips and the accepted shapes of whole definitions.

use serde_json::{Value, json};

use super::*;

fn parse(doc: Value) -> DefinitionSpec {
    match DefinitionSpec::from_json(doc) {
        Ok(spec) => spec,
        Err(issues) => panic!("expected a valid definition, got {issues:#?}"),
    }
}

/// Parses, then checks that the JSON form parses back to the same spec.
fn parse_round_trip(doc: Value) -> DefinitionSpec {
    let spec = parse(doc);
    assert_eq!(DefinitionSpec::from_json(spec.to_json()), Ok(spec.clone()));
    spec
}

fn structural(doc: Value) -> Vec<(String, String)> {
    match DefinitionSpec::from_json(doc) {
        Ok(_) => panic!("expected a structural error"),
        Err(issues) => issues.into_iter().map(|i| (i.path, i.code)).collect(),
    }
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
        .collect()
}

#[test]
fn task_chain() {
    let spec = parse_round_trip(json!({
        "name": "chain",
        "inputParameters": [{"name": "n", "type": "int", "default": 1}],
        "outputParameters": [{"name": "out", "type": "integer",
            "value": {"type": "taskOutput", "value": {"taskId": "b", "outputKey": "value"}}}],
        "steps": [
            {"stepDefinitionId": "a", "type": "task",
             "parameters": {"value": {"type": "workflowInput", "value": "n"}},
             "taskConfig": {"taskDefinitionId": "add", "nextStepId": "b", "version": "^1", "runner": "wasm"},
             "retryCount": 2, "timeoutSeconds": 5},
            {"stepDefinitionId": "b", "type": "task",
             "parameters": {"value": {"type": "taskOutput", "value": {"taskId": "a", "outputKey": "value"}}},
             "taskConfig": {"taskDefinitionId": "add", "runner": "agent"},
             "retryPolicy": {"maxAttempts": 4, "maxIntervalSeconds": 10, "jitter": 0.2},
             "deadlineSeconds": 60}
        ]
    }));
    assert_eq!(
        spec.entry_step().map(|s| s.step_definition_id.as_str()),
        Some("a")
    );
    let b = spec.step("b").unwrap();
    assert_eq!(b.task_config.as_ref().unwrap().runner, Some(Runner::Agent));
    assert_eq!(b.effective_retry_policy().max_attempts, 4);
    assert_eq!(
        spec.step("a")
            .unwrap()
            .effective_retry_policy()
            .max_attempts,
        3
    );
    assert!(spec.step("c").is_none());
}

#[test]
fn fork_join_with_two_branches_and_a_nested_fork() {
    let spec = parse_round_trip(json!({
        "name": "nested",
        "steps": [
            {"stepDefinitionId": "start", "type": "task",
             "taskConfig": {"taskDefinitionId": "add", "nextStepId": "outer"}},
            {"stepDefinitionId": "outer", "type": "fork", "forkConfig": {"joinStepId": "j1",
                "branches": [{"name": "left", "nextStepId": "inner"}, {"nextStepId": "c"}]}},
            {"stepDefinitionId": "inner", "type": "fork", "forkConfig": {"joinStepId": "j2",
                "branches": [{"nextStepId": "x"}, {"nextStepId": "y"}]}},
            {"stepDefinitionId": "x", "type": "task",
             "taskConfig": {"taskDefinitionId": "add", "nextStepId": "j2"}},
            {"stepDefinitionId": "y", "type": "task", "taskConfig": {"taskDefinitionId": "hash"}},
            {"stepDefinitionId": "j2", "type": "join",
             "joinConfig": {"incomingStepIds": ["x", "y"], "nextStepId": "after"}},
            {"stepDefinitionId": "after", "type": "task",
             "parameters": {"v": {"type": "taskOutput", "value": {"taskId": "y", "path": "/digest"}}},
             "taskConfig": {"taskDefinitionId": "add", "nextStepId": "j1"}},
            {"stepDefinitionId": "c", "type": "task", "taskConfig": {"taskDefinitionId": "add"}},
            {"stepDefinitionId": "j1", "type": "join",
             "joinConfig": {"incomingStepIds": ["after", "c"], "nextStepId": "end"}},
            {"stepDefinitionId": "end", "type": "task",
             "parameters": {"v": {"type": "taskOutput", "value": {"taskId": "c", "outputKey": "value"}}},
             "taskConfig": {"taskDefinitionId": "add"}}
        ]
    }));
    assert_eq!(spec.steps.len(), 10);
}

#[test]
fn wait_with_duration_and_with_signal() {
    parse_round_trip(json!({
        "name": "w",
        "steps": [
            {"stepDefinitionId": "d", "type": "wait", "waitConfig": {
                "durationSeconds": {"type": "constant", "value": 1.5}, "nextStepId": "s"}},
            {"stepDefinitionId": "s", "type": "wait", "waitConfig": {
                "signal": "approved", "timeoutSeconds": 60}}
        ]
    }));
}

#[test]
fn decision_with_default_and_join() {
    let spec = parse_round_trip(json!({
        "name": "d",
        "inputParameters": [{"name": "n", "type": "number", "required": true},
                            {"name": "skip", "type": "boolean", "default": false}],
        "steps": [
            {"stepDefinitionId": "d", "type": "decision", "decisionConfig": {
                "joinStepId": "j",
                "cases": [
                    {"name": "skip", "condition": "input.skip", "nextStepId": "j"},
                    {"name": "big", "condition": "input.n > 10", "nextStepId": "big"}
                ],
                "defaultStepId": "small"}},
            {"stepDefinitionId": "big", "type": "task",
             "taskConfig": {"taskDefinitionId": "hash", "nextStepId": "j"}},
            {"stepDefinitionId": "small", "type": "task",
             "taskConfig": {"taskDefinitionId": "template", "nextStepId": "j"}},
            {"stepDefinitionId": "j", "type": "join", "joinConfig": {"incomingStepIds": ["big", "small"]}}
        ]
    }));
    let d = spec.decision_config_of("d");
    assert_eq!(d.default_step_id.as_deref(), Some("small"));
}

impl DefinitionSpec {
    fn decision_config_of(&self, id: &str) -> &DecisionConfig {
        self.step(id)
            .and_then(|s| s.decision_config.as_ref())
            .unwrap()
    }
}

#[test]
fn workflow_by_id_and_by_name() {
    parse_round_trip(json!({
        "name": "parent",
        "steps": [
            {"stepDefinitionId": "by-id", "type": "workflow", "workflowConfig": {
                "workflowDefinitionId": "0b9c1b1e-7f0e-4d7e-9d43-1f7a3a8f0c11", "nextStepId": "by-name"}},
            {"stepDefinitionId": "by-name", "type": "workflow", "workflowConfig": {
                "workflowName": "task-chain", "version": "^0.1"}}
        ]
    }));
}

/// The Go engine's own example (inventory §5.5), with the fields a Go client sends besides.
#[test]
fn go_engine_example_is_accepted_as_is() {
    let spec = parse_round_trip(json!({
        "id": "5d3c1f0a-1111-2222-3333-444455556666", "version": "0.1.0-1", "isEnabled": false,
        "createdAt": "2025-11-16T10:00:00Z", "updatedAt": "2025-11-16T10:00:00Z",
        "inputParameters": null, "outputParameters": null, "metadata": null,
        "name": "fork",
        "steps": [
            {"stepDefinitionId": "fork", "name": "Fork", "type": "fork", "forkConfig": {
                "joinStepId": "join", "branches": [{"nextStepId": "wait1"}, {"nextStepId": "wait2"}]}},
            {"stepDefinitionId": "wait1", "name": "Wait 1", "type": "wait", "parameters": null,
             "waitConfig": {"durationSeconds": {"type": "workflow", "value": "duration"}}},
            {"stepDefinitionId": "wait2", "name": "Wait 2", "type": "wait",
             "waitConfig": {"durationSeconds": {"type": "workflow", "value": "duration"}}},
            {"stepDefinitionId": "join", "name": "Join", "type": "join",
             "joinConfig": {"incomingStepIds": ["wait1", "wait2"]}}
        ]
    }));
    let json = spec.to_json();
    for dropped in [
        "id",
        "version",
        "isEnabled",
        "createdAt",
        "inputParameters",
        "metadata",
    ] {
        assert!(json.get(dropped).is_none(), "{dropped} kept");
    }
    assert_eq!(
        json["steps"][1]["waitConfig"]["durationSeconds"],
        json!({"type": "workflowInput", "value": "duration"})
    );
}

#[test]
fn name_is_trimmed() {
    let spec = parse(json!({"name": "  spaced  ", "steps": [
        {"stepDefinitionId": "a", "type": "task", "taskConfig": {"taskDefinitionId": "add"}}]}));
    assert_eq!(spec.name, "spaced");
}

#[test]
fn structural_errors_carry_the_pointer_of_the_field() {
    let task =
        json!({"stepDefinitionId": "a", "type": "task", "taskConfig": {"taskDefinitionId": "add"}});
    assert_eq!(structural(json!([])), pairs(&[("", "invalid_type")]));
    assert_eq!(
        structural(json!({"steps": [task]})),
        pairs(&[("/name", "required")])
    );
    assert_eq!(
        structural(json!({"name": "x"})),
        pairs(&[("/steps", "required")])
    );
    assert_eq!(
        structural(json!({"name": 3, "steps": []})),
        pairs(&[("/name", "invalid_type")])
    );
    assert_eq!(
        structural(json!({"name": "x", "steps": [{"type": "task"}]})),
        pairs(&[("/steps/0/stepDefinitionId", "required")])
    );
    assert_eq!(
        structural(json!({"name": "x", "steps": [{"stepDefinitionId": "a", "type": "loop"}]})),
        pairs(&[("/steps/0/type", "invalid_value")])
    );
    assert_eq!(
        structural(json!({"name": "x", "steps": [
            {"stepDefinitionId": "a", "type": "task", "taskConfig": {"nextStepId": "b"}}]})),
        pairs(&[("/steps/0/taskConfig/taskDefinitionId", "required")])
    );
    assert_eq!(
        structural(json!({"name": "x", "steps": [
            {"stepDefinitionId": "a", "type": "task", "timeoutSeconds": -1,
             "taskConfig": {"taskDefinitionId": "add"}}]})),
        pairs(&[("/steps/0/timeoutSeconds", "invalid_value")])
    );
    assert_eq!(
        structural(json!({"name": "x", "steps": [
            {"stepDefinitionId": "a", "type": "task", "taskConfig": {"taskDefinitionId": "add"},
             "parameters": {"a/b": {"type": "magic", "value": 1}}}]})),
        pairs(&[("/steps/0/parameters/a~1b/type", "invalid_binding")])
    );
    assert_eq!(
        structural(json!({"name": "x", "steps": [task],
            "outputParameters": [{"name": "o", "value": {"type": "taskOutput", "value": {"outputKey": "v"}}}]})),
        pairs(&[("/outputParameters/0/value/value/taskId", "invalid_binding")])
    );
}

#[test]
fn examples_validate() {
    for (name, text) in [
        (
            "task-chain",
            include_str!("../../../../examples/definitions/task-chain.json"),
        ),
        (
            "fork-join",
            include_str!("../../../../examples/definitions/fork-join.json"),
        ),
        (
            "wait",
            include_str!("../../../../examples/definitions/wait.json"),
        ),
        (
            "decision",
            include_str!("../../../../examples/definitions/decision.json"),
        ),
        (
            "sub-workflow",
            include_str!("../../../../examples/definitions/sub-workflow.json"),
        ),
    ] {
        let doc: Value = serde_json::from_str(text).unwrap();
        let spec = parse_round_trip(doc);
        assert_eq!(spec.name, name);
    }
}

#[test]
fn sub_workflow_example_names_task_chain() {
    let doc: Value = serde_json::from_str(include_str!(
        "../../../../examples/definitions/sub-workflow.json"
    ))
    .unwrap();
    let spec = parse(doc);
    let config = spec.steps[0].workflow_config.as_ref().unwrap();
    assert_eq!(config.workflow_name.as_deref(), Some("task-chain"));
}
