//! The composition root: [`Application::build`] wires the store, the services and the HTTP
//! server from a validated [`Config`]; [`Application::run_until_stopped`] serves until the
//! shutdown token is cancelled, then drains in-flight requests (bounded) and closes the pool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use weft_proto::agent::agent_service_server::AgentServiceServer;
use weft_proto::workflow::workflow_service_server::WorkflowServiceServer;

use crate::grpc::WorkflowGrpc;
use weft_store::{ConnectOptions, Store, StoreError};

use crate::agents::service::AgentGrpc;
use crate::agents::{AgentRegistry, AgentRunner};
use crate::auth::Authenticator;
use crate::config::{Config, defaults};
use crate::definitions::Definitions;
use crate::events::EventHub;
use crate::executor::runner::{Runner, WasmRunner};
use crate::executor::{DefinitionCache, Executor, ExecutorOptions};
use crate::http::routes::ws::LiveState;
use crate::http::{self, AppState, HttpOptions};
use crate::metrics::Metrics;
use crate::plugins::{PluginRegistry, RegistryOptions};
use crate::runs::Runs;
use crate::traces::Traces;
use weft_runtime::{Runtime, RuntimeConfig};

/// Largest gRPC message (an assignment's input or a result's output), in bytes.
const MAX_GRPC_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// How often the store's housekeeping runs (SQLite: WAL checkpoints).
const MAINTENANCE_PERIOD: Duration = Duration::from_secs(1);

/// Why the application could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The database could not be reached or used.
    #[error("database {url}: {source}")]
    Database {
        /// The URL, password redacted.
        url: String,
        /// The cause.
        source: StoreError,
    },
    /// `--check-migrations` found the schema out of date.
    #[error(
        "database schema is not current (pending migrations: {pending:?}, unknown: {unknown:?}); \
         start without --check-migrations to apply them"
    )]
    SchemaNotCurrent {
        /// Migrations this binary has that the database lacks.
        pending: Vec<i64>,
        /// Migrations the database has that this binary does not know.
        unknown: Vec<i64>,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The gRPC TLS configuration is unusable.
    #[error("gRPC TLS: {0}")]
    Tls(String),
    /// The trace exporter could not start.
    #[error("traces: {0}")]
    Traces(String),
    /// The Wasm runtime could not start.
    #[error("Wasm runtime: {0}")]
    Runtime(weft_runtime::RuntimeError),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
}

/// A built, bound, not yet running application.
pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    grpc_address: SocketAddr,
    router: axum::Router,
    store: Arc<dyn Store>,
    shutdown_timeout: Duration,
    /// Cancels the application's own background tasks.
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    traces: Traces,
}

impl Application {
    /// Connect (with bounded retries), migrate (or check), wire services, bind the listener.
    /// Background tasks start now and stop when the application's shutdown token is cancelled
    /// (by [`Application::run_until_stopped`]'s caller).
    pub async fn build(config: Config) -> Result<Application, AppError> {
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        if config.database_url.expose().starts_with("sqlite:") {
            std::fs::create_dir_all(&config.data_dir).map_err(|source| AppError::DataDir {
                path: config.data_dir.display().to_string(),
                source,
            })?;
        }
        let url = config.database_url.redacted();
        let db_error = |source| AppError::Database {
            url: url.clone(),
            source,
        };
        let store = weft_store::connect(
            config.database_url.expose(),
            &ConnectOptions {
                max_connections: defaults::DB_MAX_CONNECTIONS,
                connect_timeout: config.db_connect_timeout,
            },
        )
        .await
        .map_err(db_error)?;
        if config.check_migrations {
            let status = store.migration_status().await.map_err(db_error)?;
            if !status.is_current() {
                store.close().await;
                return Err(AppError::SchemaNotCurrent {
                    pending: status.pending,
                    unknown: status.unknown,
                });
            }
        } else {
            store.migrate().await.map_err(db_error)?;
        }
        tracing::info!(database = %url, "database ready");

        let mut runtime_config =
            RuntimeConfig::new(config.data_dir.join("cache").join("components"));
        runtime_config.defaults = config.step_limits.clone();
        runtime_config.maxima = config.max_step_limits.clone();
        let runtime = Runtime::new(runtime_config, shutdown.clone()).map_err(AppError::Runtime)?;
        let metrics = Metrics::new(Some(runtime.clone()));
        let traces = match &config.otlp_endpoint {
            Some(endpoint) => {
                let traces = Traces::otlp(endpoint, config.trace_flush_interval)
                    .map_err(|e| AppError::Traces(e.to_string()))?;
                tracing::info!(endpoint = %endpoint, "exporting traces over OTLP/HTTP");
                traces
            }
            None => Traces::off(),
        };
        let plugins = PluginRegistry::start(
            runtime,
            store.clone(),
            RegistryOptions {
                plugins_dir: config.plugins_dir.clone(),
                poll_interval: config.plugins_poll_interval,
                maxima: config.max_step_limits.clone(),
            },
        )
        .await
        .map_err(db_error)?;
        tasks.spawn(plugins.clone().watch_directory(shutdown.clone()));
        tasks.spawn(maintain(store.clone(), shutdown.clone()));

        let agents = AgentRegistry::new(config.agent_heartbeat, metrics.clone());
        tasks.spawn(agents.clone().sweep(shutdown.clone()));
        let hub = EventHub::new(
            store.clone(),
            agents.clone(),
            config.live.buffer_events,
            config.live.poll_interval,
        );
        hub.start(&mut tasks, shutdown.clone())
            .await
            .map_err(db_error)?;
        let executor = Executor::new(
            store.clone(),
            vec![
                Arc::new(WasmRunner::new(plugins.clone(), metrics.clone())) as Arc<dyn Runner>,
                Arc::new(AgentRunner::new(agents.clone())) as Arc<dyn Runner>,
            ],
            DefinitionCache::new(store.clone()),
            ExecutorOptions {
                max_concurrent_steps: config.max_concurrent_steps,
                poll_interval: config.poll_interval,
                lease: config.lease,
                schedule_timeout: config.schedule_timeout,
                on_commit: Some(hub.waker()),
                ..ExecutorOptions::default()
            },
            metrics.clone(),
            traces.clone(),
        );
        executor
            .start(&mut tasks, shutdown.clone())
            .await
            .map_err(db_error)?;

        let state = AppState {
            definitions: Definitions::new(store.clone()),
            auth: Authenticator::new(config.tokens.clone(), store.clone()),
            store: store.clone(),
            plugins,
            runs: Runs::new(store.clone(), executor),
            agents: agents.clone(),
            live: LiveState {
                hub,
                options: config.live,
                shutdown: shutdown.clone(),
            },
            metrics,
        };

        // gRPC: the agent service.
        let grpc_listener = TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|source| AppError::Bind {
                addr: config.grpc_addr,
                source,
            })?;
        let grpc_address = grpc_listener
            .local_addr()
            .map_err(|source| AppError::Bind {
                addr: config.grpc_addr,
                source,
            })?;
        if config.agent_tokens.is_empty() {
            tracing::warn!("no agent token configured: agents connect without one (loopback only)");
        }
        let agent_service = AgentServiceServer::new(AgentGrpc::new(
            agents,
            config.agent_tokens.clone(),
            shutdown.clone(),
        ))
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        let workflow_service =
            WorkflowServiceServer::new(WorkflowGrpc::new(state.runs.clone(), state.auth.clone()))
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
        let grpc_shutdown = shutdown.clone();
        let mut grpc_server = tonic::transport::Server::builder();
        if let Some(tls) = &config.grpc_tls {
            let identity = tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem);
            grpc_server = grpc_server
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .map_err(|e| AppError::Tls(e.to_string()))?;
        }
        let tls = config.grpc_tls.is_some();
        tasks.spawn(async move {
            tracing::info!(address = %grpc_address, tls, "gRPC API listening");
            let served = grpc_server
                .add_service(agent_service)
                .add_service(workflow_service)
                .serve_with_incoming_shutdown(
                    // Small request/response messages: disable Nagle, or each one waits ~40 ms
                    // for a delayed ACK.
                    TcpListenerStream::new(grpc_listener).map(|socket| {
                        if let Ok(socket) = &socket {
                            let _ = socket.set_nodelay(true);
                        }
                        socket
                    }),
                    grpc_shutdown.cancelled_owned(),
                )
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "gRPC server failed");
            }
        });
        if !state.auth.enabled() {
            tracing::warn!("no API token configured: authentication is off (loopback only)");
        }
        let router = http::router(
            state,
            &HttpOptions {
                max_body_bytes: config.max_body_bytes,
                cors_origins: config.cors_origins.clone(),
                max_plugin_bytes: config.plugin_max_bytes,
                metrics_public: config.metrics_public,
            },
        );
        let listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| AppError::Bind {
                addr: config.http_addr,
                source,
            })?;
        let address = listener.local_addr().map_err(|source| AppError::Bind {
            addr: config.http_addr,
            source,
        })?;
        Ok(Application {
            listener,
            address,
            grpc_address,
            router,
            store,
            shutdown_timeout: config.shutdown_timeout,
            shutdown,
            tasks,
            traces,
        })
    }

    /// The bound HTTP address (useful with port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The bound gRPC address (agents connect here).
    pub fn grpc_address(&self) -> SocketAddr {
        self.grpc_address
    }

    /// The bound HTTP port.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Serve until `shutdown` is cancelled; then stop accepting, let in-flight requests finish
    /// within the shutdown timeout, and close the database pool.
    pub async fn run_until_stopped(mut self, shutdown: CancellationToken) -> Result<(), AppError> {
        // The caller's token stops everything the application started.
        let own = self.shutdown.clone();
        let caller = shutdown.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = caller.cancelled() => own.cancel(),
                () = own.cancelled() => {}
            }
        });
        tracing::info!(address = %self.address, "HTTP API listening");
        // Small writes (WebSocket frames of the live feed, above all) go out at once, not after
        // the peer's delayed acknowledgement of the previous one (Nagle: up to 40 ms each).
        let listener = self.listener.tap_io(|socket| {
            if let Err(e) = socket.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
            }
        });
        let server = axum::serve(listener, self.router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let mut serving = tokio::spawn(async move { server.await });
        let result = tokio::select! {
            joined = &mut serving => joined,
            () = shutdown.cancelled() => {
                tracing::info!("shutting down: draining in-flight requests");
                match tokio::time::timeout(self.shutdown_timeout, &mut serving).await {
                    Ok(joined) => joined,
                    Err(_) => {
                        tracing::warn!(timeout = ?self.shutdown_timeout, "in-flight requests did not finish in time; closing them");
                        serving.abort();
                        Ok(Ok(()))
                    }
                }
            }
        };
        self.shutdown.cancel();
        if tokio::time::timeout(self.shutdown_timeout, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("background tasks did not stop in time; aborting them");
            self.tasks.abort_all();
        }
        self.store.close().await;
        self.traces.shutdown().await;
        tracing::info!("stopped");
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(AppError::Serve(e)),
            Err(join) => Err(AppError::Serve(std::io::Error::other(join.to_string()))),
        }
    }
}

/// The store's housekeeping ([`Store::maintain`]) about once a second, until `shutdown`.
async fn maintain(store: Arc<dyn Store>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(MAINTENANCE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = store.maintain().await {
                    tracing::warn!(error = %e, "store housekeeping failed; retrying");
                }
            }
        }
    }
}
