//! The `weft` client subcommands, black-box: the real server runs on port 0 (SQLite and
//! PostgreSQL, tokens on), and the `weft` binary is run as a process against it, the way a
//! person or a script would.

#[allow(dead_code, unused_imports)]
#[path = "api/helpers.rs"]
mod helpers;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use helpers::{ADMIN_TOKEN, READ_TOKEN, TestApp, plugin_path, spawn_app_with_auth};

/// What a finished `weft` process left.
#[derive(Debug)]
struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }

    fn ok(self) -> Finished {
        assert_eq!(self.code, Some(0), "weft failed: {self:?}");
        self
    }
}

/// `weft ARGS` against `app`, with `token` (no inherited `WEFT_*` variables).
fn command(app: &TestApp, token: Option<&str>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
    for (key, _) in std::env::vars() {
        if key.starts_with("WEFT_") {
            command.env_remove(key);
        }
    }
    command
        .args(args)
        .env("WEFT_SERVER", format!("http://{}", app.address))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(token) = token {
        command.env("WEFT_TOKEN", token);
    }
    command
}

async fn weft_as(app: &TestApp, token: Option<&str>, args: &[&str]) -> Finished {
    let output = command(app, token, args).output().await.expect("weft runs");
    Finished {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `weft ARGS` as admin.
async fn weft(app: &TestApp, args: &[&str]) -> Finished {
    weft_as(app, Some(ADMIN_TOKEN), args).await
}

/// Whether a text detail block has the line `KEY:   VALUE`.
fn has_field(text: &str, key: &str, value: &str) -> bool {
    text.lines().any(|line| {
        line.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
            .is_some_and(|rest| rest.trim() == value)
    })
}

/// Adds one to `n`, then waits for the signal `approved`.
const APPROVAL_YAML: &str = r#"
name: cli-approval
description: Adds one, then waits for approval.
inputParameters:
  - name: n
    type: integer
    default: 0
steps:
  - stepDefinitionId: add-one
    type: task
    parameters:
      value: { type: workflowInput, value: n }
    taskConfig: { taskDefinitionId: add, nextStepId: approval }
  - stepDefinitionId: approval
    type: wait
    waitConfig: { signal: approved, timeoutSeconds: 3600 }
"#;

/// Push the `add` plugin and apply [`APPROVAL_YAML`] (published, enabled).
async fn deploy_approval(app: &TestApp, dir: &tempfile::TempDir) {
    let wasm = plugin_path("add");
    weft(app, &["plugin", "push", wasm.to_str().expect("utf-8 path")])
        .await
        .ok();
    let file = dir.path().join("approval.yaml");
    std::fs::write(&file, APPROVAL_YAML).expect("write the definition");
    weft(
        app,
        &[
            "definition",
            "apply",
            file.to_str().expect("path"),
            "--enable",
        ],
    )
    .await
    .ok();
}

/// Poll (through the CLI) until run `id` waits for its signal.
async fn wait_for_approval_step(app: &TestApp, id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let steps = weft(app, &["run", "steps", id, "--output", "json"])
            .await
            .ok()
            .json();
        let waiting = steps["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|s| s["stepId"] == "approval" && s["waitingFor"]["signal"] == "approved")
        });
        if waiting {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {id} never waited for its signal: {steps}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

crate::both_backends! {
    async fn push_apply_start_list_cancel(backend: Backend) {
        let app = spawn_app_with_auth(backend).await;
        let dir = tempfile::tempdir().expect("tempdir");

        // Push a plugin; list and get it.
        let wasm = plugin_path("add");
        let pushed = weft(&app, &["plugin", "push", wasm.to_str().expect("path")]).await.ok();
        assert!(pushed.stdout.starts_with("plugin add "), "{pushed:?}");
        assert!(pushed.stdout.contains(" uploaded "), "{pushed:?}");
        let again = weft(&app, &["plugin", "push", wasm.to_str().expect("path")]).await.ok();
        assert!(again.stdout.contains(" already there "), "{again:?}");
        let plugins = weft(&app, &["plugin", "list", "--output", "json"]).await.ok().json();
        assert!(
            plugins["items"].as_array().expect("items").iter().any(|p| p["name"] == "add"),
            "{plugins}"
        );
        let text = weft(&app, &["plugin", "list"]).await.ok().stdout;
        assert!(text.starts_with("NAME "), "{text}");
        assert!(text.lines().any(|l| l.starts_with("add ")), "{text}");

        // Apply a YAML definition: created, published, enabled; again: unchanged; changed:
        // a new version.
        let file = dir.path().join("approval.yaml");
        std::fs::write(&file, APPROVAL_YAML).expect("write");
        let path = file.to_str().expect("path");
        let applied = weft(&app, &["definition", "apply", path, "--enable"]).await.ok();
        assert!(
            applied.stdout.starts_with("definition cli-approval 0.1.0 (")
                && applied.stdout.ends_with("): created, published, enabled\n"),
            "{applied:?}"
        );
        let again = weft(&app, &["definition", "apply", path, "--enable"]).await.ok();
        assert!(again.stdout.ends_with("): unchanged\n"), "{again:?}");
        std::fs::write(&file, APPROVAL_YAML.replace("then waits", "then awaits")).expect("write");
        let changed = weft(&app, &["definition", "apply", path, "--enable", "--output", "json"])
            .await
            .ok()
            .json();
        assert_eq!(changed["version"], "0.1.1");
        assert_eq!(changed["isDraft"], false);
        assert_eq!(changed["isEnabled"], true);
        assert_eq!(changed["description"], "Adds one, then awaits for approval.");
        let got = weft(&app, &["definition", "get", "cli-approval", "--output", "json"])
            .await
            .ok()
            .json();
        assert_eq!(got["id"], changed["id"]);
        let listed = weft(&app, &["definition", "list", "--name", "cli-approval"]).await.ok();
        assert_eq!(listed.stdout.lines().count(), 3, "{listed:?}");

        // Start a run; get it; find it in the list.
        let run = weft(
            &app,
            &["run", "start", "cli-approval", "--input", r#"{"n": 41}"#, "--output", "json"],
        )
        .await
        .ok()
        .json();
        let id = run["id"].as_str().expect("run id").to_string();
        assert_eq!(run["definitionVersion"], "0.1.1");
        let got = weft(&app, &["run", "get", &id, "--output", "json"]).await.ok().json();
        assert_eq!(got["id"], id.as_str());
        assert_eq!(got["input"]["n"], 41);
        let runs = weft(
            &app,
            &["run", "list", "--definition", "cli-approval", "--output", "json"],
        )
        .await
        .ok()
        .json();
        assert!(
            runs["items"].as_array().expect("items").iter().any(|r| r["id"] == id.as_str()),
            "{runs}"
        );

        // Cancel it while it waits for its signal.
        wait_for_approval_step(&app, &id).await;
        let cancelled = weft(&app, &["run", "cancel", &id]).await.ok();
        assert!(has_field(&cancelled.stdout, "status", "CANCELLED"), "{cancelled:?}");
        let got = weft(&app, &["run", "get", &id, "--output", "json"]).await.ok().json();
        assert_eq!(got["status"], "CANCELLED");
        let steps = weft(&app, &["run", "steps", &id]).await.ok().stdout;
        assert!(steps.lines().any(|l| l.starts_with("add-one ") && l.contains("COMPLETED")), "{steps}");
    }
}

crate::both_backends! {
    async fn errors_are_one_line_with_the_servers_code(backend: Backend) {
        let app = spawn_app_with_auth(backend).await;
        let unknown = uuid::Uuid::new_v4().to_string();
        let missing = weft(&app, &["run", "get", &unknown]).await;
        assert_eq!(missing.code, Some(1), "{missing:?}");
        assert!(missing.stdout.is_empty(), "{missing:?}");
        assert!(missing.stderr.starts_with("weft: not_found: "), "{missing:?}");
        assert_eq!(missing.stderr.lines().count(), 1, "{missing:?}");

        // Usage: not a run id; input that is not JSON; a missing file.
        let usage = weft(&app, &["run", "get", "not-a-uuid"]).await;
        assert_eq!(usage.code, Some(2), "{usage:?}");
        let usage = weft(&app, &["run", "start", "x", "--input", "{nope"]).await;
        assert_eq!(usage.code, Some(2), "{usage:?}");
        assert!(usage.stderr.starts_with("weft: --input is not JSON"), "{usage:?}");
        let usage = weft(&app, &["definition", "apply", "/nonexistent/d.yaml"]).await;
        assert_eq!(usage.code, Some(2), "{usage:?}");

        // No token, a read token that may not write.
        let anonymous = weft_as(&app, None, &["plugin", "list"]).await;
        assert_eq!(anonymous.code, Some(1), "{anonymous:?}");
        assert!(anonymous.stderr.starts_with("weft: unauthorized: "), "{anonymous:?}");
        let reader = weft_as(&app, Some(READ_TOKEN), &["run", "start", "x"]).await;
        assert_eq!(reader.code, Some(1), "{reader:?}");
        assert!(reader.stderr.starts_with("weft: forbidden: "), "{reader:?}");

        // A definition the server rejects: its issues in the one line.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bad.json");
        std::fs::write(&file, r#"{"name": "bad", "steps": [{"stepDefinitionId": "a", "type": "task",
            "taskConfig": {"taskDefinitionId": "add", "nextStepId": "nowhere"}}]}"#)
            .expect("write");
        let rejected = weft(&app, &["definition", "apply", file.to_str().expect("path")]).await;
        assert_eq!(rejected.code, Some(1), "{rejected:?}");
        assert!(rejected.stderr.starts_with("weft: validation_failed: "), "{rejected:?}");
        assert!(rejected.stderr.contains("/steps/0/taskConfig/nextStepId"), "{rejected:?}");
        assert_eq!(rejected.stderr.lines().count(), 1, "{rejected:?}");

        // Nothing listening.
        let mut closed = command(&app, Some(ADMIN_TOKEN), &["agent", "list"]);
        closed.env("WEFT_SERVER", "http://127.0.0.1:1");
        let output = closed.output().await.expect("weft runs");
        assert_eq!(output.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&output.stderr).starts_with("weft: cannot reach the server"));
    }
}

/// `weft run start --watch` in the background: its NDJSON lines as they come, and its end.
struct Watching {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Watching {
    fn start(app: &TestApp, args: &[&str]) -> Watching {
        let mut child = command(app, Some(ADMIN_TOKEN), args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("weft starts");
        let stdout = child.stdout.take().expect("stdout");
        Watching {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    async fn next_json(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(180), self.lines.next_line())
            .await
            .expect("a line within the guard time")
            .expect("read")
            .expect("a line before the end");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// The remaining lines (JSON) and the exit code.
    async fn finish(mut self) -> (Vec<Value>, Option<i32>) {
        let mut rest = Vec::new();
        while let Some(line) =
            tokio::time::timeout(Duration::from_secs(180), self.lines.next_line())
                .await
                .expect("the watch ends within the guard time")
                .expect("read")
        {
            rest.push(
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")),
            );
        }
        let status = self.child.wait().await.expect("wait");
        (rest, status.code())
    }
}

// Needs the server's WebSocket endpoint (`GET /api/v1/ws`).
crate::both_backends! {
    async fn start_watch_follows_the_run_and_exits_with_its_outcome(backend: Backend) {
        let app = spawn_app_with_auth(backend).await;
        let dir = tempfile::tempdir().expect("tempdir");
        deploy_approval(&app, &dir).await;

        // Approved: exit code 0, every transition as an event line, then the run.
        let mut watching = Watching::start(
            &app,
            &["run", "start", "cli-approval", "--input", r#"{"n": 1}"#, "--watch", "--output", "json"],
        );
        let first = watching.next_json().await;
        assert_eq!(first["type"], "event", "{first}");
        let id = first["runId"].as_str().expect("runId").to_string();
        wait_for_approval_step(&app, &id).await;
        weft(&app, &["run", "signal", &id, "approved", "--payload", r#"{"by": "cli"}"#]).await.ok();
        let (rest, code) = watching.finish().await;
        assert_eq!(code, Some(0), "{rest:?}");
        let (run, events) = rest.split_last().expect("the run at the end");
        assert_eq!(run["id"], id.as_str());
        assert_eq!(run["status"], "COMPLETED");
        let kinds: Vec<&str> = std::iter::once(&first)
            .chain(events)
            .filter_map(|e| e["kind"].as_str())
            .collect();
        assert_eq!(kinds.first(), Some(&"run.created"), "{kinds:?}");
        assert_eq!(kinds.last(), Some(&"run.completed"), "{kinds:?}");
        assert!(kinds.contains(&"step.completed") && kinds.contains(&"signal.received"), "{kinds:?}");
        let seqs: Vec<i64> = std::iter::once(&first).chain(events).filter_map(|e| e["seq"].as_i64()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, once: {seqs:?}");

        // Watching the finished run replays it and ends at once, in text.
        let replay = weft(&app, &["run", "watch", &id]).await.ok();
        assert!(replay.stdout.lines().any(|l| l.starts_with("  add-one ") && l.contains("completed")), "{replay:?}");
        assert!(has_field(&replay.stdout, "status", "COMPLETED"), "{replay:?}");

        // Cancelled: exit code 3.
        let mut watching = Watching::start(
            &app,
            &["run", "start", "cli-approval", "--watch", "--output", "json"],
        );
        let first = watching.next_json().await;
        let id = first["runId"].as_str().expect("runId").to_string();
        wait_for_approval_step(&app, &id).await;
        weft(&app, &["run", "cancel", &id]).await.ok();
        let (rest, code) = watching.finish().await;
        assert_eq!(code, Some(3), "{rest:?}");
        assert_eq!(rest.last().expect("the run")["status"], "CANCELLED");
    }
}
