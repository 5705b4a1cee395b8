//! The `weft` binary as an operator runs it: configuration errors, start-up, SIGTERM.

mod common;

use std::process::Output;

use common::{Server, weft};

use weft_store::Backend;
use weft_store::testing::fresh_database;

fn run(args: &[&str]) -> Output {
    weft(args).output().expect("weft runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn invalid_address_exits_2_with_one_line_naming_the_option() {
    let output = run(&["serve", "--http-addr", "not-an-address"]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    assert!(text.contains("--http-addr"), "{text}");
}

#[test]
fn unknown_config_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("weft.toml");
    std::fs::write(&path, "htp_addr = \"127.0.0.1:1\"\n").expect("write");
    let output = run(&["serve", "--config", path.to_str().expect("utf8")]);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("htp_addr"), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");
}

#[test]
fn non_loopback_without_token_is_refused_unless_insecure() {
    let output = run(&["serve", "--http-addr", "0.0.0.0:0"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--insecure"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn environment_variables_configure_too() {
    let output = weft(&["serve"])
        .env("WEFT_GRPC_ADDR", "nowhere")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("WEFT_GRPC_ADDR"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn unreachable_database_fails_after_bounded_retry_without_leaking_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = run(&[
        "serve",
        "--http-addr",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().expect("utf8"),
        "--database-url",
        "postgres://postgres:hunter2secret@127.0.0.1:1/nothing",
        "--db-connect-timeout",
        "1",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(text.contains("database"), "{text}");
    assert!(!text.contains("hunter2secret"), "{text}");
}

async fn http_get(address: &str, path: &str) -> reqwest::StatusCode {
    reqwest::get(format!("http://{address}{path}"))
        .await
        .expect("GET")
        .status()
}

#[tokio::test]
async fn serves_then_stops_cleanly_on_sigterm_and_keeps_secrets_out_of_logs() {
    let database = fresh_database(Backend::Postgres)
        .await
        .expect("test database");
    // Trust authentication ignores the password, so the server starts; it must never log it.
    let url = database.url.replacen(
        "postgres://postgres@",
        "postgres://postgres:hunter2secret@",
        1,
    );
    assert!(url.contains("hunter2secret"), "{url}");
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = "admin-token-that-is-long-enough";
    let mut server = Server::start(
        &[
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().expect("utf8"),
            "--database-url",
            &url,
        ],
        &[("WEFT_ADMIN_TOKEN", admin)],
    );
    let address = server.address();
    assert_eq!(http_get(&address, "/readyz").await, reqwest::StatusCode::OK);
    assert_eq!(
        http_get(&address, "/api/v1/workflow-definitions").await,
        reqwest::StatusCode::UNAUTHORIZED
    );
    let (code, logs) = server.terminate();
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("SIGTERM received"), "{logs}");
    assert!(logs.contains("stopped"), "{logs}");
    assert!(!logs.contains("hunter2secret"), "{logs}");
    assert!(!logs.contains(admin), "{logs}");
}

#[tokio::test]
async fn check_migrations_refuses_a_fresh_database_and_accepts_a_migrated_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf8");
    let output = run(&[
        "serve",
        "--http-addr",
        "127.0.0.1:0",
        "--data-dir",
        data,
        "--check-migrations",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("not current"),
        "{}",
        stderr(&output)
    );

    // Default start: SQLite in the data dir, migrations applied.
    let mut server = Server::start(
        &["serve", "--http-addr", "127.0.0.1:0", "--data-dir", data],
        &[],
    );
    let address = server.address();
    assert_eq!(http_get(&address, "/readyz").await, reqwest::StatusCode::OK);
    let (code, logs) = server.terminate();
    assert_eq!(code, Some(0), "{logs}");
    assert!(dir.path().join("weft.db").exists());

    let mut server = Server::start(
        &[
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--data-dir",
            data,
            "--check-migrations",
        ],
        &[],
    );
    let address = server.address();
    assert_eq!(
        http_get(&address, "/healthz").await,
        reqwest::StatusCode::OK
    );
    let (code, logs) = server.terminate();
    assert_eq!(code, Some(0), "{logs}");
}
