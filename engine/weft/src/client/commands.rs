//! Each client command: parse its arguments into a request, call [`Client`], print the answer.

use std::io::Write as _;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::cli::{
    AgentCommand, ApplyArgs, ClientArgs, Command, DefinitionCommand, ListRunsArgs, OutputFormat,
    PluginCommand, PushArgs, RunCommand, StartArgs,
};
use crate::client::apply::{self, Action};
use crate::client::http::{DefinitionFilter, DefinitionSelector, RunFilter, StartRequest};
use crate::client::watch::{self, Endpoint, Outcome};
use crate::client::{CliError, Client, EXIT_CANCELLED, output};

/// Where results go: stdout, as text or as the server's JSON.
struct Printer {
    format: OutputFormat,
}

impl Printer {
    /// Write `text` as is (a closed stdout, as in `| head`, is not an error).
    fn raw(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }

    /// One JSON document (pretty), or `text(value)`.
    fn show(&self, value: &Value, text: impl FnOnce(&Value) -> String) {
        match self.format {
            OutputFormat::Json => self.raw(&format!(
                "{}\n",
                serde_json::to_string_pretty(value).unwrap_or_default()
            )),
            OutputFormat::Text => self.raw(&text(value)),
        }
    }

    /// One JSON document on one line (a line of a watch's NDJSON).
    fn line(&self, value: &Value) {
        self.raw(&format!("{value}\n"));
    }

    fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
    }
}

fn connect(args: &ClientArgs) -> Result<(Client, Printer), CliError> {
    let client = Client::new(&args.server, args.token.clone())?;
    Ok((
        client,
        Printer {
            format: args.output,
        },
    ))
}

/// Run one client command; the exit code on success (0, or a watched run's outcome).
pub async fn execute(command: Command) -> Result<u8, CliError> {
    match command {
        Command::Serve(_) => Err(CliError::Usage(
            "`weft serve` is not a client command".into(),
        )),
        Command::Plugin(args) => {
            let (client, out) = connect(&args.client)?;
            plugin(&client, &out, args.command).await
        }
        Command::Definition(args) => {
            let (client, out) = connect(&args.client)?;
            definition(&client, &out, args.command).await
        }
        Command::Run(args) => {
            let (client, out) = connect(&args.client)?;
            run(&client, &out, args.command).await
        }
        Command::Agent(args) => {
            let (client, out) = connect(&args.client)?;
            match args.command {
                AgentCommand::List => out.show(&client.list_agents().await?, output::agents),
            }
            Ok(0)
        }
    }
}

async fn plugin(client: &Client, out: &Printer, command: PluginCommand) -> Result<u8, CliError> {
    match command {
        PluginCommand::Push(args) => push(client, out, args).await?,
        PluginCommand::List => out.show(&client.list_plugins().await?, output::plugins),
        PluginCommand::Get {
            name,
            version: Some(version),
        } => out.show(&client.get_plugin(&name, &version).await?, output::plugin),
        PluginCommand::Get {
            name,
            version: None,
        } => out.show(&client.plugin_versions(&name).await?, output::plugins),
    }
    Ok(0)
}

async fn push(client: &Client, out: &Printer, args: PushArgs) -> Result<(), CliError> {
    let wasm = std::fs::read(&args.file)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", args.file.display())))?;
    let limits: Vec<(&str, u64)> = [
        ("memoryBytes", args.memory_bytes),
        ("timeoutMs", args.timeout_ms),
        ("fuel", args.fuel),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key, value?)))
    .collect();
    let (plugin, created) = client.push_plugin(wasm, &limits).await?;
    out.show(&plugin, |p| {
        format!(
            "plugin {} {} {} (sha256 {})\n",
            text(p, "name"),
            text(p, "version"),
            if created { "uploaded" } else { "already there" },
            text(p, "sha256")
        )
    });
    Ok(())
}

fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

async fn definition(
    client: &Client,
    out: &Printer,
    command: DefinitionCommand,
) -> Result<u8, CliError> {
    match command {
        DefinitionCommand::Apply(args) => apply_file(client, out, args).await?,
        DefinitionCommand::List {
            name,
            query,
            limit,
            offset,
        } => {
            let list = client
                .list_definitions(&DefinitionFilter {
                    name,
                    query,
                    limit,
                    offset,
                })
                .await?;
            out.show(&list, output::definitions);
        }
        DefinitionCommand::Get {
            id_or_name,
            version,
        } => {
            let found = find_definition(client, &id_or_name, version.as_deref()).await?;
            out.show(&found, output::definition);
        }
    }
    Ok(0)
}

/// By id, or by name (a given version, else the newest).
async fn find_definition(
    client: &Client,
    id_or_name: &str,
    version: Option<&str>,
) -> Result<Value, CliError> {
    if Uuid::parse_str(id_or_name).is_ok() {
        if version.is_some() {
            return Err(CliError::Usage(
                "--version goes with a definition name, not an id".into(),
            ));
        }
        return Ok(client.get_definition(id_or_name).await?);
    }
    let versions = client.definition_versions(id_or_name).await?;
    let found = match version {
        Some(version) => versions
            .iter()
            .find(|d| d.get("version").and_then(Value::as_str) == Some(version)),
        None => apply::newest(&versions),
    };
    found.cloned().ok_or_else(|| {
        let what = match version {
            Some(version) => format!("'{id_or_name}' version {version}"),
            None => format!("'{id_or_name}'"),
        };
        CliError::Failed(format!("not_found: no workflow definition named {what}"))
    })
}

async fn apply_file(client: &Client, out: &Printer, args: ApplyArgs) -> Result<(), CliError> {
    let document = apply::read_document(&args.file)?;
    let name = apply::name_of(&document, &args.file)?;
    let versions = client.definition_versions(&name).await?;
    let action = apply::plan(&document, &versions, args.bump.as_str())?;
    let by_id = |id: &str| {
        versions
            .iter()
            .find(|d| d.get("id").and_then(Value::as_str) == Some(id))
            .cloned()
    };
    let (mut result, done) = match &action {
        Action::Create => (client.create_definition(&document).await?, "created"),
        Action::Unchanged(id) => match by_id(id) {
            Some(found) => (found, "unchanged"),
            None => (client.get_definition(id).await?, "unchanged"),
        },
        Action::UpdateDraft(id) => {
            let body = apply::replacement_body(&document, by_id(id).as_ref());
            (client.update_definition(id, &body).await?, "updated")
        }
        Action::NewVersion(from, next) => {
            let body = apply::replacement_body(&document, by_id(from).as_ref());
            (
                client.new_definition_version(from, next, &body).await?,
                "new version",
            )
        }
    };
    let id = result
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut steps = vec![done.to_string()];
    let draft = result
        .get("isDraft")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if (args.publish || args.enable) && draft {
        result = client.publish_definition(&id).await?;
        steps.push("published".into());
    }
    let enabled = result
        .get("isEnabled")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if args.enable && !enabled {
        result = client.enable_definition(&id).await?;
        steps.push("enabled".into());
    }
    out.show(&result, |d| {
        format!(
            "definition {} {} ({}): {}\n",
            text(d, "name"),
            text(d, "version"),
            text(d, "id"),
            steps.join(", ")
        )
    });
    Ok(())
}

async fn run(client: &Client, out: &Printer, command: RunCommand) -> Result<u8, CliError> {
    match command {
        RunCommand::Start(args) => return start(client, out, args).await,
        RunCommand::Get { id } => out.show(&client.get_run(&check_id(&id)?).await?, output::run),
        RunCommand::List(args) => list_runs(client, out, args).await?,
        RunCommand::Steps { id } => {
            out.show(&client.run_steps(&check_id(&id)?).await?, output::steps)
        }
        RunCommand::Cancel { id } => {
            out.show(&client.cancel_run(&check_id(&id)?).await?, output::run)
        }
        RunCommand::Retry { id, watch } => {
            let id = check_id(&id)?;
            if !watch {
                out.show(&client.retry_run(&id).await?, output::run);
                return Ok(0);
            }
            // From the retry on: the events after the newest one stored before it.
            let after = latest_seq(client, &id).await?;
            client.retry_run(&id).await?;
            return follow(client, out, &id, after).await;
        }
        RunCommand::Watch { id } => return follow(client, out, &check_id(&id)?, 0).await,
        RunCommand::Signal { id, name, payload } => {
            let payload = match payload {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| CliError::Usage(format!("--payload is not JSON: {e}")))?,
                None => Value::Null,
            };
            let signal = client.signal_run(&check_id(&id)?, &name, &payload).await?;
            out.show(&signal, output::signal);
        }
    }
    Ok(0)
}

/// A run id must be a UUID; saying so here beats the server's path error.
fn check_id(id: &str) -> Result<String, CliError> {
    Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| CliError::Usage(format!("'{id}' is not a run id (a UUID)")))
}

/// The sequence number of the newest stored event of run `id` (0 if none).
async fn latest_seq(client: &Client, id: &str) -> Result<i64, CliError> {
    let mut after = 0;
    loop {
        let page = client.run_events(id, after, 10_000).await?;
        let items = page
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let Some(last) = items
            .last()
            .and_then(|e| e.get("seq"))
            .and_then(Value::as_i64)
        else {
            return Ok(after);
        };
        after = last;
        if items.len() < 10_000 {
            return Ok(after);
        }
    }
}

async fn list_runs(client: &Client, out: &Printer, args: ListRunsArgs) -> Result<(), CliError> {
    let (definition_id, name) = match args.definition {
        Some(d) if Uuid::parse_str(&d).is_ok() => (Some(d), None),
        Some(d) => (None, Some(d)),
        None => (None, None),
    };
    let parent_run_id = args.parent.as_deref().map(check_id).transpose()?;
    let list = client
        .list_runs(&RunFilter {
            status: args.status.map(|s| s.to_ascii_uppercase()),
            definition_id,
            name,
            parent_run_id,
            limit: args.limit,
            offset: args.offset,
        })
        .await?;
    out.show(&list, output::runs);
    Ok(())
}

/// `--input` or `--input-file` (JSON, or YAML), else `{}`.
fn run_input(args: &StartArgs) -> Result<Value, CliError> {
    if let Some(text) = &args.input {
        return serde_json::from_str(text)
            .map_err(|e| CliError::Usage(format!("--input is not JSON: {e}")));
    }
    if let Some(path) = &args.input_file {
        return Ok(apply::read_document(path)?);
    }
    Ok(json!({}))
}

async fn start(client: &Client, out: &Printer, args: StartArgs) -> Result<u8, CliError> {
    let input = run_input(&args)?;
    let definition = match (&args.definition_id, &args.name) {
        (Some(id), None) => {
            if args.version.is_some() {
                return Err(CliError::Usage(
                    "--version goes with a definition name, not --definition-id".into(),
                ));
            }
            DefinitionSelector::Id(
                Uuid::parse_str(id)
                    .map_err(|_| CliError::Usage(format!("'{id}' is not a definition id")))?
                    .to_string(),
            )
        }
        (None, Some(name)) => DefinitionSelector::Name {
            name: name.clone(),
            version: args.version.clone(),
        },
        _ => {
            return Err(CliError::Usage(
                "name the definition, or give --definition-id".into(),
            ));
        }
    };
    let run = client
        .start_run(&StartRequest {
            definition,
            input,
            idempotency_key: args.idempotency_key.clone(),
        })
        .await?;
    if !args.watch {
        out.show(&run, output::run);
        return Ok(0);
    }
    let id = run
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| CliError::Failed("the server's run has no id".into()))?
        .to_string();
    follow(client, out, &id, 0).await
}

/// Watch run `id` from the event after `after` to its end; print each event, then the run;
/// the exit code is the run's outcome.
async fn follow(client: &Client, out: &Printer, id: &str, after: i64) -> Result<u8, CliError> {
    let endpoint = Endpoint::for_server(client.base(), client.token())?;
    let mut printer = output::EventPrinter::new();
    let outcome = watch::watch_run(
        &endpoint,
        id,
        after,
        |event| {
            if out.is_json() {
                out.line(event);
            } else if let Some(line) = printer.line(event) {
                out.raw(&format!("{line}\n"));
            }
        },
        async |seq| {
            // A terminal event replayed: final unless the run has a later event (a retry).
            match client.run_events(id, seq, 1).await {
                Ok(page) => page
                    .get("items")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty),
                Err(_) => true,
            }
        },
    )
    .await?;
    let run = client.get_run(id).await?;
    if out.is_json() {
        out.line(&run);
    } else {
        out.raw(&output::run(&run));
    }
    let outcome = run
        .get("status")
        .and_then(Value::as_str)
        .and_then(Outcome::of_status)
        .unwrap_or(outcome);
    Ok(exit_code(outcome))
}

/// 0 completed, 1 failed, 3 cancelled.
fn exit_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Completed => 0,
        Outcome::Failed => 1,
        Outcome::Cancelled => EXIT_CANCELLED,
    }
}
