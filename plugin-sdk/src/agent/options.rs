//! [`AgentOptions`]: where the engine is and how to authenticate, as command-line flags and
//! environment variables; and their translation into a tonic endpoint and a header.

use std::fmt;
use std::time::Duration;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{ClientTlsConfig, Endpoint};

use super::AgentError;

/// How an agent reaches its engine. Flatten it into a binary's clap arguments:
///
/// ```no_run
/// #[derive(clap::Parser)]
/// struct Cli {
///     #[command(flatten)]
///     agent: weft_plugin_sdk::agent::AgentOptions,
/// }
/// ```
#[derive(Clone, PartialEq, Eq, clap::Args)]
pub struct AgentOptions {
    /// The engine's gRPC address: http://HOST:PORT, or https://HOST:PORT for TLS (checked against
    /// the system's and the Mozilla root certificates).
    #[arg(
        long,
        env = "WEFT_ENGINE_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub engine: String,
    /// The agent token, sent as `authorization: Bearer <token>`. Prefer the environment variable:
    /// command lines are visible to other users of the machine.
    #[arg(long, env = "WEFT_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How many assignments this agent runs at once.
    #[arg(long, env = "WEFT_AGENT_CAPACITY", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub capacity: u32,
    /// The name the agent announces to the engine, instead of the program's own.
    #[arg(long)]
    pub name: Option<String>,
}

impl AgentOptions {
    /// The defaults of the flags: a local engine, no token, capacity 4.
    pub fn new(engine: impl Into<String>) -> Self {
        Self {
            engine: engine.into(),
            token: None,
            capacity: 4,
            name: None,
        }
    }

    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn capacity(mut self, capacity: u32) -> Self {
        self.capacity = capacity;
        self
    }
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self::new("http://127.0.0.1:50051")
    }
}

/// Never prints the token.
impl fmt::Debug for AgentOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentOptions")
            .field("engine", &self.engine)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("capacity", &self.capacity)
            .field("name", &self.name)
            .finish()
    }
}

/// HTTP/2 pings on the connection: a vanished engine host is noticed in about 40 s even while
/// nothing else is sent.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The endpoint for `url`: `http://` in the clear, `https://` with rustls.
pub(crate) fn endpoint(url: &str) -> Result<Endpoint, AgentError> {
    let bad = |why: String| AgentError::Config(format!("engine URL `{url}`: {why}"));
    let tls = match url.split_once("://") {
        Some(("http", _)) => false,
        Some(("https", _)) => true,
        _ => return Err(bad("must start with http:// or https://".into())),
    };
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if endpoint.uri().host().is_none_or(str::is_empty) {
        return Err(bad("no host".into()));
    }
    if !tls {
        return Ok(endpoint);
    }
    match endpoint
        .clone()
        .tls_config(ClientTlsConfig::new().with_enabled_roots())
    {
        Ok(endpoint) => Ok(endpoint),
        // No system certificates (a slim container): the bundled Mozilla roots alone.
        Err(_) => endpoint
            .tls_config(ClientTlsConfig::new().with_webpki_roots())
            .map_err(|e| bad(format!("TLS: {e}"))),
    }
}

/// The `authorization` header value for `token`, marked sensitive (never logged by tonic).
pub(crate) fn authorization(token: &str) -> Result<AsciiMetadataValue, AgentError> {
    let mut value: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {token}"))
        .map_err(|_| {
            AgentError::Config("the agent token must be printable ASCII without newlines".into())
        })?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentOptions,
    }

    #[test]
    fn flags_and_defaults() {
        let cli = Cli::try_parse_from(["agent"]).unwrap();
        assert_eq!(cli.agent.engine, "http://127.0.0.1:50051");
        assert_eq!(cli.agent.capacity, 4);
        let cli = Cli::try_parse_from([
            "agent",
            "--engine",
            "https://engine:443",
            "--token",
            "t0k",
            "--capacity",
            "2",
            "--name",
            "n",
        ])
        .unwrap();
        assert_eq!(
            cli.agent,
            AgentOptions {
                engine: "https://engine:443".into(),
                token: Some("t0k".into()),
                capacity: 2,
                name: Some("n".into())
            }
        );
        assert!(Cli::try_parse_from(["agent", "--capacity", "0"]).is_err());
        assert!(!format!("{:?}", cli.agent).contains("t0k"));
    }

    #[test]
    fn endpoints() {
        endpoint("http://127.0.0.1:50051").unwrap();
        endpoint("https://engine.example:443").unwrap();
        for bad in ["127.0.0.1:50051", "ftp://x", "http://", "not a url"] {
            let err = endpoint(bad).unwrap_err();
            assert!(matches!(err, AgentError::Config(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn authorization_header() {
        assert_eq!(authorization("abc").unwrap(), "Bearer abc");
        assert!(authorization("a\nb").is_err());
    }
}
