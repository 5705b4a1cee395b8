//! The client gRPC API (`weft.workflow.v1.WorkflowService`): the runs service behind proper
//! status codes. Like the HTTP layer, it only translates; the rules live in `runs`.

use serde_json::Value;
use tonic::{Request, Response, Status};
use uuid::Uuid;
use weft_proto::workflow::workflow_service_server::WorkflowService;
use weft_proto::workflow::{
    CancelRunRequest, GetRunRequest, ListRunsRequest, ListRunsResponse, Run, SignalRunRequest,
    SignalRunResponse, StartRunRequest, StartRunResponse, start_run_request,
};
use weft_store::{RunQuery, RunRecord, RunStatus, StoreError};

use crate::auth::{AuthError, Authenticator, Role};
use crate::definitions::timestamp;
use crate::executor::ExecutorError;
use crate::runs::{DefinitionRef, RunError, Runs, StartRun};

/// The gRPC face of [`Runs`].
pub struct WorkflowGrpc {
    runs: Runs,
    auth: Authenticator,
}

impl WorkflowGrpc {
    /// Over the runs service, with API-token authentication.
    pub fn new(runs: Runs, auth: Authenticator) -> Self {
        Self { runs, auth }
    }

    async fn authorize<T>(&self, request: &Request<T>, needed: Role) -> Result<(), Status> {
        let bearer = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        let principal = self.auth.authenticate(bearer).await.map_err(|e| match e {
            AuthError::Missing => Status::unauthenticated("this call needs a bearer token"),
            AuthError::Invalid => Status::unauthenticated("the bearer token is not valid"),
            AuthError::Store(e) => store_status(e),
        })?;
        if principal.role < needed {
            return Err(Status::permission_denied(format!(
                "this call needs the '{needed}' role; the token has '{}'",
                principal.role
            )));
        }
        Ok(())
    }
}

fn store_status(error: StoreError) -> Status {
    match error {
        StoreError::NotFound => Status::not_found("not found"),
        StoreError::Unavailable(m) => Status::unavailable(m),
        StoreError::Conflict(m) => Status::failed_precondition(m),
        other => {
            tracing::error!(error = %other, "gRPC request failed");
            Status::internal("internal error; see the server log")
        }
    }
}

fn run_status(error: RunError) -> Status {
    let message = error.to_string();
    match error {
        RunError::NotFound(_) => Status::not_found(message),
        RunError::InvalidInput(issues) => {
            let details: Vec<String> = issues
                .iter()
                .map(|i| format!("{}: {}", i.path, i.message))
                .collect();
            Status::invalid_argument(format!("{message}: {}", details.join("; ")))
        }
        RunError::BadRequest(_) => Status::invalid_argument(message),
        RunError::NotRunnable(_) | RunError::Conflict(_) => Status::failed_precondition(message),
        RunError::Executor(ExecutorError::Store(e)) => store_status(e),
        RunError::Executor(e) => {
            tracing::error!(error = %e, "gRPC request failed");
            Status::internal("internal error; see the server log")
        }
    }
}

fn parse_id(text: &str, what: &str) -> Result<Uuid, Status> {
    text.parse()
        .map_err(|_| Status::invalid_argument(format!("{what} '{text}' is not a UUID")))
}

fn parse_json(text: &str, what: &str, empty: Value) -> Result<Value, Status> {
    if text.trim().is_empty() {
        return Ok(empty);
    }
    serde_json::from_str(text)
        .map_err(|e| Status::invalid_argument(format!("{what} is not JSON: {e}")))
}

fn json_text(value: &Option<Value>) -> String {
    value.as_ref().map(Value::to_string).unwrap_or_default()
}

fn to_proto(run: &RunRecord) -> Run {
    Run {
        id: run.id.to_string(),
        workflow_definition_id: run.definition_id.to_string(),
        definition_name: run.definition_name.clone(),
        definition_version: run.definition_version.clone(),
        status: run.status.as_str().to_string(),
        input_json: run.input.to_string(),
        output_json: json_text(&run.output),
        error_json: json_text(&run.error),
        created_at: timestamp(run.created_at),
        started_at: run.started_at.map(timestamp).unwrap_or_default(),
        completed_at: run.completed_at.map(timestamp).unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl WorkflowService for WorkflowGrpc {
    async fn start_run(
        &self,
        request: Request<StartRunRequest>,
    ) -> Result<Response<StartRunResponse>, Status> {
        self.authorize(&request, Role::Write).await?;
        let request = request.into_inner();
        let definition = match request.definition {
            Some(start_run_request::Definition::WorkflowDefinitionId(id)) => {
                DefinitionRef::Id(parse_id(&id, "workflow_definition_id")?)
            }
            Some(start_run_request::Definition::Name(name)) => DefinitionRef::Name {
                name,
                version: Some(request.version).filter(|v| !v.is_empty()),
            },
            None => {
                return Err(Status::invalid_argument(
                    "give workflow_definition_id or name",
                ));
            }
        };
        let input = parse_json(
            &request.input_json,
            "input_json",
            Value::Object(Default::default()),
        )?;
        let (run, created) = self
            .runs
            .start(StartRun {
                definition,
                input,
                idempotency_key: Some(request.idempotency_key).filter(|k| !k.is_empty()),
            })
            .await
            .map_err(run_status)?;
        Ok(Response::new(StartRunResponse {
            run: Some(to_proto(&run)),
            created,
        }))
    }

    async fn get_run(&self, request: Request<GetRunRequest>) -> Result<Response<Run>, Status> {
        self.authorize(&request, Role::Read).await?;
        let id = parse_id(&request.get_ref().id, "id")?;
        let run = self.runs.get(id).await.map_err(run_status)?;
        Ok(Response::new(to_proto(&run)))
    }

    async fn list_runs(
        &self,
        request: Request<ListRunsRequest>,
    ) -> Result<Response<ListRunsResponse>, Status> {
        self.authorize(&request, Role::Read).await?;
        let request = request.into_inner();
        let limit = if request.limit == 0 {
            20
        } else {
            request.limit
        };
        if limit > 200 {
            return Err(Status::invalid_argument("limit must be at most 200"));
        }
        let status = match request.status.as_str() {
            "" => None,
            text => Some(RunStatus::parse(text).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "status '{text}' is not one of PENDING, RUNNING, COMPLETED, FAILED, CANCELLED"
                ))
            })?),
        };
        let definition_id = match request.workflow_definition_id.as_str() {
            "" => None,
            id => Some(parse_id(id, "workflow_definition_id")?),
        };
        let page = self
            .runs
            .list(&RunQuery {
                status,
                definition_id,
                definition_name: Some(request.name).filter(|n| !n.is_empty()),
                limit,
                offset: request.offset,
                ..Default::default()
            })
            .await
            .map_err(run_status)?;
        Ok(Response::new(ListRunsResponse {
            items: page.items.iter().map(to_proto).collect(),
            total_count: page.total,
        }))
    }

    async fn cancel_run(
        &self,
        request: Request<CancelRunRequest>,
    ) -> Result<Response<Run>, Status> {
        self.authorize(&request, Role::Write).await?;
        let id = parse_id(&request.get_ref().id, "id")?;
        let run = self.runs.cancel(id).await.map_err(run_status)?;
        Ok(Response::new(to_proto(&run)))
    }

    async fn signal_run(
        &self,
        request: Request<SignalRunRequest>,
    ) -> Result<Response<SignalRunResponse>, Status> {
        self.authorize(&request, Role::Write).await?;
        let request = request.into_inner();
        let id = parse_id(&request.id, "id")?;
        let payload = parse_json(&request.payload_json, "payload_json", Value::Null)?;
        let signal = self
            .runs
            .signal(id, &request.name, payload)
            .await
            .map_err(run_status)?;
        Ok(Response::new(SignalRunResponse {
            signal_id: signal.id.to_string(),
        }))
    }
}
