//! The `echo-agent` binary against a fake engine: flags, a bad token, an echo, a graceful
//! SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::time::timeout;
use weft_plugin_sdk::agent::testing::{FakeEngine, FakeEngineConfig, assignment};
use weft_proto::agent::task_result::Outcome;

const WAIT: Duration = Duration::from_secs(20);

fn echo_agent(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_echo-agent"))
        .args(args)
        .env_remove("WEFT_ENGINE_URL")
        .env_remove("WEFT_AGENT_TOKEN")
        .env_remove("WEFT_AGENT_CAPACITY")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("echo-agent starts")
}

async fn engine() -> FakeEngine {
    FakeEngine::start(FakeEngineConfig {
        token: Some("secret".into()),
        ..FakeEngineConfig::default()
    })
    .await
    .unwrap()
}

/// Wait for the process; its exit success and its stderr.
async fn finish(mut child: Child) -> (bool, String) {
    let mut stderr = String::new();
    let mut pipe = child.stderr.take().unwrap();
    let status = timeout(WAIT, async {
        pipe.read_to_string(&mut stderr).await.unwrap();
        child.wait().await.unwrap()
    })
    .await
    .expect("echo-agent exits");
    (status.success(), stderr)
}

#[tokio::test]
async fn help_names_the_flags() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_echo-agent"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--engine",
        "--token",
        "--capacity",
        "--name",
        "WEFT_AGENT_TOKEN",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[tokio::test]
async fn a_bad_token_exits_non_zero_with_one_clear_line() {
    let engine = engine().await;
    let child = echo_agent(&["--engine", &engine.url(), "--token", "wrong"]);
    let (success, stderr) = finish(child).await;
    assert!(!success);
    assert_eq!(
        stderr.lines().last(),
        Some("echo-agent: the engine refused the agent token: invalid agent token"),
        "{stderr}"
    );
    assert_eq!(engine.opens(), 1);
}

#[tokio::test]
async fn echoes_and_finishes_its_work_on_sigterm() {
    let engine = engine().await;
    let child = echo_agent(&["--engine", &engine.url(), "--token", "secret"]);
    let mut agent = timeout(WAIT, engine.accept()).await.expect("connects");
    assert_eq!(agent.hello.name, "echo-agent");
    assert_eq!(agent.hello.tasks[0].name, "echo");
    assert_eq!(agent.hello.tasks[0].version, "1.0.0");

    agent
        .assign(assignment("a-1", "echo", json!({"message": "hi"})))
        .await;
    let result = timeout(WAIT, agent.next_result()).await.unwrap().unwrap();
    assert_eq!(
        result.outcome,
        Some(Outcome::OutputJson(r#"{"message":"hi"}"#.into()))
    );

    // SIGTERM mid-task: the agent finishes the assignment, then exits 0.
    agent
        .assign(assignment(
            "a-2",
            "echo",
            json!({"message": "late", "delayMs": 500}),
        ))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let result = timeout(WAIT, agent.next_result()).await.unwrap().unwrap();
    assert_eq!(result.assignment_id, "a-2");
    assert_eq!(
        result.outcome,
        Some(Outcome::OutputJson(r#"{"message":"late"}"#.into()))
    );
    let (success, stderr) = finish(child).await;
    assert!(success, "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
}
