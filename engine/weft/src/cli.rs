//! The `weft` command line. `weft serve` runs the server; `plugin`, `definition`, `run` and
//! `agent` are the client, talking to a server over its REST API and WebSocket
//! (`crate::client`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::ServeArgs;

/// Weft: a workflow engine with WebAssembly and remote steps.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
// Parsed once per process: the size of the `serve` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Step plugins (WebAssembly components): push, list, get.
    Plugin(PluginArgs),
    /// Workflow definitions: apply a file, list, get.
    Definition(DefinitionArgs),
    /// Workflow runs: start (and watch), get, list, steps, cancel, retry, watch, signal.
    #[command(after_long_help = RUN_EXIT_CODES)]
    Run(RunArgs),
    /// Remote agents connected to the server.
    Agent(AgentArgs),
}

/// Exit codes of the client, shown in `--help` of the commands that wait for a run.
pub const RUN_EXIT_CODES: &str = "\
Exit codes: 0 success (a watched run COMPLETED), 1 a failure or a server error (a watched run \
FAILED), 2 a usage or configuration error, 3 a watched run was CANCELLED.";

/// How the client prints results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables and lines for people.
    Text,
    /// The server's JSON, one document (events of a watch: one JSON object per line).
    Json,
}

/// Where the server is and how to print: accepted by every client command, anywhere after it.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        env = "WEFT_SERVER",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub server: String,
    /// API token, sent as `Authorization: Bearer`.
    #[arg(long, global = true, env = "WEFT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Output format.
    #[arg(long, global = true, env = "WEFT_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `weft plugin ...`
#[derive(Debug, Args)]
pub struct PluginArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// Plugin subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Upload a component (admin). Its name and version are the ones the component describes
    /// itself with (`describe`); uploading the same bytes again is a no-op.
    Push(PushArgs),
    /// List every plugin version.
    List,
    /// One plugin's versions, or one version's metadata (schemas, sha256, sizes).
    Get {
        /// Plugin name.
        name: String,
        /// A version; without it, every version of the plugin.
        version: Option<String>,
    },
}

/// `weft plugin push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The component (`.wasm`).
    pub file: PathBuf,
    /// Per-plugin linear memory cap, bytes.
    #[arg(long)]
    pub memory_bytes: Option<u64>,
    /// Per-plugin wall-clock time-out of one invocation, milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Per-plugin fuel budget.
    #[arg(long)]
    pub fuel: Option<u64>,
}

/// `weft definition ...`
#[derive(Debug, Args)]
pub struct DefinitionArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: DefinitionCommand,
}

/// How a new version is numbered when `apply` has to create one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BumpArg {
    /// x.y.Z
    Patch,
    /// x.Y.0
    Minor,
    /// X.0.0
    Major,
}

impl BumpArg {
    /// The server's name for it (`?bump=`).
    pub fn as_str(self) -> &'static str {
        match self {
            BumpArg::Patch => "patch",
            BumpArg::Minor => "minor",
            BumpArg::Major => "major",
        }
    }
}

/// Definition subcommands.
#[derive(Debug, Subcommand)]
pub enum DefinitionCommand {
    /// Create or update a definition from a JSON or YAML file.
    ///
    /// No definition with the file's name: it is created (as a draft). Otherwise the newest
    /// version is compared with the file: unchanged, nothing is written; a draft is updated in
    /// place; a published version gets a new draft version (`--bump`, default patch, or the
    /// file's own `version`). Then `--publish` publishes and `--enable` enables the result.
    /// Keys missing from the file are removed from the definition, as if written anew.
    Apply(ApplyArgs),
    /// List definitions (every version).
    List {
        /// Only this exact name.
        #[arg(long)]
        name: Option<String>,
        /// Names containing this text.
        #[arg(long, short = 'q')]
        query: Option<String>,
        /// Page size (1-200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Skip this many.
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// One definition, by id or by name (the newest version, or `--version`).
    Get {
        /// A definition id, or a name.
        id_or_name: String,
        /// With a name: this version.
        #[arg(long)]
        version: Option<String>,
    },
}

/// `weft definition apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A definition file: JSON, or YAML (`.yaml`/`.yml`, or content that is not JSON).
    pub file: PathBuf,
    /// Publish the result (a published version cannot change any more).
    #[arg(long)]
    pub publish: bool,
    /// Enable the result (implies `--publish`: only published versions run by name).
    #[arg(long)]
    pub enable: bool,
    /// How to number a new version of a published definition.
    #[arg(long, value_enum, default_value_t = BumpArg::Patch)]
    pub bump: BumpArg,
}

/// `weft run ...`
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: RunCommand,
}

/// Run subcommands.
#[derive(Debug, Subcommand)]
pub enum RunCommand {
    /// Start a run of a definition, by name (newest enabled published version) or by id.
    #[command(after_long_help = RUN_EXIT_CODES)]
    Start(StartArgs),
    /// One run: status, input, output, error.
    Get {
        /// Run id.
        id: String,
    },
    /// List runs, newest first.
    List(ListRunsArgs),
    /// A run's steps with their attempts.
    Steps {
        /// Run id.
        id: String,
    },
    /// Cancel a run (and its child runs).
    Cancel {
        /// Run id.
        id: String,
    },
    /// Retry a failed run from its failed steps.
    Retry {
        /// Run id.
        id: String,
        /// Then follow it until it ends.
        #[arg(long)]
        watch: bool,
    },
    /// Follow a run step by step until it ends (from its first event); the exit code is its
    /// outcome.
    #[command(after_long_help = RUN_EXIT_CODES)]
    Watch {
        /// Run id.
        id: String,
    },
    /// Send a signal to a run (a wait step waiting for it goes on).
    Signal {
        /// Run id.
        id: String,
        /// Signal name.
        name: String,
        /// JSON payload.
        #[arg(long)]
        payload: Option<String>,
    },
}

/// `weft run start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Definition name.
    #[arg(
        required_unless_present = "definition_id",
        conflicts_with = "definition_id"
    )]
    pub name: Option<String>,
    /// Definition id, instead of a name.
    #[arg(long)]
    pub definition_id: Option<String>,
    /// With a name: this version instead of the newest enabled one.
    #[arg(long)]
    pub version: Option<String>,
    /// The run's input, a JSON object.
    #[arg(long, conflicts_with = "input_file")]
    pub input: Option<String>,
    /// Read the input from a JSON or YAML file (`-` for standard input).
    #[arg(long)]
    pub input_file: Option<PathBuf>,
    /// Start at most one run per key (a second start returns the first run).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Follow the run step by step until it ends; the exit code is its outcome.
    #[arg(long)]
    pub watch: bool,
}

/// `weft run list`.
#[derive(Debug, Args)]
pub struct ListRunsArgs {
    /// Only runs with this status (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED).
    #[arg(long)]
    pub status: Option<String>,
    /// Only runs of this definition (an id, or a name: every version).
    #[arg(long)]
    pub definition: Option<String>,
    /// Only child runs of this run.
    #[arg(long)]
    pub parent: Option<String>,
    /// Page size (1-200).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Skip this many.
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
}

/// `weft agent ...`
#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: AgentCommand,
}

/// Agent subcommands.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Connected agents with their tasks, capacity and load.
    List,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn client_flags_go_anywhere_after_the_group() {
        let cli = Cli::try_parse_from([
            "weft",
            "run",
            "get",
            "abc",
            "--server",
            "http://h:1",
            "--output",
            "json",
        ])
        .expect("parses");
        let Command::Run(run) = cli.command else {
            panic!("not run: {cli:?}");
        };
        assert_eq!(run.client.server, "http://h:1");
        assert_eq!(run.client.output, OutputFormat::Json);
    }

    #[test]
    fn start_needs_a_name_or_an_id_but_not_both() {
        assert!(Cli::try_parse_from(["weft", "run", "start"]).is_err());
        assert!(
            Cli::try_parse_from(["weft", "run", "start", "x", "--definition-id", "y"]).is_err()
        );
        assert!(Cli::try_parse_from(["weft", "run", "start", "--definition-id", "y"]).is_ok());
        assert!(
            Cli::try_parse_from([
                "weft",
                "run",
                "start",
                "x",
                "--input",
                "{}",
                "--input-file",
                "f"
            ])
            .is_err()
        );
    }
}
