//! The client gRPC API: start (idempotent), get, list, cancel, signal, with proper status codes.

use std::time::Duration;

use serde_json::{Value, json};
use tonic::Code;
use weft_proto::workflow::workflow_service_client::WorkflowServiceClient;
use weft_proto::workflow::{
    CancelRunRequest, GetRunRequest, ListRunsRequest, SignalRunRequest, StartRunRequest,
    start_run_request,
};
use weft_store::Backend;

use crate::helpers::*;

type Client = WorkflowServiceClient<tonic::transport::Channel>;

fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

fn start_by_name(name: &str, input: &str, key: &str) -> StartRunRequest {
    StartRunRequest {
        definition: Some(start_run_request::Definition::Name(name.into())),
        version: String::new(),
        input_json: input.into(),
        idempotency_key: key.into(),
    }
}

#[tokio::test]
async fn clients_start_get_list_signal_and_cancel_runs() {
    let app = spawn_app_with_auth(Backend::Sqlite).await;
    let mut client: Client = Client::connect(format!("http://{}", app.grpc_address))
        .await
        .expect("connect");
    let definition = deploy(&app, json!({"name": "gate", "inputParameters": [{"name": "who", "type": "string", "required": true}],
        "steps": [{"stepDefinitionId": "w", "type": "wait", "waitConfig": {"signal": "open"}}]})).await;

    // Authentication and roles.
    let error = client
        .get_run(GetRunRequest { id: "x".into() })
        .await
        .expect_err("no token");
    assert_eq!(error.code(), Code::Unauthenticated);
    let error = client
        .start_run(authed(
            start_by_name("gate", r#"{"who":"a"}"#, ""),
            READ_TOKEN,
        ))
        .await
        .expect_err("read role");
    assert_eq!(error.code(), Code::PermissionDenied);

    let started = client
        .start_run(authed(
            start_by_name("gate", r#"{"who":"ada"}"#, "k-1"),
            WRITE_TOKEN,
        ))
        .await
        .expect("start")
        .into_inner();
    assert!(started.created);
    let run = started.run.expect("run");
    assert_eq!(run.status, "RUNNING");
    assert_eq!(run.workflow_definition_id, definition);
    let again = client
        .start_run(authed(
            start_by_name("gate", r#"{"who":"ada"}"#, "k-1"),
            WRITE_TOKEN,
        ))
        .await
        .expect("start")
        .into_inner();
    assert!(!again.created);
    assert_eq!(again.run.expect("run").id, run.id);

    let got = client
        .get_run(authed(GetRunRequest { id: run.id.clone() }, READ_TOKEN))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        serde_json::from_str::<Value>(&got.input_json).expect("json"),
        json!({"who": "ada"})
    );
    let listed = client
        .list_runs(authed(
            ListRunsRequest {
                status: "RUNNING".into(),
                ..Default::default()
            },
            READ_TOKEN,
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.total_count, 1);

    client
        .signal_run(authed(
            SignalRunRequest {
                id: run.id.clone(),
                name: "open".into(),
                payload_json: r#"{"ok":true}"#.into(),
            },
            WRITE_TOKEN,
        ))
        .await
        .expect("signal");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = client
            .get_run(authed(GetRunRequest { id: run.id.clone() }, READ_TOKEN))
            .await
            .expect("get")
            .into_inner();
        if got.status == "COMPLETED" {
            assert_eq!(
                serde_json::from_str::<Value>(&got.output_json).expect("json")["payload"],
                json!({"ok": true})
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let second = client
        .start_run(authed(
            start_by_name("gate", r#"{"who":"bob"}"#, ""),
            WRITE_TOKEN,
        ))
        .await
        .expect("start")
        .into_inner()
        .run
        .expect("run");
    let cancelled = client
        .cancel_run(authed(
            CancelRunRequest {
                id: second.id.clone(),
            },
            WRITE_TOKEN,
        ))
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(cancelled.status, "CANCELLED");

    // Status codes for bad requests.
    let cases: Vec<(tonic::Status, Code)> = vec![
        (
            client
                .get_run(authed(
                    GetRunRequest {
                        id: "0190b0c2-7a4e-7cc0-8000-000000000000".into(),
                    },
                    READ_TOKEN,
                ))
                .await
                .expect_err("unknown"),
            Code::NotFound,
        ),
        (
            client
                .get_run(authed(
                    GetRunRequest {
                        id: "not-a-uuid".into(),
                    },
                    READ_TOKEN,
                ))
                .await
                .expect_err("bad id"),
            Code::InvalidArgument,
        ),
        (
            client
                .start_run(authed(
                    start_by_name("gate", r#"{"who": 1}"#, ""),
                    WRITE_TOKEN,
                ))
                .await
                .expect_err("bad input"),
            Code::InvalidArgument,
        ),
        (
            client
                .start_run(authed(start_by_name("gate", "{not json", ""), WRITE_TOKEN))
                .await
                .expect_err("not json"),
            Code::InvalidArgument,
        ),
        (
            client
                .start_run(authed(start_by_name("nothing", "", ""), WRITE_TOKEN))
                .await
                .expect_err("unknown name"),
            Code::FailedPrecondition,
        ),
        (
            client
                .cancel_run(authed(
                    CancelRunRequest {
                        id: second.id.clone(),
                    },
                    WRITE_TOKEN,
                ))
                .await
                .expect_err("already cancelled"),
            Code::FailedPrecondition,
        ),
        (
            client
                .signal_run(authed(
                    SignalRunRequest {
                        id: second.id.clone(),
                        name: "open".into(),
                        payload_json: String::new(),
                    },
                    WRITE_TOKEN,
                ))
                .await
                .expect_err("ended"),
            Code::FailedPrecondition,
        ),
        (
            client
                .list_runs(authed(
                    ListRunsRequest {
                        status: "DONE".into(),
                        ..Default::default()
                    },
                    READ_TOKEN,
                ))
                .await
                .expect_err("bad status"),
            Code::InvalidArgument,
        ),
    ];
    for (status, code) in cases {
        assert_eq!(status.code(), code, "{status:?}");
    }
}
