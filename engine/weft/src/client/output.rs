//! How the client shows the server's JSON to people: tables, detail blocks, one line per event.
//! (`--output json` prints the JSON itself and does not come here.)

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A field as display text: strings bare, null/absent as `-`, anything else as compact JSON.
fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) if s.is_empty() => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn field(value: &Value, key: &str) -> String {
    text(value.get(key))
}

fn items(list: &Value) -> &[Value] {
    list.get("items")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Columns padded to their widest cell, two spaces apart; no trailing spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let width = widths.get(i).copied().unwrap_or(0);
            let _ = write!(line, "{cell:<width$}");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A list's items as a table, with a footer when the page is not everything.
fn paged(list: &Value, headers: &[&str], row: impl Fn(&Value) -> Vec<String>) -> String {
    let items = items(list);
    if items.is_empty() {
        return "(none)\n".to_string();
    }
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    let mut out = table(headers, &rows);
    if let Some(total) = list.get("totalCount").and_then(Value::as_u64)
        && total > items.len() as u64
    {
        let offset = list.get("offset").and_then(Value::as_u64).unwrap_or(0);
        let _ = writeln!(
            out,
            "({}-{} of {total}; --offset to see more)",
            offset + 1,
            offset + items.len() as u64
        );
    }
    out
}

/// `GET /plugins` (or one plugin's versions).
pub fn plugins(list: &Value) -> String {
    paged(
        list,
        &["NAME", "VERSION", "SOURCE", "SIZE", "DESCRIPTION"],
        |p| {
            vec![
                field(p, "name"),
                field(p, "version"),
                p.get("source")
                    .map(|s| field(s, "kind"))
                    .unwrap_or_else(|| "-".into()),
                p.get("wasmSize")
                    .and_then(Value::as_u64)
                    .map(bytes)
                    .unwrap_or_else(|| "-".into()),
                field(p, "description"),
            ]
        },
    )
}

/// One plugin version.
pub fn plugin(p: &Value) -> String {
    let mut out = String::new();
    let lines = [
        ("name", field(p, "name")),
        ("version", field(p, "version")),
        ("description", field(p, "description")),
        ("sha256", field(p, "sha256")),
        (
            "size",
            p.get("wasmSize")
                .and_then(Value::as_u64)
                .map(bytes)
                .unwrap_or_else(|| "-".into()),
        ),
        ("source", text(p.get("source"))),
        ("limits", text(p.get("limits"))),
        ("input", text(p.get("inputSchema"))),
        ("output", text(p.get("outputSchema"))),
        ("created", field(p, "createdAt")),
    ];
    for (key, value) in lines {
        let _ = writeln!(out, "{:<12} {value}", format!("{key}:"));
    }
    out
}

fn bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    match n {
        n if n >= KIB * KIB => format!("{:.1} MiB", n as f64 / (KIB * KIB) as f64),
        n if n >= KIB => format!("{:.1} KiB", n as f64 / KIB as f64),
        n => format!("{n} B"),
    }
}

fn definition_state(d: &Value) -> String {
    let draft = d.get("isDraft").and_then(Value::as_bool).unwrap_or(false);
    let enabled = d.get("isEnabled").and_then(Value::as_bool).unwrap_or(false);
    match (draft, enabled) {
        (true, false) => "draft",
        (true, true) => "draft, enabled",
        (false, true) => "published, enabled",
        (false, false) => "published",
    }
    .to_string()
}

/// `GET /workflow-definitions`.
pub fn definitions(list: &Value) -> String {
    paged(list, &["ID", "NAME", "VERSION", "STATE", "STEPS"], |d| {
        vec![
            field(d, "id"),
            field(d, "name"),
            field(d, "version"),
            definition_state(d),
            d.get("steps")
                .and_then(Value::as_array)
                .map(|s| s.len().to_string())
                .unwrap_or_else(|| "-".into()),
        ]
    })
}

/// One definition: its record and its steps.
pub fn definition(d: &Value) -> String {
    let mut out = String::new();
    for (key, value) in [
        ("id", field(d, "id")),
        ("name", field(d, "name")),
        ("version", field(d, "version")),
        ("state", definition_state(d)),
        ("description", field(d, "description")),
        ("updated", field(d, "updatedAt")),
    ] {
        let _ = writeln!(out, "{:<12} {value}", format!("{key}:"));
    }
    let steps = d
        .get("steps")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !steps.is_empty() {
        out.push_str("steps:\n");
        let rows: Vec<Vec<String>> = steps
            .iter()
            .map(|s| {
                vec![
                    format!("  {}", field(s, "stepDefinitionId")),
                    field(s, "type"),
                    s.get("taskConfig")
                        .map(|t| field(t, "taskDefinitionId"))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&table(&["  STEP", "TYPE", "TASK"], &rows));
    }
    out
}

/// `GET /workflow-instances`.
pub fn runs(list: &Value) -> String {
    paged(
        list,
        &[
            "ID",
            "DEFINITION",
            "VERSION",
            "STATUS",
            "CREATED",
            "DURATION",
        ],
        |r| {
            vec![
                field(r, "id"),
                field(r, "definitionName"),
                field(r, "definitionVersion"),
                field(r, "status"),
                field(r, "createdAt"),
                run_duration(r).unwrap_or_else(|| "-".into()),
            ]
        },
    )
}

fn time(value: Option<&Value>) -> Option<DateTime<Utc>> {
    value
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn millis(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    duration_ms((to - from).num_microseconds().unwrap_or(0) as f64 / 1000.0)
}

/// `12 ms`, `1.25 s`, `2 min 5 s`.
pub fn duration_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{} ms", ms.round() as i64)
    } else if ms < 60_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        let secs = (ms / 1000.0).round() as i64;
        format!("{} min {} s", secs / 60, secs % 60)
    }
}

fn run_duration(run: &Value) -> Option<String> {
    let start = time(run.get("startedAt")).or_else(|| time(run.get("createdAt")))?;
    let end = time(run.get("completedAt"))?;
    Some(millis(start, end))
}

/// One run.
pub fn run(r: &Value) -> String {
    let mut out = String::new();
    let definition = format!(
        "{} {} ({})",
        field(r, "definitionName"),
        field(r, "definitionVersion"),
        field(r, "workflowDefinitionId")
    );
    let mut lines = vec![
        ("id", field(r, "id")),
        ("definition", definition),
        ("status", field(r, "status")),
        ("created", field(r, "createdAt")),
        ("started", field(r, "startedAt")),
        ("completed", field(r, "completedAt")),
    ];
    if let Some(duration) = run_duration(r) {
        lines.push(("duration", duration));
    }
    if !r.get("parentRunId").is_none_or(Value::is_null) {
        lines.push(("parent", field(r, "parentRunId")));
    }
    lines.push(("input", text(r.get("input"))));
    lines.push(("output", text(r.get("output"))));
    if !r.get("error").is_none_or(Value::is_null) {
        lines.push(("error", text(r.get("error"))));
    }
    for (key, value) in lines {
        let _ = writeln!(out, "{:<11} {value}", format!("{key}:"));
    }
    out
}

/// `GET /workflow-instances/{id}/steps`.
pub fn steps(list: &Value) -> String {
    paged(
        list,
        &[
            "STEP",
            "STATUS",
            "ATTEMPT",
            "RUNNER",
            "DURATION",
            "OUTPUT/ERROR",
        ],
        |s| {
            let duration = match (time(s.get("startedAt")), time(s.get("completedAt"))) {
                (Some(a), Some(b)) => millis(a, b),
                _ => "-".into(),
            };
            let result = if s.get("error").is_none_or(Value::is_null) {
                text(s.get("output"))
            } else {
                error_line(s.get("error"))
            };
            vec![
                field(s, "stepId"),
                field(s, "status"),
                field(s, "attempt"),
                field(s, "runner"),
                duration,
                truncate(&result, 80),
            ]
        },
    )
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// `code: message` of an error object, or its JSON.
fn error_line(error: Option<&Value>) -> String {
    match error {
        Some(e @ Value::Object(_)) => {
            let code = e.get("code").and_then(Value::as_str);
            let message = e.get("message").and_then(Value::as_str);
            match (code, message) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (None, Some(m)) => m.to_string(),
                _ => e.to_string(),
            }
        }
        other => text(other),
    }
}

/// `GET /agents`.
pub fn agents(list: &Value) -> String {
    paged(
        list,
        &[
            "ID",
            "NAME",
            "VERSION",
            "IN FLIGHT",
            "CAPACITY",
            "LAST SEEN",
            "TASKS",
        ],
        |a| {
            let tasks: Vec<String> = a
                .get("tasks")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|t| format!("{}@{}", field(t, "name"), field(t, "version")))
                .collect();
            vec![
                field(a, "id"),
                field(a, "name"),
                field(a, "version"),
                field(a, "inFlight"),
                field(a, "capacity"),
                field(a, "lastSeen"),
                tasks.join(","),
            ]
        },
    )
}

/// A signal's acknowledgement.
pub fn signal(s: &Value) -> String {
    format!(
        "signal {} sent to run {} ({})\n",
        field(s, "name"),
        field(s, "runId"),
        field(s, "id")
    )
}

/// Turns a run's events into one line per transition, remembering when each step started so
/// that its end shows how long it took.
#[derive(Debug, Default)]
pub struct EventPrinter {
    started: HashMap<String, DateTime<Utc>>,
}

impl EventPrinter {
    /// A printer with nothing seen yet.
    pub fn new() -> EventPrinter {
        EventPrinter::default()
    }

    /// The line for one `event` message, if it deserves one.
    pub fn line(&mut self, event: &Value) -> Option<String> {
        let kind = event.get("kind").and_then(Value::as_str)?;
        let data = event.get("data").cloned().unwrap_or(Value::Null);
        let at = time(event.get("createdAt"));
        let step = event.get("stepId").and_then(Value::as_str);
        let attempt = data.get("attempt").and_then(Value::as_u64);
        let runner = data.get("runner").and_then(Value::as_str);
        let Some(step) = step else {
            return run_line(kind, event, &data);
        };
        let what = match kind {
            "step.ready" => {
                if let Some(at) = at {
                    self.started.entry(step.to_string()).or_insert(at);
                }
                "ready".to_string()
            }
            "step.started" => {
                if let Some(at) = at {
                    self.started.insert(step.to_string(), at);
                }
                let details: Vec<String> = [
                    attempt.map(|a| format!("attempt {a}")),
                    runner.map(str::to_string),
                ]
                .into_iter()
                .flatten()
                .collect();
                if details.is_empty() {
                    "started".to_string()
                } else {
                    format!("started ({})", details.join(", "))
                }
            }
            "step.waiting" => match data.get("wait") {
                Some(wait) => format!("waiting ({})", wait_text(wait)),
                None => "waiting".to_string(),
            },
            "step.retrying" => {
                let mut line = format!(
                    "retrying: attempt {} failed: {}",
                    attempt.map(|a| a.to_string()).unwrap_or_else(|| "?".into()),
                    error_line(data.get("error"))
                );
                if let Some(at) = data.get("retryAt").and_then(Value::as_str) {
                    let _ = write!(line, " (next at {at})");
                }
                line
            }
            "step.completed" => {
                let took = data
                    .get("durationMs")
                    .and_then(Value::as_f64)
                    .map(duration_ms)
                    .or_else(|| {
                        let start = self.started.get(step)?;
                        Some(millis(*start, at?))
                    });
                self.started.remove(step);
                let mut line = "completed".to_string();
                if let Some(took) = took {
                    let _ = write!(line, " {took}");
                }
                if let Some(runner) = runner {
                    let _ = write!(line, " ({runner})");
                }
                line
            }
            "step.failed" => {
                self.started.remove(step);
                format!(
                    "failed{}: {}",
                    attempt
                        .map(|a| format!(" (attempt {a})"))
                        .unwrap_or_default(),
                    error_line(data.get("error"))
                )
            }
            "step.cancelled" => "cancelled".to_string(),
            "signal.received" => format!("signal {} received", text(data.get("name"))),
            other => other.strip_prefix("step.").unwrap_or(other).to_string(),
        };
        Some(format!("  {step:<16} {what}"))
    }
}

fn wait_text(wait: &Value) -> String {
    if let Some(signal) = wait.get("signal").and_then(Value::as_str) {
        return format!("signal {signal}");
    }
    if let Some(at) = wait.get("wakeAt").and_then(Value::as_str) {
        return format!("until {at}");
    }
    if let Some(child) = wait.get("childRunId").and_then(Value::as_str) {
        return format!("child run {child}");
    }
    text(Some(wait))
}

fn run_line(kind: &str, event: &Value, data: &Value) -> Option<String> {
    let run = field(event, "runId");
    Some(match kind {
        "run.created" => format!(
            "run {run} created ({} {})",
            field(data, "definitionName"),
            field(data, "definitionVersion")
        ),
        "run.started" => format!("run {run} started"),
        "run.completed" => format!("run {run} completed"),
        "run.failed" => format!("run {run} failed: {}", error_line(data.get("error"))),
        "run.cancelled" => format!("run {run} cancelled"),
        "run.retried" => format!("run {run} retried"),
        "signal.received" => format!("  signal {} received", text(data.get("name"))),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(seq: i64, step: Option<&str>, kind: &str, data: Value, at: &str) -> Value {
        json!({"type": "event", "seq": seq, "runId": "r", "definitionId": "d", "stepId": step,
               "kind": kind, "data": data, "createdAt": at})
    }

    #[test]
    fn a_step_prints_one_line_per_transition_with_its_duration() {
        let mut printer = EventPrinter::new();
        let lines: Vec<Option<String>> = [
            event(
                1,
                None,
                "run.created",
                json!({"definitionName": "chain", "definitionVersion": "1.0.0"}),
                "2026-01-01T00:00:00Z",
            ),
            event(
                2,
                Some("add-one"),
                "step.ready",
                json!({}),
                "2026-01-01T00:00:00.000Z",
            ),
            event(
                3,
                Some("add-one"),
                "step.started",
                json!({"attempt": 1, "runner": "wasm"}),
                "2026-01-01T00:00:00.010Z",
            ),
            event(
                4,
                Some("add-one"),
                "step.completed",
                json!({"attempt": 1, "runner": "wasm"}),
                "2026-01-01T00:00:00.022Z",
            ),
            event(
                5,
                Some("pause"),
                "step.waiting",
                json!({"wait": {"signal": "approved", "timeoutAt": null}}),
                "2026-01-01T00:00:00.030Z",
            ),
            event(
                5,
                Some("hash"),
                "step.failed",
                json!({"attempt": 3, "error": {"code": "boom", "message": "it broke"}}),
                "2026-01-01T00:00:01Z",
            ),
            event(
                6,
                None,
                "run.failed",
                json!({"error": {"code": "boom", "message": "it broke"}}),
                "2026-01-01T00:00:01Z",
            ),
        ]
        .iter()
        .map(|e| printer.line(e))
        .collect();
        let lines: Vec<String> = lines.into_iter().flatten().collect();
        assert_eq!(
            lines,
            [
                "run r created (chain 1.0.0)",
                "  add-one          ready",
                "  add-one          started (attempt 1, wasm)",
                "  add-one          completed 12 ms (wasm)",
                "  pause            waiting (signal approved)",
                "  hash             failed (attempt 3): boom: it broke",
                "run r failed: boom: it broke",
            ]
        );
    }

    #[test]
    fn tables_pad_columns_and_note_more_pages() {
        let list = json!({"items": [
            {"id": "1", "name": "a", "version": "1.0.0", "isDraft": true, "isEnabled": false,
             "steps": [{}]},
            {"id": "2", "name": "long-name", "version": "1.0.1", "isDraft": false,
             "isEnabled": true, "steps": [{}, {}]}
        ], "totalCount": 5, "offset": 0});
        assert_eq!(
            definitions(&list),
            "ID  NAME       VERSION  STATE               STEPS\n\
             1   a          1.0.0    draft               1\n\
             2   long-name  1.0.1    published, enabled  2\n\
             (1-2 of 5; --offset to see more)\n"
        );
        assert_eq!(runs(&json!({"items": []})), "(none)\n");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration_ms(12.4), "12 ms");
        assert_eq!(duration_ms(1250.0), "1.25 s");
        assert_eq!(duration_ms(125_000.0), "2 min 5 s");
    }
}
