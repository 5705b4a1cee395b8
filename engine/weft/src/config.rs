//! Typed, validated configuration.
//!
//! Sources, highest precedence first: command-line flags, `WEFT_*` environment variables, the
//! TOML file given by `--config` / `WEFT_CONFIG`, built-in defaults. [`Config::load`] merges them
//! and validates the result; an invalid value is reported as one [`ConfigError`] naming the option.
//! Secrets (the admin token, database passwords) never appear in `Debug` output or errors.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use weft_runtime::Limits;

use crate::auth::{Role, TokenHash};

/// The defaults, in one place.
pub mod defaults {
    /// Where the HTTP API listens.
    pub const HTTP_ADDR: &str = "127.0.0.1:8080";
    /// Where the gRPC API listens (agents, clients).
    pub const GRPC_ADDR: &str = "127.0.0.1:50051";
    /// Data directory: the SQLite file and the compiled-plugin cache live here.
    pub const DATA_DIR: &str = "./weft-data";
    /// Seconds to wait for in-flight work on shutdown.
    pub const SHUTDOWN_TIMEOUT_SECS: u64 = 10;
    /// Total seconds spent retrying an unreachable database at start-up.
    pub const DB_CONNECT_TIMEOUT_SECS: u64 = 10;
    /// Largest accepted request body for JSON endpoints.
    pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
    /// Database connection pool size.
    pub const DB_MAX_CONNECTIONS: u32 = 16;
    /// Largest accepted plugin upload (Python and JavaScript components are 12-20 MB).
    pub const PLUGIN_MAX_BYTES: usize = 64 * 1024 * 1024;
    /// Steps running at once on one replica.
    pub const MAX_CONCURRENT_STEPS: usize = 64;
    /// Milliseconds between looks at the store for due work.
    pub const POLL_INTERVAL_MS: u64 = 500;
    /// Seconds a step lease lasts without renewal.
    pub const LEASE_SECS: u64 = 30;
    /// Milliseconds a task step waits for a runner to appear.
    pub const SCHEDULE_TIMEOUT_MS: u64 = 30_000;
    /// Milliseconds between agent heartbeats.
    pub const AGENT_HEARTBEAT_MS: u64 = 5_000;
    /// Seconds between checks of the plugins directory.
    pub const PLUGINS_POLL_INTERVAL_SECS: u64 = 2;
    /// Events the live feed keeps for WebSocket clients that fall behind.
    pub const WS_BUFFER_EVENTS: usize = 4096;
    /// Seconds between WebSocket pings.
    pub const WS_PING_SECS: u64 = 20;
    /// Milliseconds a WebSocket frame may take to leave before the client counts as stuck.
    pub const WS_SEND_TIMEOUT_MS: u64 = 10_000;
    /// A lagging client's time to read up to its close frame.
    pub const WS_CLOSE_LINGER_SECS: u64 = 15;
    /// Milliseconds between looks at the event log for new events.
    pub const EVENTS_POLL_MS: u64 = 50;
    /// Longest time a finished span waits before it is exported.
    pub const TRACE_FLUSH_MS: u64 = 5_000;
}

/// Flags of `weft serve`. Every flag also reads a `WEFT_*` environment variable.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "WEFT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTP listen address (HOST:PORT). Default 127.0.0.1:8080.
    #[arg(long, env = "WEFT_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<String>,
    /// gRPC listen address (HOST:PORT). Default 127.0.0.1:50051.
    #[arg(long, env = "WEFT_GRPC_ADDR", value_name = "ADDR")]
    pub grpc_addr: Option<String>,
    /// Data directory (SQLite database, plugin cache). Default ./weft-data.
    #[arg(long, env = "WEFT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite://FILE or postgres://USER@HOST/DB. Default: SQLite in the data dir.
    #[arg(long, env = "WEFT_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// Directory of step plugins (*.wasm) loaded at start-up.
    #[arg(long, env = "WEFT_PLUGINS_DIR", value_name = "DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// Allow binding a non-loopback address without any API token.
    #[arg(long, env = "WEFT_INSECURE")]
    pub insecure: bool,
    /// Do not apply migrations; only check that the schema is current (exit non-zero if not).
    #[arg(long, env = "WEFT_CHECK_MIGRATIONS")]
    pub check_migrations: bool,
    /// Serve GET /metrics without a token even when API tokens are configured (by default it
    /// needs a `read` token then).
    #[arg(long, env = "WEFT_METRICS_PUBLIC")]
    pub metrics_public: bool,
    /// Export traces (a span per run and per step attempt) to this OTLP/HTTP collector, e.g.
    /// http://127.0.0.1:4318 (spans are POSTed to /v1/traces). Off by default.
    #[arg(long, env = "WEFT_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Allowed CORS origins, comma-separated (e.g. https://ui.example.com). CORS is off without.
    #[arg(
        long = "cors-origin",
        env = "WEFT_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub cors_origins: Vec<String>,
    /// Seconds to wait for in-flight requests and steps on shutdown.
    #[arg(long, env = "WEFT_SHUTDOWN_TIMEOUT", value_name = "SECS")]
    pub shutdown_timeout: Option<u64>,
    /// Seconds to keep retrying an unreachable database at start-up.
    #[arg(long, env = "WEFT_DB_CONNECT_TIMEOUT", value_name = "SECS")]
    pub db_connect_timeout: Option<u64>,
    /// Largest accepted JSON request body, in bytes.
    #[arg(long, env = "WEFT_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Log format: text or json.
    #[arg(long, env = "WEFT_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Largest accepted plugin upload, in bytes.
    #[arg(long, env = "WEFT_PLUGIN_MAX_BYTES", value_name = "BYTES")]
    pub plugin_max_bytes: Option<usize>,
    /// Seconds between checks of the plugins directory for changes (0: only on demand).
    #[arg(long, env = "WEFT_PLUGINS_POLL_INTERVAL", value_name = "SECS")]
    pub plugins_poll_interval: Option<u64>,
    /// Default memory cap of a step, in bytes.
    #[arg(long, env = "WEFT_STEP_MEMORY_BYTES", value_name = "BYTES")]
    pub step_memory_bytes: Option<u64>,
    /// Default wall-clock time-out of a step, in milliseconds.
    #[arg(long, env = "WEFT_STEP_TIMEOUT_MS", value_name = "MS")]
    pub step_timeout_ms: Option<u64>,
    /// Default fuel budget of a step (unset: unmetered, the time-out still applies).
    #[arg(long, env = "WEFT_STEP_FUEL", value_name = "FUEL")]
    pub step_fuel: Option<u64>,
    /// Hard cap on any step's memory, in bytes.
    #[arg(long, env = "WEFT_MAX_STEP_MEMORY_BYTES", value_name = "BYTES")]
    pub max_step_memory_bytes: Option<u64>,
    /// Hard cap on any step's time-out, in milliseconds.
    #[arg(long, env = "WEFT_MAX_STEP_TIMEOUT_MS", value_name = "MS")]
    pub max_step_timeout_ms: Option<u64>,
    /// Hard cap on any step's fuel.
    #[arg(long, env = "WEFT_MAX_STEP_FUEL", value_name = "FUEL")]
    pub max_step_fuel: Option<u64>,
    /// Steps running at once on this replica.
    #[arg(long, env = "WEFT_MAX_CONCURRENT_STEPS", value_name = "N")]
    pub max_concurrent_steps: Option<usize>,
    /// Milliseconds between looks at the store for due work (timers, other replicas).
    #[arg(long, env = "WEFT_POLL_INTERVAL_MS", value_name = "MS")]
    pub poll_interval_ms: Option<u64>,
    /// Seconds a claimed step's lease lasts without renewal (another replica takes over after).
    #[arg(long, env = "WEFT_LEASE_SECS", value_name = "SECS")]
    pub lease_secs: Option<u64>,
    /// Milliseconds a task step waits for a runner (a plugin or a connected agent) before failing.
    #[arg(long, env = "WEFT_SCHEDULE_TIMEOUT_MS", value_name = "MS")]
    pub schedule_timeout_ms: Option<u64>,
    /// Milliseconds between agent heartbeats (an agent silent for three is disconnected).
    #[arg(long, env = "WEFT_AGENT_HEARTBEAT_MS", value_name = "MS")]
    pub agent_heartbeat_ms: Option<u64>,
    /// Events kept for WebSocket clients that fall behind; a client further behind is closed
    /// (code 4008) and resumes by sequence.
    #[arg(long, env = "WEFT_WS_BUFFER_EVENTS", value_name = "N")]
    pub ws_buffer_events: Option<usize>,
    /// Seconds between WebSocket pings (a client silent for two is closed).
    #[arg(long, env = "WEFT_WS_PING_SECS", value_name = "SECS")]
    pub ws_ping_secs: Option<u64>,
    /// Milliseconds one WebSocket frame may take to leave before the client is closed as stuck.
    #[arg(long, env = "WEFT_WS_SEND_TIMEOUT_MS", value_name = "MS")]
    pub ws_send_timeout_ms: Option<u64>,
    /// Milliseconds between looks at the event log for new events (all replicas' events).
    #[arg(long, env = "WEFT_EVENTS_POLL_MS", value_name = "MS")]
    pub events_poll_ms: Option<u64>,
    /// PEM certificate chain for TLS on the gRPC port (with --grpc-tls-key).
    #[arg(long, env = "WEFT_GRPC_TLS_CERT", value_name = "FILE")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// PEM private key for TLS on the gRPC port (with --grpc-tls-cert).
    #[arg(long, env = "WEFT_GRPC_TLS_KEY", value_name = "FILE")]
    pub grpc_tls_key: Option<PathBuf>,
}

/// The configuration file's shape. Unknown keys are an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    http_addr: Option<String>,
    grpc_addr: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    plugins_dir: Option<PathBuf>,
    insecure: Option<bool>,
    check_migrations: Option<bool>,
    metrics_public: Option<bool>,
    otlp_endpoint: Option<String>,
    shutdown_timeout_secs: Option<u64>,
    db_connect_timeout_secs: Option<u64>,
    max_body_bytes: Option<usize>,
    log_format: Option<String>,
    plugin_max_bytes: Option<usize>,
    plugins_poll_interval_secs: Option<u64>,
    step_memory_bytes: Option<u64>,
    step_timeout_ms: Option<u64>,
    step_fuel: Option<u64>,
    max_step_memory_bytes: Option<u64>,
    max_step_timeout_ms: Option<u64>,
    max_step_fuel: Option<u64>,
    max_concurrent_steps: Option<usize>,
    poll_interval_ms: Option<u64>,
    lease_secs: Option<u64>,
    schedule_timeout_ms: Option<u64>,
    agent_heartbeat_ms: Option<u64>,
    ws_buffer_events: Option<usize>,
    ws_ping_secs: Option<u64>,
    ws_send_timeout_ms: Option<u64>,
    events_poll_ms: Option<u64>,
    grpc_tls_cert: Option<PathBuf>,
    grpc_tls_key: Option<PathBuf>,
    /// SHA-256 (hex) of accepted agent tokens.
    #[serde(default)]
    agent_tokens_sha256: Vec<String>,
    #[serde(default)]
    cors: Option<FileCors>,
    #[serde(default)]
    tokens: Vec<FileToken>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCors {
    #[serde(default)]
    allowed_origins: Vec<String>,
}

/// A token listed in the configuration file: only its SHA-256 is written there.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToken {
    name: String,
    role: String,
    sha256: String,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// An API token known from configuration (never its plaintext).
#[derive(Clone, PartialEq, Eq)]
pub struct ConfiguredToken {
    /// A label for logs and listings.
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// SHA-256 of the token.
    pub hash: TokenHash,
}

impl fmt::Debug for ConfiguredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfiguredToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The validated configuration the application is built from.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP listen address (port 0 picks a free port).
    pub http_addr: SocketAddr,
    /// gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Database URL (may hold a password: never log it, use [`Config::database_url_redacted`]).
    pub database_url: DatabaseUrl,
    /// Plugin directory, if any.
    pub plugins_dir: Option<PathBuf>,
    /// Non-loopback without tokens was explicitly allowed.
    pub insecure: bool,
    /// Check migrations instead of applying them.
    pub check_migrations: bool,
    /// `/metrics` needs no token.
    pub metrics_public: bool,
    /// The OTLP/HTTP collector traces go to; `None`: traces are off.
    pub otlp_endpoint: Option<String>,
    /// Longest time a finished span waits before it is exported.
    pub trace_flush_interval: Duration,
    /// CORS origin allowlist; empty means CORS is off.
    pub cors_origins: Vec<String>,
    /// API tokens from the configuration (admin bootstrap token included).
    pub tokens: Vec<ConfiguredToken>,
    /// Bound on graceful shutdown.
    pub shutdown_timeout: Duration,
    /// Bound on start-up database connection retries.
    pub db_connect_timeout: Duration,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Largest accepted plugin upload.
    pub plugin_max_bytes: usize,
    /// Plugins directory polling (`None`: only on demand).
    pub plugins_poll_interval: Option<Duration>,
    /// Limits of a step when its plugin sets none.
    pub step_limits: Limits,
    /// Hard caps on every step's limits.
    pub max_step_limits: Limits,
    /// Steps running at once on this replica.
    pub max_concurrent_steps: usize,
    /// Longest sleep between looks at the store for due work.
    pub poll_interval: Duration,
    /// Lease of a claimed step.
    pub lease: Duration,
    /// How long a task step waits for a runner.
    pub schedule_timeout: Duration,
    /// Agent heartbeat interval.
    pub agent_heartbeat: Duration,
    /// Accepted agent tokens (hashes); empty: agents need none (gRPC on loopback only).
    pub agent_tokens: Vec<TokenHash>,
    /// TLS for the gRPC port: PEM certificate chain and key, read at start-up.
    pub grpc_tls: Option<TlsFiles>,
    /// The live event feed and its WebSocket clients.
    pub live: LiveOptions,
}

/// The live event feed (`GET /api/v1/ws`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveOptions {
    /// Events kept for clients that fall behind (the feed's ring); further behind: closed.
    pub buffer_events: usize,
    /// Between pings; a client silent for two intervals is closed.
    pub ping_interval: Duration,
    /// Longest a frame may take to leave before the client is closed as stuck.
    pub send_timeout: Duration,
    /// Longest a socket being closed (falling behind, no pong, an error; not at shutdown)
    /// waits for its client to read through what is buffered for it up to the close frame (at
    /// least `send_timeout`); then it is dropped.
    pub close_linger: Duration,
    /// Between looks at the event log.
    pub poll_interval: Duration,
}

/// A certificate chain and its key, PEM, as read from the files named in the configuration.
#[derive(Clone)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert_pem: Vec<u8>,
    /// The private key (never printed).
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsFiles(..)")
    }
}

/// A database URL whose `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The full URL, to hand to the store only.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The URL with its password replaced, for logs.
    pub fn redacted(&self) -> String {
        weft_store::redact_url(&self.0)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// An invalid configuration: which option, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {option}: {message}")]
pub struct ConfigError {
    /// The option at fault, as the user would spell it (`--http-addr (WEFT_HTTP_ADDR)`).
    pub option: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn new(option: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            option: option.into(),
            message: message.into(),
        }
    }
}

/// The environment variable carrying the bootstrap admin token.
pub const ADMIN_TOKEN_ENV: &str = "WEFT_ADMIN_TOKEN";
/// The environment variable carrying the bootstrap agent token.
pub const AGENT_TOKEN_ENV: &str = "WEFT_AGENT_TOKEN";

impl Config {
    /// Merge flags/env (already in `args`), the optional file and defaults; validate.
    /// `admin_token` is the value of `WEFT_ADMIN_TOKEN`, if set.
    pub fn load(args: &ServeArgs, admin_token: Option<String>) -> Result<Config, ConfigError> {
        Self::load_with_agent_token(args, admin_token, None)
    }

    /// [`Config::load`], with the value of `WEFT_AGENT_TOKEN` too.
    pub fn load_with_agent_token(
        args: &ServeArgs,
        admin_token: Option<String>,
        agent_token: Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let (step_limits, max_step_limits) = step_limits(args, &file)?;
        let max_concurrent_steps = args
            .max_concurrent_steps
            .or(file.max_concurrent_steps)
            .unwrap_or(defaults::MAX_CONCURRENT_STEPS);
        if max_concurrent_steps == 0 || max_concurrent_steps > 10_000 {
            return Err(ConfigError::new(
                "--max-concurrent-steps (WEFT_MAX_CONCURRENT_STEPS)",
                "must be between 1 and 10000",
            ));
        }
        let poll_interval_ms = args
            .poll_interval_ms
            .or(file.poll_interval_ms)
            .unwrap_or(defaults::POLL_INTERVAL_MS);
        if !(10..=60_000).contains(&poll_interval_ms) {
            return Err(ConfigError::new(
                "--poll-interval-ms (WEFT_POLL_INTERVAL_MS)",
                "must be between 10 and 60000",
            ));
        }
        let schedule_timeout_ms = args
            .schedule_timeout_ms
            .or(file.schedule_timeout_ms)
            .unwrap_or(defaults::SCHEDULE_TIMEOUT_MS);
        let agent_heartbeat_ms = args
            .agent_heartbeat_ms
            .or(file.agent_heartbeat_ms)
            .unwrap_or(defaults::AGENT_HEARTBEAT_MS);
        if !(100..=600_000).contains(&agent_heartbeat_ms) {
            return Err(ConfigError::new(
                "--agent-heartbeat-ms (WEFT_AGENT_HEARTBEAT_MS)",
                "must be between 100 and 600000",
            ));
        }
        let live = live_options(args, &file)?;
        let grpc_tls = match (
            args.grpc_tls_cert.clone().or(file.grpc_tls_cert.clone()),
            args.grpc_tls_key.clone().or(file.grpc_tls_key.clone()),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let read = |path: &Path, option: &str| {
                    std::fs::read(path).map_err(|e| {
                        ConfigError::new(option, format!("cannot read {}: {e}", path.display()))
                    })
                };
                let cert_pem = read(&cert, "--grpc-tls-cert (WEFT_GRPC_TLS_CERT)")?;
                let key_pem = read(&key, "--grpc-tls-key (WEFT_GRPC_TLS_KEY)")?;
                if !String::from_utf8_lossy(&cert_pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(ConfigError::new(
                        "--grpc-tls-cert (WEFT_GRPC_TLS_CERT)",
                        format!("{} holds no PEM certificate", cert.display()),
                    ));
                }
                if !String::from_utf8_lossy(&key_pem).contains("PRIVATE KEY-----") {
                    return Err(ConfigError::new(
                        "--grpc-tls-key (WEFT_GRPC_TLS_KEY)",
                        format!("{} holds no PEM private key", key.display()),
                    ));
                }
                Some(TlsFiles { cert_pem, key_pem })
            }
            _ => {
                return Err(ConfigError::new(
                    "--grpc-tls-cert (WEFT_GRPC_TLS_CERT)",
                    "TLS needs both --grpc-tls-cert and --grpc-tls-key",
                ));
            }
        };
        let mut agent_tokens = Vec::new();
        if let Some(token) = agent_token {
            if token.trim().len() < 16 {
                return Err(ConfigError::new(
                    AGENT_TOKEN_ENV,
                    "must be at least 16 characters long",
                ));
            }
            agent_tokens.push(TokenHash::of(token.trim()));
        }
        for (i, hex_hash) in file.agent_tokens_sha256.iter().enumerate() {
            agent_tokens.push(TokenHash::from_hex(hex_hash).ok_or_else(|| {
                ConfigError::new(
                    format!("agent_tokens_sha256[{i}]"),
                    "must be 64 hexadecimal characters (the SHA-256 of the token)",
                )
            })?);
        }
        let lease_secs = args
            .lease_secs
            .or(file.lease_secs)
            .unwrap_or(defaults::LEASE_SECS);
        if !(1..=3600).contains(&lease_secs) {
            return Err(ConfigError::new(
                "--lease-secs (WEFT_LEASE_SECS)",
                "must be between 1 and 3600",
            ));
        }

        let http_addr = parse_addr(
            "--http-addr (WEFT_HTTP_ADDR)",
            args.http_addr
                .as_deref()
                .or(file.http_addr.as_deref())
                .unwrap_or(defaults::HTTP_ADDR),
        )?;
        let grpc_addr = parse_addr(
            "--grpc-addr (WEFT_GRPC_ADDR)",
            args.grpc_addr
                .as_deref()
                .or(file.grpc_addr.as_deref())
                .unwrap_or(defaults::GRPC_ADDR),
        )?;
        if http_addr.port() != 0 && http_addr == grpc_addr {
            return Err(ConfigError::new(
                "--grpc-addr (WEFT_GRPC_ADDR)",
                format!("{grpc_addr} is also the HTTP address"),
            ));
        }

        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(defaults::DATA_DIR));
        if data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new(
                "--data-dir (WEFT_DATA_DIR)",
                "must not be empty",
            ));
        }

        let database_url = match args.database_url.clone().or(file.database_url) {
            Some(url) => validate_database_url(&url)?,
            None => DatabaseUrl(format!("sqlite://{}", data_dir.join("weft.db").display())),
        };

        let plugins_dir = args.plugins_dir.clone().or(file.plugins_dir);
        if let Some(dir) = &plugins_dir
            && !dir.is_dir()
        {
            return Err(ConfigError::new(
                "--plugins-dir (WEFT_PLUGINS_DIR)",
                format!("{} is not a directory", dir.display()),
            ));
        }

        let mut cors_origins = if args.cors_origins.is_empty() {
            file.cors.map(|c| c.allowed_origins).unwrap_or_default()
        } else {
            args.cors_origins.clone()
        };
        cors_origins.retain(|o| !o.trim().is_empty());
        for origin in &mut cors_origins {
            *origin = validate_origin(origin)?;
        }

        let mut tokens = Vec::new();
        let mut names = BTreeSet::new();
        if let Some(token) = admin_token {
            if token.trim().len() < 16 {
                return Err(ConfigError::new(
                    ADMIN_TOKEN_ENV,
                    "must be at least 16 characters long",
                ));
            }
            names.insert("admin".to_string());
            tokens.push(ConfiguredToken {
                name: "admin".into(),
                role: Role::Admin,
                hash: TokenHash::of(token.trim()),
            });
        }
        for (i, t) in std::mem::take(&mut file.tokens).into_iter().enumerate() {
            let option = format!("tokens[{i}]");
            let role: Role = t
                .role
                .parse()
                .map_err(|e: String| ConfigError::new(format!("{option}.role"), e))?;
            let hash = TokenHash::from_hex(&t.sha256).ok_or_else(|| {
                ConfigError::new(
                    format!("{option}.sha256"),
                    "must be 64 hexadecimal characters (the SHA-256 of the token)",
                )
            })?;
            if t.name.trim().is_empty() || !names.insert(t.name.clone()) {
                return Err(ConfigError::new(
                    format!("{option}.name"),
                    "must be non-empty and unique",
                ));
            }
            tokens.push(ConfiguredToken {
                name: t.name,
                role,
                hash,
            });
        }

        let insecure = args.insecure || file.insecure.unwrap_or(false);
        if agent_tokens.is_empty() && !insecure && !grpc_addr.ip().is_loopback() {
            return Err(ConfigError::new(
                "--grpc-addr (WEFT_GRPC_ADDR)",
                format!(
                    "{grpc_addr} is not a loopback address and no agent token is configured; \
                     set {AGENT_TOKEN_ENV}, or pass --insecure"
                ),
            ));
        }
        if tokens.is_empty() && !insecure && !http_addr.ip().is_loopback() {
            return Err(ConfigError::new(
                "--http-addr (WEFT_HTTP_ADDR)",
                format!(
                    "{http_addr} is not a loopback address and no API token is configured; \
                     set {ADMIN_TOKEN_ENV} (or tokens in the config file), or pass --insecure"
                ),
            ));
        }

        let log_format = match args
            .log_format
            .as_deref()
            .or(file.log_format.as_deref())
            .unwrap_or("text")
        {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::new(
                    "--log-format (WEFT_LOG_FORMAT)",
                    format!("'{other}' is not one of: text, json"),
                ));
            }
        };

        let shutdown_timeout = args
            .shutdown_timeout
            .or(file.shutdown_timeout_secs)
            .unwrap_or(defaults::SHUTDOWN_TIMEOUT_SECS);
        let db_connect_timeout = args
            .db_connect_timeout
            .or(file.db_connect_timeout_secs)
            .unwrap_or(defaults::DB_CONNECT_TIMEOUT_SECS);
        if db_connect_timeout == 0 {
            return Err(ConfigError::new(
                "--db-connect-timeout (WEFT_DB_CONNECT_TIMEOUT)",
                "must be at least 1 second",
            ));
        }
        let max_body_bytes = args
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(defaults::MAX_BODY_BYTES);
        if max_body_bytes < 1024 {
            return Err(ConfigError::new(
                "--max-body-bytes (WEFT_MAX_BODY_BYTES)",
                "must be at least 1024",
            ));
        }

        let plugin_max_bytes = args
            .plugin_max_bytes
            .or(file.plugin_max_bytes)
            .unwrap_or(defaults::PLUGIN_MAX_BYTES);
        if plugin_max_bytes < 1024 {
            return Err(ConfigError::new(
                "--plugin-max-bytes (WEFT_PLUGIN_MAX_BYTES)",
                "must be at least 1024",
            ));
        }
        let poll = args
            .plugins_poll_interval
            .or(file.plugins_poll_interval_secs)
            .unwrap_or(defaults::PLUGINS_POLL_INTERVAL_SECS);

        let otlp_endpoint = args
            .otlp_endpoint
            .clone()
            .or(file.otlp_endpoint.clone())
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty());
        if let Some(url) = &otlp_endpoint
            && !url.starts_with("http://")
        {
            return Err(ConfigError::new(
                "--otlp-endpoint (WEFT_OTLP_ENDPOINT)",
                "must be an http:// URL (the OTLP/HTTP collector, e.g. a local agent or \
                 sidecar; TLS to the collector is not supported)",
            ));
        }

        Ok(Config {
            http_addr,
            grpc_addr,
            data_dir,
            database_url,
            plugins_dir,
            insecure,
            check_migrations: args.check_migrations || file.check_migrations.unwrap_or(false),
            metrics_public: args.metrics_public || file.metrics_public.unwrap_or(false),
            otlp_endpoint,
            trace_flush_interval: Duration::from_millis(defaults::TRACE_FLUSH_MS),
            cors_origins,
            tokens,
            shutdown_timeout: Duration::from_secs(shutdown_timeout),
            db_connect_timeout: Duration::from_secs(db_connect_timeout),
            max_body_bytes,
            log_format,
            plugin_max_bytes,
            plugins_poll_interval: (poll > 0).then(|| Duration::from_secs(poll)),
            step_limits,
            max_step_limits,
            max_concurrent_steps,
            poll_interval: Duration::from_millis(poll_interval_ms),
            lease: Duration::from_secs(lease_secs),
            schedule_timeout: Duration::from_millis(schedule_timeout_ms),
            agent_heartbeat: Duration::from_millis(agent_heartbeat_ms),
            agent_tokens,
            grpc_tls,
            live,
        })
    }

    /// A configuration for tests and embedding: loopback on port 0, everything else default.
    pub fn for_tests(data_dir: &Path, database_url: &str) -> Config {
        Config {
            http_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            grpc_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            data_dir: data_dir.to_path_buf(),
            database_url: DatabaseUrl(database_url.to_string()),
            plugins_dir: None,
            insecure: false,
            check_migrations: false,
            metrics_public: false,
            otlp_endpoint: None,
            trace_flush_interval: Duration::from_millis(defaults::TRACE_FLUSH_MS),
            cors_origins: Vec::new(),
            tokens: Vec::new(),
            shutdown_timeout: Duration::from_secs(defaults::SHUTDOWN_TIMEOUT_SECS),
            db_connect_timeout: Duration::from_secs(defaults::DB_CONNECT_TIMEOUT_SECS),
            max_body_bytes: defaults::MAX_BODY_BYTES,
            log_format: LogFormat::Text,
            plugin_max_bytes: defaults::PLUGIN_MAX_BYTES,
            plugins_poll_interval: None,
            step_limits: Limits::default(),
            max_step_limits: Limits::default_maxima(),
            max_concurrent_steps: defaults::MAX_CONCURRENT_STEPS,
            poll_interval: Duration::from_millis(100),
            lease: Duration::from_secs(defaults::LEASE_SECS),
            schedule_timeout: Duration::from_millis(500),
            agent_heartbeat: Duration::from_millis(defaults::AGENT_HEARTBEAT_MS),
            agent_tokens: Vec::new(),
            grpc_tls: None,
            live: LiveOptions {
                buffer_events: defaults::WS_BUFFER_EVENTS,
                ping_interval: Duration::from_secs(defaults::WS_PING_SECS),
                send_timeout: Duration::from_millis(defaults::WS_SEND_TIMEOUT_MS),
                close_linger: Duration::from_secs(defaults::WS_CLOSE_LINGER_SECS),
                poll_interval: Duration::from_millis(20),
            },
        }
    }

    /// Whether API requests must carry a token.
    pub fn auth_enabled(&self) -> bool {
        !self.tokens.is_empty()
    }
}

/// The live event feed and WebSocket settings, validated.
fn live_options(args: &ServeArgs, file: &FileConfig) -> Result<LiveOptions, ConfigError> {
    let buffer_events = args
        .ws_buffer_events
        .or(file.ws_buffer_events)
        .unwrap_or(defaults::WS_BUFFER_EVENTS);
    if !(16..=1_000_000).contains(&buffer_events) {
        return Err(ConfigError::new(
            "--ws-buffer-events (WEFT_WS_BUFFER_EVENTS)",
            "must be between 16 and 1000000",
        ));
    }
    let ping_secs = args
        .ws_ping_secs
        .or(file.ws_ping_secs)
        .unwrap_or(defaults::WS_PING_SECS);
    if !(1..=3600).contains(&ping_secs) {
        return Err(ConfigError::new(
            "--ws-ping-secs (WEFT_WS_PING_SECS)",
            "must be between 1 and 3600",
        ));
    }
    let send_timeout_ms = args
        .ws_send_timeout_ms
        .or(file.ws_send_timeout_ms)
        .unwrap_or(defaults::WS_SEND_TIMEOUT_MS);
    if !(100..=600_000).contains(&send_timeout_ms) {
        return Err(ConfigError::new(
            "--ws-send-timeout-ms (WEFT_WS_SEND_TIMEOUT_MS)",
            "must be between 100 and 600000",
        ));
    }
    let poll_ms = args
        .events_poll_ms
        .or(file.events_poll_ms)
        .unwrap_or(defaults::EVENTS_POLL_MS);
    if !(5..=60_000).contains(&poll_ms) {
        return Err(ConfigError::new(
            "--events-poll-ms (WEFT_EVENTS_POLL_MS)",
            "must be between 5 and 60000",
        ));
    }
    Ok(LiveOptions {
        buffer_events,
        ping_interval: Duration::from_secs(ping_secs),
        send_timeout: Duration::from_millis(send_timeout_ms),
        close_linger: Duration::from_secs(defaults::WS_CLOSE_LINGER_SECS),
        poll_interval: Duration::from_millis(poll_ms),
    })
}

/// Default and maximum step limits; a default above its maximum is an error.
fn step_limits(args: &ServeArgs, file: &FileConfig) -> Result<(Limits, Limits), ConfigError> {
    let base = Limits::default();
    let caps = Limits::default_maxima();
    let maxima = Limits {
        memory_bytes: args
            .max_step_memory_bytes
            .or(file.max_step_memory_bytes)
            .unwrap_or(caps.memory_bytes),
        fuel: args.max_step_fuel.or(file.max_step_fuel).or(caps.fuel),
        timeout: args
            .max_step_timeout_ms
            .or(file.max_step_timeout_ms)
            .map(Duration::from_millis)
            .unwrap_or(caps.timeout),
        ..caps
    };
    let limits = Limits {
        memory_bytes: args
            .step_memory_bytes
            .or(file.step_memory_bytes)
            .unwrap_or(base.memory_bytes.min(maxima.memory_bytes)),
        fuel: args.step_fuel.or(file.step_fuel).or(base.fuel),
        timeout: args
            .step_timeout_ms
            .or(file.step_timeout_ms)
            .map(Duration::from_millis)
            .unwrap_or(base.timeout.min(maxima.timeout)),
        ..base
    };
    let over = |option: &str, what: &str| {
        ConfigError::new(option, format!("is above the maximum {what} of a step"))
    };
    if limits.memory_bytes > maxima.memory_bytes {
        return Err(over(
            "--step-memory-bytes (WEFT_STEP_MEMORY_BYTES)",
            "memory",
        ));
    }
    if limits.timeout > maxima.timeout {
        return Err(over("--step-timeout-ms (WEFT_STEP_TIMEOUT_MS)", "time-out"));
    }
    if let (Some(fuel), Some(cap)) = (limits.fuel, maxima.fuel)
        && fuel > cap
    {
        return Err(over("--step-fuel (WEFT_STEP_FUEL)", "fuel"));
    }
    if limits.memory_bytes < 1 << 20 {
        return Err(ConfigError::new(
            "--step-memory-bytes (WEFT_STEP_MEMORY_BYTES)",
            "must be at least 1 MiB",
        ));
    }
    if limits.timeout.is_zero() {
        return Err(ConfigError::new(
            "--step-timeout-ms (WEFT_STEP_TIMEOUT_MS)",
            "must be at least 1 ms",
        ));
    }
    Ok((limits, maxima))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let option = format!("--config (WEFT_CONFIG) {}", path.display());
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(option.clone(), format!("cannot read: {e}")))?;
    toml::from_str(&text).map_err(|e| {
        // toml's messages span several lines (with a source excerpt); keep one line.
        let message = e.message().replace('\n', " ");
        let location = e
            .span()
            .map(|span| {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}: ")
            })
            .unwrap_or_default();
        ConfigError::new(option, format!("{location}{message}"))
    })
}

fn parse_addr(option: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    let value = value.trim();
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some(port) = value.strip_prefix("localhost:")
        && let Ok(port) = port.parse::<u16>()
    {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    Err(ConfigError::new(
        option,
        format!("'{value}' is not a socket address (expected IP:PORT, e.g. 127.0.0.1:8080)"),
    ))
}

fn validate_database_url(url: &str) -> Result<DatabaseUrl, ConfigError> {
    let option = "--database-url (WEFT_DATABASE_URL)";
    let url = url.trim();
    let scheme_ok = ["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|s| url.starts_with(s));
    if !scheme_ok {
        return Err(ConfigError::new(
            option,
            format!(
                "'{}' must start with sqlite:// or postgres://",
                weft_store::redact_url(url)
            ),
        ));
    }
    Ok(DatabaseUrl(url.to_string()))
}

fn validate_origin(origin: &str) -> Result<String, ConfigError> {
    let option = "--cors-origin (WEFT_CORS_ORIGINS)";
    let origin = origin.trim().trim_end_matches('/');
    if origin == "*" {
        return Err(ConfigError::new(
            option,
            "'*' is not allowed: list the origins that may call the API",
        ));
    }
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    let valid = match rest {
        Some(host) => {
            !host.is_empty()
                && !host.contains('/')
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        }
        None => false,
    };
    if !valid || http::HeaderValue::from_str(origin).is_err() {
        return Err(ConfigError::new(
            option,
            format!("'{origin}' is not an origin (expected scheme://host[:port])"),
        ));
    }
    Ok(origin.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: ServeArgs) -> Result<Config, ConfigError> {
        Config::load(&args, None)
    }

    #[test]
    fn defaults_are_loopback_sqlite_in_data_dir() {
        let config = load(ServeArgs::default()).expect("defaults are valid");
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(config.database_url.expose(), "sqlite://./weft-data/weft.db");
        assert!(!config.auth_enabled());
        assert!(config.cors_origins.is_empty());
    }

    #[test]
    fn bad_address_names_the_option() {
        let err = load(ServeArgs {
            http_addr: Some("nonsense".into()),
            ..Default::default()
        })
        .expect_err("invalid");
        assert_eq!(err.option, "--http-addr (WEFT_HTTP_ADDR)");
        assert!(
            err.to_string()
                .contains("'nonsense' is not a socket address")
        );
    }

    #[test]
    fn non_loopback_without_tokens_needs_insecure() {
        let args = ServeArgs {
            http_addr: Some("0.0.0.0:8080".into()),
            ..Default::default()
        };
        assert!(load(args.clone()).is_err());
        assert!(
            load(ServeArgs {
                insecure: true,
                ..args.clone()
            })
            .is_ok()
        );
        assert!(Config::load(&args, Some("0123456789abcdef-secret".into())).is_ok());
    }

    #[test]
    fn cors_wildcard_is_refused_and_origins_are_normalised() {
        let err = load(ServeArgs {
            cors_origins: vec!["*".into()],
            ..Default::default()
        })
        .expect_err("wildcard");
        assert!(err.to_string().contains("'*' is not allowed"));
        let config = load(ServeArgs {
            cors_origins: vec!["https://ui.example.com/".into()],
            ..Default::default()
        })
        .expect("valid origin");
        assert_eq!(config.cors_origins, vec!["https://ui.example.com"]);
    }

    #[test]
    fn otlp_endpoint_is_off_by_default_and_must_be_http() {
        assert_eq!(
            load(ServeArgs::default()).expect("defaults").otlp_endpoint,
            None
        );
        let err = load(ServeArgs {
            otlp_endpoint: Some("collector:4318".into()),
            ..Default::default()
        })
        .expect_err("no scheme");
        assert!(err.to_string().contains("--otlp-endpoint"), "{err}");
        let config = load(ServeArgs {
            otlp_endpoint: Some(" http://127.0.0.1:4318/ ".into()),
            ..Default::default()
        })
        .expect("valid endpoint");
        assert_eq!(
            config.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4318")
        );
    }

    #[test]
    fn database_url_scheme_is_checked_and_password_redacted() {
        let err = load(ServeArgs {
            database_url: Some("mysql://u:hunter2@h/db".into()),
            ..Default::default()
        })
        .expect_err("unsupported scheme");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let config = load(ServeArgs {
            database_url: Some("postgres://u:hunter2@h/db".into()),
            ..Default::default()
        })
        .expect("postgres url");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn file_unknown_key_is_one_line_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("weft.toml");
        std::fs::write(&path, "http_addr = \"127.0.0.1:9000\"\nhttp_adr = \"x\"\n").expect("write");
        let err = load(ServeArgs {
            config: Some(path),
            ..Default::default()
        })
        .expect_err("unknown key");
        let text = err.to_string();
        assert!(text.contains("http_adr"), "{text}");
        assert!(text.contains("line 2"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    #[test]
    fn precedence_flag_over_file_over_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("weft.toml");
        std::fs::write(
            &path,
            "http_addr = \"127.0.0.1:9000\"\ngrpc_addr = \"127.0.0.1:9001\"\n\
             [[tokens]]\nname = \"ci\"\nrole = \"read\"\nsha256 = \""
                .to_string()
                + &"ab".repeat(32)
                + "\"\n",
        )
        .expect("write");
        let config = load(ServeArgs {
            config: Some(path),
            http_addr: Some("127.0.0.1:7000".into()),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:7000");
        assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:9001");
        assert_eq!(config.tokens.len(), 1);
        assert_eq!(config.tokens[0].role, Role::Read);
    }

    #[test]
    fn short_admin_token_is_refused_and_never_echoed() {
        let err = Config::load(&ServeArgs::default(), Some("short".into())).expect_err("short");
        assert_eq!(err.option, ADMIN_TOKEN_ENV);
        assert!(!err.to_string().contains("short\""));
    }
}
