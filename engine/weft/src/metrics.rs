//! Prometheus metrics: one [`Metrics`] per application owns its registry (never a global one:
//! tests run many servers in one process) and typed handles on every series, all prefixed
//! `weft_`. `GET /metrics` renders them in the OpenMetrics text format ([`Metrics::render`]).
//!
//! Series (see the README for the full list):
//! - `weft_runs_total{definition,status}`: runs reaching `started`, `completed`, `failed`,
//!   `cancelled`, `retried`;
//! - `weft_steps_total{definition,status,runner}`: step rows reaching `completed`, `failed`,
//!   `cancelled`, and failed attempts that will be retried (`retrying`);
//! - `weft_step_duration_seconds{runner}`: time of one attempt, from claim to outcome;
//! - `weft_queue_depth`, `weft_oldest_ready_step_age_seconds`: read from the store at scrape time;
//! - `weft_wasm_fuel_consumed{plugin}`, `weft_wasm_memory_peak_bytes{plugin}`: per invocation;
//! - `weft_plugin_cache_hits_total{cache}`, `weft_plugin_cache_misses_total{cache}`,
//!   `weft_plugin_compiles_total`, `weft_wasm_invocations_total`: the runtime's counters;
//! - `weft_agents_connected`, `weft_websocket_clients`: gauges;
//! - `weft_http_requests_total{method,status}`.
//!
//! Recording is a few atomic operations (label sets of families take a short read lock): callers
//! record after their transaction committed, never while holding a lock of their own.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use weft_store::{QueueStats, RunChanges, RunStatus, StepPhase, StepRecord};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    definition: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    definition: String,
    status: &'static str,
    runner: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunnerLabels {
    runner: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    status: u16,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        300.0,
    ])
}

/// 1e3 to 1e11 instructions.
fn fuel_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e3, 10.0, 9))
}

/// 64 KiB (one Wasm page) to 4 GiB.
fn memory_histogram() -> Histogram {
    Histogram::new(exponential_buckets(65_536.0, 4.0, 9))
}

/// The application's metrics. Cheap to clone; all clones share one registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    steps: Family<StepLabels, Counter>,
    step_duration: HistogramFamily<RunnerLabels>,
    queue_depth: Gauge,
    oldest_ready_age: Gauge<f64, AtomicU64>,
    wasm_fuel: HistogramFamily<PluginLabels>,
    wasm_memory: HistogramFamily<PluginLabels>,
    agents_connected: Gauge,
    websocket_clients: Gauge,
    http_requests: Family<HttpLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh registry with every series registered; with `runtime`, its cache and compile
    /// counters are read at each scrape.
    pub fn new(runtime: Option<weft_runtime::Runtime>) -> Metrics {
        let mut registry = Registry::with_prefix("weft");
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "runs",
            "Runs reaching a status (started, completed, failed, cancelled, retried)",
            runs.clone(),
        );
        let steps = Family::<StepLabels, Counter>::default();
        registry.register(
            "steps",
            "Steps reaching a status (completed, failed, cancelled; retrying: a failed attempt \
             that will run again), by the runner of their last attempt",
            steps.clone(),
        );
        let step_duration: HistogramFamily<RunnerLabels> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "step_duration_seconds",
            "Duration of one step attempt, from its claim to its outcome, by runner (wasm, \
             agent, engine)",
            step_duration.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Steps ready to run that no executor has claimed yet",
            queue_depth.clone(),
        );
        let oldest_ready_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "oldest_ready_step_age_seconds",
            "How long the oldest ready, unclaimed step has been waiting (0: none)",
            oldest_ready_age.clone(),
        );
        let wasm_fuel: HistogramFamily<PluginLabels> = Family::new_with_constructor(fuel_histogram);
        registry.register(
            "wasm_fuel_consumed",
            "Fuel (about one unit per Wasm instruction) consumed by one plugin invocation",
            wasm_fuel.clone(),
        );
        let wasm_memory: HistogramFamily<PluginLabels> =
            Family::new_with_constructor(memory_histogram);
        registry.register(
            "wasm_memory_peak_bytes",
            "Peak linear memory of one plugin invocation, in bytes",
            wasm_memory.clone(),
        );
        let agents_connected = Gauge::default();
        registry.register(
            "agents_connected",
            "Remote agents connected to this server",
            agents_connected.clone(),
        );
        let websocket_clients = Gauge::default();
        registry.register(
            "websocket_clients",
            "WebSocket clients connected to this server",
            websocket_clients.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method and status code",
            http_requests.clone(),
        );
        if let Some(runtime) = runtime {
            registry.register_collector(Box::new(RuntimeCollector(runtime)));
        }
        Metrics {
            inner: Arc::new(Inner {
                registry,
                runs,
                steps,
                step_duration,
                queue_depth,
                oldest_ready_age,
                wasm_fuel,
                wasm_memory,
                agents_connected,
                websocket_clients,
                http_requests,
            }),
        }
    }

    /// A run of `definition` was created (top-level; child runs are counted by [`Tally`]).
    pub fn run_started(&self, definition: &str) {
        self.inner
            .runs
            .get_or_create(&RunLabels {
                definition: definition.to_string(),
                status: "started",
            })
            .inc();
    }

    /// What a committed transition did: count it.
    pub fn record(&self, tally: Tally) {
        for (definition, status) in tally.runs {
            self.inner
                .runs
                .get_or_create(&RunLabels { definition, status })
                .inc();
        }
        for (status, runner) in tally.steps {
            self.inner
                .steps
                .get_or_create(&StepLabels {
                    definition: tally.definition.clone(),
                    status,
                    runner,
                })
                .inc();
        }
    }

    /// One step attempt took `elapsed` on `runner`.
    pub fn step_attempt(&self, runner: &str, elapsed: Duration) {
        self.inner
            .step_duration
            .get_or_create(&RunnerLabels {
                runner: runner_label(Some(runner)),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A Wasm invocation of `plugin` used `fuel` and peaked at `memory_bytes`.
    pub fn wasm_invocation(&self, plugin: &str, fuel: Option<u64>, memory_bytes: u64) {
        let labels = PluginLabels {
            plugin: plugin.to_string(),
        };
        if let Some(fuel) = fuel {
            self.inner
                .wasm_fuel
                .get_or_create(&labels)
                .observe(fuel as f64);
        }
        self.inner
            .wasm_memory
            .get_or_create(&labels)
            .observe(memory_bytes as f64);
    }

    /// An agent connected.
    pub fn agent_connected(&self) {
        self.inner.agents_connected.inc();
    }

    /// An agent disconnected.
    pub fn agent_disconnected(&self) {
        self.inner.agents_connected.dec();
    }

    /// A WebSocket client connected; it counts until the guard is dropped.
    pub fn websocket_connected(&self) -> WebSocketGuard {
        self.inner.websocket_clients.inc();
        WebSocketGuard {
            gauge: self.inner.websocket_clients.clone(),
        }
    }

    /// An HTTP request was answered.
    pub fn http_request(&self, method: &http::Method, status: u16) {
        self.inner
            .http_requests
            .get_or_create(&HttpLabels {
                method: method_label(method),
                status,
            })
            .inc();
    }

    /// The exposition text, with the queue gauges set from `queue` (read just before) as of
    /// `now`. `None` leaves them as last set.
    pub fn render(&self, queue: Option<QueueStats>, now: DateTime<Utc>) -> String {
        if let Some(queue) = queue {
            self.inner
                .queue_depth
                .set(i64::try_from(queue.ready).unwrap_or(i64::MAX));
            let age = queue
                .oldest_ready_at
                .map(|at| (now - at).to_std().unwrap_or(Duration::ZERO).as_secs_f64())
                .unwrap_or(0.0);
            self.inner.oldest_ready_age.set(age);
        }
        let mut text = String::new();
        // Writing to a String cannot fail; encoders fail only on a broken writer.
        if encode(&mut text, &self.inner.registry).is_err() {
            tracing::error!("encoding metrics failed");
        }
        text
    }
}

/// Keeps one WebSocket client counted in `weft_websocket_clients` while it lives.
#[derive(Debug)]
pub struct WebSocketGuard {
    gauge: Gauge,
}

impl Drop for WebSocketGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// What one transition of a run did, taken from its [`RunChanges`] before they are applied and
/// recorded ([`Metrics::record`]) once they committed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    definition: String,
    /// `(definition, status)` of runs started or ended.
    runs: Vec<(String, &'static str)>,
    /// `(status, runner)` of this run's steps.
    steps: Vec<(&'static str, &'static str)>,
}

impl Tally {
    /// The transition `changes` of a run of `definition` whose steps are `steps` (as read in the
    /// transaction; used for the runner of steps cancelled without one).
    pub fn of(definition: &str, changes: &RunChanges, steps: &[StepRecord]) -> Tally {
        let mut tally = Tally {
            definition: definition.to_string(),
            ..Tally::default()
        };
        if let Some(update) = &changes.run {
            let status = match update.status {
                RunStatus::Completed => Some("completed"),
                RunStatus::Failed => Some("failed"),
                RunStatus::Cancelled => Some("cancelled"),
                // A retried run goes on (RUNNING), or is held again if it never started.
                RunStatus::Running | RunStatus::Pending => Some("retried"),
            };
            if let Some(status) = status {
                tally.runs.push((definition.to_string(), status));
            }
        }
        for child in &changes.new_runs {
            tally.runs.push((child.definition_name.clone(), "started"));
        }
        for update in &changes.step_updates {
            let status = match (update.phase, update.status) {
                (StepPhase::Done, RunStatus::Completed) => "completed",
                (StepPhase::Done, RunStatus::Failed) => "failed",
                (StepPhase::Done, RunStatus::Cancelled) => "cancelled",
                // A failed attempt scheduled to run again (unguarded: a run retried by request).
                (StepPhase::Queued, _) if update.guard.is_some() => "retrying",
                _ => continue,
            };
            let runner = update.runner.as_deref().or_else(|| {
                steps
                    .iter()
                    .find(|s| s.id == update.id)
                    .and_then(|s| s.runner.as_deref())
            });
            tally.steps.push((status, runner_label(runner)));
        }
        tally
    }
}

fn runner_label(runner: Option<&str>) -> &'static str {
    match runner {
        Some("wasm") => "wasm",
        Some("agent") => "agent",
        Some("engine") => "engine",
        Some(_) => "other",
        None => "none",
    }
}

fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The runtime's counters, read at each scrape.
struct RuntimeCollector(weft_runtime::Runtime);

impl std::fmt::Debug for RuntimeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RuntimeCollector")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
}

impl Collector for RuntimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        let labelled = |encoder: &mut DescriptorEncoder,
                        name: &str,
                        help: &str,
                        values: &[(&'static str, u64)]|
         -> Result<(), std::fmt::Error> {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (cache, value) in values {
                ConstCounter::new(*value).encode(family.encode_family(&CacheLabels { cache })?)?;
            }
            Ok(())
        };
        labelled(
            &mut encoder,
            "plugin_cache_hits",
            "Plugin loads served from a cache of compiled code (memory: the hot set; disk: \
             artifacts kept across restarts)",
            &[
                ("memory", stats.memory_cache_hits),
                ("disk", stats.disk_cache_hits),
            ],
        )?;
        labelled(
            &mut encoder,
            "plugin_cache_misses",
            "Plugin loads a cache could not serve (memory: went to disk or compiled; disk: \
             compiled)",
            &[
                ("memory", stats.disk_cache_hits + stats.compiles),
                ("disk", stats.compiles),
            ],
        )?;
        let plain = |encoder: &mut DescriptorEncoder,
                     name: &str,
                     help: &str,
                     value: u64|
         -> Result<(), std::fmt::Error> {
            ConstCounter::new(value).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)
        };
        plain(
            &mut encoder,
            "plugin_compiles",
            "Plugin components compiled by cranelift",
            stats.compiles,
        )?;
        plain(
            &mut encoder,
            "wasm_invocations",
            "Plugin invocations started",
            stats.invocations,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use serde_json::json;
    use uuid::Uuid;
    use weft_store::{LeaseGuard, NewRun, RunUpdate, StepStatus, StepUpdate};

    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    fn update(status: StepStatus, phase: StepPhase, runner: Option<&str>) -> StepUpdate {
        StepUpdate {
            id: Uuid::now_v7(),
            guard: Some(LeaseGuard {
                owner: "w".into(),
                attempt: 1,
            }),
            status,
            phase,
            input: None,
            output: None,
            error: None,
            runner: runner.map(str::to_string),
            due_at: None,
            wait: None,
            reset_attempt: None,
        }
    }

    #[test]
    fn websocket_guard_counts_while_alive() {
        let metrics = Metrics::new(None);
        let now = Utc::now();
        assert_eq!(
            value(&metrics.render(None, now), "weft_websocket_clients"),
            Some(0.0)
        );
        let first = metrics.websocket_connected();
        let second = metrics.websocket_connected();
        assert_eq!(
            value(&metrics.render(None, now), "weft_websocket_clients"),
            Some(2.0)
        );
        drop(first);
        assert_eq!(
            value(&metrics.render(None, now), "weft_websocket_clients"),
            Some(1.0)
        );
        drop(second);
        assert_eq!(
            value(&metrics.render(None, now), "weft_websocket_clients"),
            Some(0.0)
        );
    }

    #[test]
    fn tally_counts_run_and_step_outcomes() {
        let cancelled_row = StepRecord {
            id: Uuid::now_v7(),
            run_id: Uuid::now_v7(),
            step_id: "slow".into(),
            status: StepStatus::Running,
            phase: StepPhase::Executing,
            attempt: 1,
            input: None,
            output: None,
            error: None,
            runner: Some("agent".into()),
            lease_owner: Some("w".into()),
            due_at: None,
            wait: None,
            created_at: Utc::now(),
            started_at: None,
            completed_at: None,
            updated_at: Utc::now(),
        };
        let mut cancelled = update(StepStatus::Cancelled, StepPhase::Done, None);
        cancelled.id = cancelled_row.id;
        let mut retried_by_request = update(StepStatus::Pending, StepPhase::Queued, None);
        retried_by_request.guard = None;
        let changes = RunChanges {
            run: Some(RunUpdate {
                status: RunStatus::Failed,
                output: None,
                error: Some(json!({"code": "x"})),
            }),
            step_updates: vec![
                update(StepStatus::Completed, StepPhase::Done, Some("wasm")),
                update(StepStatus::Failed, StepPhase::Done, Some("engine")),
                update(StepStatus::Pending, StepPhase::Queued, Some("wasm")),
                update(StepStatus::Running, StepPhase::Waiting, Some("engine")),
                cancelled,
                retried_by_request,
            ],
            new_runs: vec![NewRun {
                id: Uuid::now_v7(),
                definition_id: Uuid::now_v7(),
                definition_name: "child".into(),
                definition_version: "1.0.0".into(),
                input: json!({}),
                idempotency_key: None,
                parent: None,
                depth: 1,
                deadline_at: None,
                initial_steps: Vec::new(),
            }],
            ..RunChanges::default()
        };
        let tally = Tally::of("orders", &changes, &[cancelled_row]);
        assert_eq!(
            tally.runs,
            vec![
                ("orders".to_string(), "failed"),
                ("child".to_string(), "started")
            ]
        );
        assert_eq!(
            tally.steps,
            vec![
                ("completed", "wasm"),
                ("failed", "engine"),
                ("retrying", "wasm"),
                ("cancelled", "agent"),
            ]
        );

        let metrics = Metrics::new(None);
        metrics.run_started("orders");
        metrics.record(tally);
        let text = metrics.render(None, Utc::now());
        for (series, expected) in [
            (
                r#"weft_runs_total{definition="orders",status="started"}"#,
                1.0,
            ),
            (
                r#"weft_runs_total{definition="orders",status="failed"}"#,
                1.0,
            ),
            (
                r#"weft_runs_total{definition="child",status="started"}"#,
                1.0,
            ),
            (
                r#"weft_steps_total{definition="orders",status="completed",runner="wasm"}"#,
                1.0,
            ),
            (
                r#"weft_steps_total{definition="orders",status="cancelled",runner="agent"}"#,
                1.0,
            ),
        ] {
            assert_eq!(value(&text, series), Some(expected), "{series} in\n{text}");
        }
    }

    #[test]
    fn render_sets_queue_gauges_and_histograms() {
        let metrics = Metrics::new(None);
        let now = Utc::now();
        let text = metrics.render(
            Some(QueueStats {
                ready: 3,
                oldest_ready_at: Some(now - TimeDelta::milliseconds(2500)),
            }),
            now,
        );
        assert_eq!(value(&text, "weft_queue_depth"), Some(3.0));
        assert_eq!(
            value(&text, "weft_oldest_ready_step_age_seconds"),
            Some(2.5)
        );
        let text = metrics.render(
            Some(QueueStats {
                ready: 0,
                oldest_ready_at: None,
            }),
            now,
        );
        assert_eq!(value(&text, "weft_queue_depth"), Some(0.0));
        assert_eq!(
            value(&text, "weft_oldest_ready_step_age_seconds"),
            Some(0.0)
        );

        metrics.step_attempt("wasm", Duration::from_millis(30));
        metrics.wasm_invocation("add", Some(12_345), 1 << 20);
        metrics.http_request(&http::Method::GET, 200);
        metrics.agent_connected();
        let text = metrics.render(None, now);
        assert_eq!(
            value(&text, r#"weft_step_duration_seconds_count{runner="wasm"}"#),
            Some(1.0)
        );
        assert_eq!(
            value(&text, r#"weft_wasm_fuel_consumed_sum{plugin="add"}"#),
            Some(12_345.0)
        );
        assert_eq!(
            value(&text, r#"weft_wasm_memory_peak_bytes_count{plugin="add"}"#),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                r#"weft_http_requests_total{method="GET",status="200"}"#
            ),
            Some(1.0)
        );
        assert_eq!(value(&text, "weft_agents_connected"), Some(1.0));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
