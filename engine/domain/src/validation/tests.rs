//! One test per issue code, each asserting the exact paths and codes reported.

use serde_json::{Value, json};

use crate::definition::DefinitionSpec;

/// `(path, code)` of every issue `from_json` reports (empty if valid).
fn issues(doc: Value) -> Vec<(String, String)> {
    match DefinitionSpec::from_json(doc) {
        Ok(_) => Vec::new(),
        Err(issues) => issues.into_iter().map(|i| (i.path, i.code)).collect(),
    }
}

fn messages(doc: Value) -> Vec<String> {
    DefinitionSpec::from_json(doc)
        .err()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.message)
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
        .collect()
}

fn def(steps: Vec<Value>) -> Value {
    json!({"name": "t", "steps": steps})
}

fn task(id: &str, next: Option<&str>) -> Value {
    let mut config = json!({"taskDefinitionId": "add"});
    if let Some(next) = next {
        config["nextStepId"] = json!(next);
    }
    json!({"stepDefinitionId": id, "type": "task", "taskConfig": config})
}

fn with(mut step: Value, key: &str, value: Value) -> Value {
    step[key] = value;
    step
}

fn fork(id: &str, join: &str, branches: &[&str]) -> Value {
    let branches: Vec<Value> = branches.iter().map(|b| json!({"nextStepId": b})).collect();
    json!({"stepDefinitionId": id, "type": "fork",
           "forkConfig": {"joinStepId": join, "branches": branches}})
}

fn join(id: &str, incoming: &[&str], next: Option<&str>) -> Value {
    let mut config = json!({"incomingStepIds": incoming});
    if let Some(next) = next {
        config["nextStepId"] = json!(next);
    }
    json!({"stepDefinitionId": id, "type": "join", "joinConfig": config})
}

fn task_output(task_id: &str) -> Value {
    json!({"type": "taskOutput", "value": {"taskId": task_id, "outputKey": "value"}})
}

#[test]
fn valid_fork_join_has_no_issue() {
    let doc = def(vec![
        fork("f", "j", &["a", "b"]),
        task("a", Some("j")),
        task("b", None),
        join("j", &["a", "b"], None),
    ]);
    assert_eq!(issues(doc), pairs(&[]));
}

#[test]
fn required() {
    assert_eq!(
        issues(json!({"steps": [task("a", None)]})),
        pairs(&[("/name", "required")])
    );
    assert_eq!(
        issues(def(vec![
            json!({"stepDefinitionId": "d", "type": "decision",
            "decisionConfig": {"joinStepId": "j", "cases": [{"nextStepId": "a"}]}})
        ])),
        pairs(&[("/steps/0/decisionConfig/cases/0/condition", "required")])
    );
}

#[test]
fn empty() {
    assert_eq!(
        issues(json!({"name": " ", "steps": []})),
        pairs(&[("/name", "empty"), ("/steps", "empty")])
    );
    assert_eq!(
        issues(def(vec![with(
            task("", None),
            "taskConfig",
            json!({"taskDefinitionId": ""})
        ),])),
        pairs(&[
            ("/steps/0/stepDefinitionId", "empty"),
            ("/steps/0/taskConfig/taskDefinitionId", "empty"),
        ])
    );
    assert_eq!(
        issues(def(vec![
            json!({"stepDefinitionId": "f", "type": "fork", "forkConfig": {"joinStepId": "j", "branches": []}}),
            join("j", &[], None),
        ])),
        pairs(&[
            ("/steps/0/forkConfig/branches", "empty"),
            ("/steps/1/joinConfig/incomingStepIds", "empty"),
        ])
    );
}

#[test]
fn invalid_type() {
    assert_eq!(
        issues(json!({"name": "t", "steps": "a"})),
        pairs(&[("/steps", "invalid_type")])
    );
    assert_eq!(
        issues(def(vec![with(task("a", None), "retryCount", json!("3"))])),
        pairs(&[("/steps/0/retryCount", "invalid_type")])
    );
}

#[test]
fn invalid_value() {
    let long_name = "x".repeat(256);
    assert_eq!(
        issues(
            json!({"name": long_name, "timeoutSeconds": 0, "maxConcurrentRuns": 0,
                      "steps": [task("a", None)]})
        ),
        pairs(&[
            ("/name", "invalid_value"),
            ("/timeoutSeconds", "invalid_value"),
            ("/maxConcurrentRuns", "invalid_value"),
        ])
    );
    let retry = json!({"maxAttempts": 0, "initialIntervalSeconds": -1, "backoffCoefficient": 0.5,
                       "maxIntervalSeconds": -2, "jitter": 1.5});
    assert_eq!(
        issues(def(vec![
            with(
                with(
                    with(task("a", Some("b")), "retryPolicy", retry),
                    "timeoutSeconds",
                    json!(0)
                ),
                "deadlineSeconds",
                json!(0)
            ),
            json!({"stepDefinitionId": "b", "type": "task",
                   "taskConfig": {"taskDefinitionId": "add", "version": "latest", "nextStepId": "c"}}),
            json!({"stepDefinitionId": "c", "type": "wait", "waitConfig": {
                "durationSeconds": {"type": "constant", "value": -5}, "timeoutSeconds": 3, "nextStepId": "d"}}),
            json!({"stepDefinitionId": "d", "type": "wait", "waitConfig": {
                "durationSeconds": {"type": "constant", "value": 5}, "signal": "go", "nextStepId": "e"}}),
            json!({"stepDefinitionId": "e", "type": "workflow", "workflowConfig": {"nextStepId": "f"}}),
            json!({"stepDefinitionId": "f", "type": "workflow", "workflowConfig": {
                "workflowDefinitionId": "id", "workflowName": "name", "nextStepId": "g"}}),
            json!({"stepDefinitionId": "g", "type": "workflow", "workflowConfig": {
                "workflowDefinitionId": "id", "version": "1.0.0", "nextStepId": "h"}}),
            json!({"stepDefinitionId": "h", "type": "workflow", "workflowConfig": {
                "workflowName": "child", "version": "one"}}),
        ])),
        pairs(&[
            ("/steps/0/timeoutSeconds", "invalid_value"),
            ("/steps/0/deadlineSeconds", "invalid_value"),
            ("/steps/0/retryPolicy/maxAttempts", "invalid_value"),
            (
                "/steps/0/retryPolicy/initialIntervalSeconds",
                "invalid_value"
            ),
            ("/steps/0/retryPolicy/backoffCoefficient", "invalid_value"),
            ("/steps/0/retryPolicy/maxIntervalSeconds", "invalid_value"),
            ("/steps/0/retryPolicy/jitter", "invalid_value"),
            ("/steps/1/taskConfig/version", "invalid_value"),
            ("/steps/2/waitConfig/durationSeconds/value", "invalid_value"),
            ("/steps/2/waitConfig/timeoutSeconds", "invalid_value"),
            ("/steps/3/waitConfig", "invalid_value"),
            ("/steps/4/workflowConfig", "invalid_value"),
            ("/steps/5/workflowConfig", "invalid_value"),
            ("/steps/6/workflowConfig/version", "invalid_value"),
            ("/steps/7/workflowConfig/version", "invalid_value"),
        ])
    );
    assert_eq!(
        issues(def(vec![
            fork("f", "j", &["a"]),
            task("a", Some("j")),
            join("j", &["a", "a"], None),
        ])),
        pairs(&[("/steps/2/joinConfig/incomingStepIds/1", "invalid_value")])
    );
    assert_eq!(
        issues(json!({"name": "t", "steps": [task("a", None)],
            "inputParameters": [{"name": "p", "type": "object", "schema": "string"}]})),
        pairs(&[("/inputParameters/0/schema", "invalid_value")])
    );
}

#[test]
fn duplicate_step_id() {
    assert_eq!(
        issues(def(vec![
            task("a", Some("b")),
            task("b", None),
            task("a", None)
        ])),
        pairs(&[("/steps/2/stepDefinitionId", "duplicate_step_id")])
    );
}

#[test]
fn duplicate_parameter() {
    let doc = json!({"name": "t", "steps": [task("a", None)],
        "inputParameters": [{"name": "n", "type": "string"}, {"name": "n", "type": "string"}],
        "outputParameters": [{"name": "o", "value": task_output("a")}, {"name": "o", "value": task_output("a")}]});
    assert_eq!(
        issues(doc),
        pairs(&[
            ("/inputParameters/1/name", "duplicate_parameter"),
            ("/outputParameters/1/name", "duplicate_parameter"),
        ])
    );
}

#[test]
fn unknown_step() {
    assert_eq!(
        issues(def(vec![with(
            task("a", Some("nope")),
            "parameters",
            json!({"x": task_output("ghost")})
        ),])),
        pairs(&[
            ("/steps/0/taskConfig/nextStepId", "unknown_step"),
            ("/steps/0/parameters/x/value/taskId", "unknown_step"),
        ])
    );
    assert_eq!(
        issues(def(vec![
            fork("f", "j", &["a", "zz"]),
            task("a", Some("j")),
            join("j", &["a", "ghost"], None),
        ])),
        pairs(&[
            ("/steps/0/forkConfig/branches/1/nextStepId", "unknown_step"),
            ("/steps/2/joinConfig/incomingStepIds/1", "unknown_step"),
        ])
    );
    assert_eq!(
        issues(json!({"name": "t", "steps": [task("a", None)],
            "outputParameters": [{"name": "o", "value": task_output("ghost")}]})),
        pairs(&[("/outputParameters/0/value/value/taskId", "unknown_step")])
    );
}

#[test]
fn missing_config() {
    assert_eq!(
        issues(def(vec![
            json!({"stepDefinitionId": "a", "type": "task"}),
            json!({"stepDefinitionId": "w", "type": "wait", "waitConfig": {}}),
        ])),
        pairs(&[
            ("/steps/0/taskConfig", "missing_config"),
            ("/steps/1/waitConfig", "missing_config"),
            ("/steps/1", "unreachable_step"),
        ])
    );
}

#[test]
fn unexpected_config() {
    assert_eq!(
        issues(def(vec![with(
            task("a", None),
            "waitConfig",
            json!({"durationSeconds": {"type": "constant", "value": 1}})
        )])),
        pairs(&[("/steps/0/waitConfig", "unexpected_config")])
    );
}

#[test]
fn fork_without_join() {
    let no_join = json!({"stepDefinitionId": "f", "type": "fork",
                         "forkConfig": {"branches": [{"nextStepId": "a"}]}});
    assert_eq!(
        issues(def(vec![no_join, task("a", None)])),
        pairs(&[("/steps/0/forkConfig/joinStepId", "fork_without_join")])
    );
    assert_eq!(
        issues(def(vec![fork("f", "nope", &["a"]), task("a", None)])),
        pairs(&[("/steps/0/forkConfig/joinStepId", "fork_without_join")])
    );
    assert_eq!(
        issues(def(vec![fork("f", "a", &["a"]), task("a", None)])),
        pairs(&[("/steps/0/forkConfig/joinStepId", "fork_without_join")])
    );
}

#[test]
fn decision_without_join() {
    let decision = json!({"stepDefinitionId": "d", "type": "decision", "decisionConfig": {
        "joinStepId": "a", "cases": [{"condition": "true", "nextStepId": "a"}]}});
    assert_eq!(
        issues(def(vec![decision, task("a", None)])),
        pairs(&[(
            "/steps/0/decisionConfig/joinStepId",
            "decision_without_join"
        )])
    );
}

#[test]
fn join_without_fork() {
    assert_eq!(
        issues(def(vec![task("a", Some("j")), join("j", &["a"], None)])),
        pairs(&[("/steps/1", "join_without_fork")])
    );
    assert_eq!(
        issues(def(vec![
            fork("f1", "j", &["f2"]),
            fork("f2", "j", &["b"]),
            task("b", Some("j")),
            join("j", &["b"], None),
        ])),
        pairs(&[("/steps/3", "join_without_fork")])
    );
}

#[test]
fn join_not_reachable() {
    // `start` is before the fork, not inside its branches.
    assert_eq!(
        issues(def(vec![
            task("start", Some("f")),
            fork("f", "j", &["a", "b"]),
            task("a", Some("j")),
            task("b", Some("j")),
            join("j", &["a", "b", "start"], None),
        ])),
        pairs(&[(
            "/steps/4/joinConfig/incomingStepIds/2",
            "join_not_reachable"
        )])
    );
    // `a` is inside, but continues to `c` rather than ending or going to the join.
    assert_eq!(
        issues(def(vec![
            fork("f", "j", &["a", "b"]),
            task("a", Some("c")),
            task("c", None),
            task("b", Some("j")),
            join("j", &["a", "b"], None),
        ])),
        pairs(&[(
            "/steps/4/joinConfig/incomingStepIds/0",
            "join_not_reachable"
        )])
    );
}

#[test]
fn join_missing_incoming() {
    assert_eq!(
        issues(def(vec![
            fork("f", "j", &["a", "b"]),
            task("a", Some("j")),
            task("b", Some("j")),
            join("j", &["a"], None),
        ])),
        pairs(&[
            (
                "/steps/3/joinConfig/incomingStepIds",
                "join_missing_incoming"
            ),
            ("/steps/0/forkConfig/branches/1", "branch_not_joined"),
        ])
    );
}

#[test]
fn branch_not_joined() {
    assert_eq!(
        issues(def(vec![
            fork("f", "j", &["a", "b"]),
            task("a", Some("j")),
            task("b", None),
            join("j", &["a"], None),
        ])),
        pairs(&[("/steps/0/forkConfig/branches/1", "branch_not_joined")])
    );
    let decision = json!({"stepDefinitionId": "d", "type": "decision", "decisionConfig": {
        "joinStepId": "j", "cases": [{"condition": "input.x", "nextStepId": "a"}],
        "defaultStepId": "b"}});
    assert_eq!(
        issues(def(vec![
            decision,
            task("a", Some("j")),
            task("b", None),
            join("j", &["a"], None)
        ])),
        pairs(&[("/steps/0/decisionConfig/defaultStepId", "branch_not_joined")])
    );
}

#[test]
fn branch_escapes_join() {
    assert_eq!(
        issues(def(vec![
            fork("f", "j", &["a", "b"]),
            task("a", Some("k")),
            task("b", Some("j")),
            join("j", &["b"], Some("k")),
            task("k", None),
        ])),
        pairs(&[
            ("/steps/0/forkConfig/branches/0", "branch_not_joined"),
            ("/steps/4", "branch_escapes_join"),
        ])
    );
}

#[test]
fn unreachable_step() {
    assert_eq!(
        issues(def(vec![
            task("a", None),
            task("b", Some("c")),
            task("c", None)
        ])),
        pairs(&[
            ("/steps/1", "unreachable_step"),
            ("/steps/2", "unreachable_step")
        ])
    );
}

#[test]
fn cycle() {
    let doc = def(vec![
        task("a", Some("b")),
        task("b", Some("c")),
        task("c", Some("b")),
    ]);
    assert_eq!(issues(doc.clone()), pairs(&[("/steps/1", "cycle")]));
    assert_eq!(
        messages(doc),
        vec!["steps form a cycle: b → c → b (use a retry policy to repeat a step)".to_owned()]
    );
    assert_eq!(
        issues(def(vec![task("a", Some("a"))])),
        pairs(&[("/steps/0", "cycle")])
    );
}

#[test]
fn invalid_parameter_type() {
    let doc = json!({"name": "t", "steps": [task("a", None)],
        "inputParameters": [{"name": "d", "type": "date"}, {"name": "n", "type": "Float"}],
        "outputParameters": [{"name": "o", "type": "thing", "value": task_output("a")}]});
    assert_eq!(
        issues(doc),
        pairs(&[
            ("/inputParameters/0/type", "invalid_parameter_type"),
            ("/outputParameters/0/type", "invalid_parameter_type"),
        ])
    );
}

#[test]
fn invalid_default() {
    let doc = json!({"name": "t", "steps": [task("a", None)], "inputParameters": [
        {"name": "i", "type": "integer", "default": 1.5},
        {"name": "j", "type": "integer", "default": 2.0},
        {"name": "s", "type": "string", "default": 3},
        {"name": "l", "type": "list", "default": []}]});
    assert_eq!(
        issues(doc),
        pairs(&[
            ("/inputParameters/0/default", "invalid_default"),
            ("/inputParameters/2/default", "invalid_default"),
        ])
    );
}

#[test]
fn invalid_binding() {
    assert_eq!(
        issues(def(vec![with(
            task("a", None),
            "parameters",
            json!({"x": {"type": "magic", "value": 1}})
        )])),
        pairs(&[("/steps/0/parameters/x/type", "invalid_binding")])
    );
    assert_eq!(
        issues(def(vec![
            task("a", Some("b")),
            with(
                task("b", None),
                "parameters",
                json!({
                    "whole": {"type": "taskOutput", "value": {"taskId": "a"}},
                    "bad": {"type": "taskOutput", "value": {"taskId": "a", "path": "value"}}
                })
            ),
        ])),
        pairs(&[
            ("/steps/1/parameters/bad/value/path", "invalid_binding"),
            ("/steps/1/parameters/whole/value", "invalid_binding"),
        ])
    );
}

#[test]
fn unknown_input_parameter() {
    let doc = json!({"name": "t", "inputParameters": [{"name": "n", "type": "integer"}],
        "steps": [with(task("a", None), "parameters", json!({
            "ok": {"type": "workflowInput", "value": "n"},
            "x": {"type": "workflow", "value": "m"}}))]});
    assert_eq!(
        issues(doc),
        pairs(&[("/steps/0/parameters/x/value", "unknown_input_parameter")])
    );
}

#[test]
fn binding_not_upstream() {
    assert_eq!(
        issues(def(vec![
            with(
                task("a", Some("b")),
                "parameters",
                json!({"x": task_output("b")})
            ),
            with(
                task("b", None),
                "parameters",
                json!({"self": task_output("b")})
            ),
        ])),
        pairs(&[
            ("/steps/0/parameters/x/value/taskId", "binding_not_upstream"),
            (
                "/steps/1/parameters/self/value/taskId",
                "binding_not_upstream"
            ),
        ])
    );
    // A sibling branch does not run before this one; the other branch's tail is upstream of
    // the join's successor.
    assert_eq!(
        issues(def(vec![
            fork("f", "j", &["a", "b"]),
            with(
                task("a", Some("j")),
                "parameters",
                json!({"x": task_output("b")})
            ),
            task("b", None),
            join("j", &["a", "b"], Some("after")),
            with(
                task("after", None),
                "parameters",
                json!({"x": task_output("b")})
            ),
        ])),
        pairs(&[("/steps/1/parameters/x/value/taskId", "binding_not_upstream")])
    );
}

#[test]
fn invalid_expression() {
    let decision = json!({"stepDefinitionId": "d", "type": "decision", "decisionConfig": {
        "joinStepId": "j",
        "cases": [{"condition": "input.n >", "nextStepId": "a"}, {"condition": " ", "nextStepId": "a"}]}});
    assert_eq!(
        issues(def(vec![
            decision,
            with(
                task("a", Some("j")),
                "parameters",
                json!({"e": {"type": "expression", "value": "steps.(("}})
            ),
            join("j", &["a"], None),
        ])),
        pairs(&[
            (
                "/steps/0/decisionConfig/cases/0/condition",
                "invalid_expression"
            ),
            (
                "/steps/0/decisionConfig/cases/1/condition",
                "invalid_expression"
            ),
            ("/steps/1/parameters/e/value", "invalid_expression"),
        ])
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let doc = json!({
        "name": "",
        "inputParameters": [{"name": "n", "type": "integer", "default": "x"},
                            {"name": "n", "type": "colour"}],
        "steps": [
            fork("f", "nope", &["a", "b"]),
            with(task("a", Some("ghost")), "parameters",
                 json!({"v": {"type": "workflowInput", "value": "missing"}})),
            json!({"stepDefinitionId": "b", "type": "decision", "forkConfig": {"joinStepId": "x", "branches": []},
                   "decisionConfig": {"joinStepId": "", "cases": [{"condition": "1 +", "nextStepId": "b"}]}}),
            task("a", None),
            join("lonely", &["a"], None),
        ]
    });
    assert_eq!(
        issues(doc),
        pairs(&[
            ("/name", "empty"),
            ("/inputParameters/0/default", "invalid_default"),
            ("/inputParameters/1/name", "duplicate_parameter"),
            ("/inputParameters/1/type", "invalid_parameter_type"),
            ("/steps/1/taskConfig/nextStepId", "unknown_step"),
            ("/steps/1/parameters/v/value", "unknown_input_parameter"),
            ("/steps/2/forkConfig", "unexpected_config"),
            (
                "/steps/2/decisionConfig/cases/0/condition",
                "invalid_expression"
            ),
            ("/steps/3/stepDefinitionId", "duplicate_step_id"),
            ("/steps/0/forkConfig/joinStepId", "fork_without_join"),
            (
                "/steps/2/decisionConfig/joinStepId",
                "decision_without_join"
            ),
            ("/steps/4", "join_without_fork"),
            ("/steps/4", "unreachable_step"),
            ("/steps/2", "cycle"),
        ])
    );
}

#[test]
fn issue_serialises_and_displays() {
    let issue = super::Issue::new("/steps/0", "cycle", "steps form a cycle");
    assert_eq!(
        serde_json::to_value(&issue).unwrap(),
        json!({"path": "/steps/0", "code": "cycle", "message": "steps form a cycle"})
    );
    assert_eq!(issue.to_string(), "/steps/0: steps form a cycle (cycle)");
    assert_eq!(
        super::Issue::new("", "empty", "x").to_string(),
        "/: x (empty)"
    );
}

#[test]
fn parameter_schemas_must_compile_and_defaults_must_match_them() {
    let with = |parameter: Value| {
        issues(
            json!({"name": "w", "steps": [{"stepDefinitionId": "a", "type": "task",
            "taskConfig": {"taskDefinitionId": "add"}}],
            "inputParameters": [parameter]}),
        )
    };
    assert_eq!(
        with(json!({"name": "p", "type": "string", "schema": {"type": "nonsense"}})),
        pairs(&[("/inputParameters/0/schema", "invalid_value")])
    );
    assert_eq!(
        with(json!({"name": "p", "type": "string", "schema": {"maxLength": 2}, "default": "long"})),
        pairs(&[("/inputParameters/0/default", "invalid_default")])
    );
    assert!(
        with(json!({"name": "p", "type": "string", "schema": {"maxLength": 8}, "default": "ok"}))
            .is_empty()
    );
}
