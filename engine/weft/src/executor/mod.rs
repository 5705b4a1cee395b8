//! The executor: claims ready steps from the store, runs them (task steps through a
//! [`runner::Runner`], fork/join/wait/decision/workflow inside the engine), and records each
//! outcome with its consequences in one transaction ([`plan`]).
//!
//! Ownership: [`Executor`] is a handle; the dispatcher task, the lease keeper and the step tasks
//! it spawns are the only writers of step state on this replica. In-flight steps are tracked by
//! [`InFlight`] (one owner, a lock inside). A step is claimed under a lease that the lease keeper
//! renews while it runs; a replica that dies loses its leases and other replicas (or this one,
//! restarted) run those steps again as a new attempt.
//!
//! Wake-ups: a transition that makes steps ready notifies the dispatcher at once (no polling
//! delay on one replica); timers and other replicas' work are found by polling `next_due_at`.

pub mod plan;
mod record;
pub mod runner;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use weft_domain::DefinitionSpec;
use weft_store::{Backend, RunStatus, Store, StoreError};

use runner::Runner;

use crate::metrics::{Metrics, Tally};
use crate::traces::Traces;

/// Executor settings.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Steps running at once on this replica.
    pub max_concurrent_steps: usize,
    /// How long a claim lasts without renewal.
    pub lease: Duration,
    /// Longest sleep between looks at the store for due work (timers, other replicas).
    pub poll_interval: Duration,
    /// Deepest sub-workflow nesting.
    pub max_depth: u32,
    /// How long a task step waits for a runner (plugin or agent) to provide its task.
    pub schedule_timeout: Duration,
    /// Also woken after each commit (the live event feed), if set.
    pub on_commit: Option<Arc<Notify>>,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        Self {
            max_concurrent_steps: 64,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            max_depth: 8,
            schedule_timeout: Duration::from_secs(30),
            on_commit: None,
        }
    }
}

/// Steps running on this replica, with the token that cancels each. One owner, lock inside.
#[derive(Default)]
pub struct InFlight {
    steps: Mutex<HashMap<Uuid, (Uuid, CancellationToken)>>,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, (Uuid, CancellationToken)>> {
        self.steps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn insert(&self, step_row: Uuid, run_id: Uuid) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().insert(step_row, (run_id, token.clone()));
        token
    }

    fn remove(&self, step_row: Uuid) {
        self.lock().remove(&step_row);
    }

    /// Cancel the in-flight steps of `run_id`.
    pub fn cancel_run(&self, run_id: Uuid) {
        for (run, token) in self.lock().values() {
            if *run == run_id {
                token.cancel();
            }
        }
    }

    fn cancel_steps(&self, ids: &[Uuid]) {
        let steps = self.lock();
        for id in ids {
            if let Some((_, token)) = steps.get(id) {
                token.cancel();
            }
        }
    }

    fn ids(&self) -> Vec<Uuid> {
        self.lock().keys().copied().collect()
    }

    fn cancel_all(&self) {
        for (_, token) in self.lock().values() {
            token.cancel();
        }
    }
}

/// Bytes of schema text whose compiled schemas [`DefinitionCache`] keeps.
const SCHEMA_CACHE_BYTES: u64 = 8 << 20;

/// Published definitions are immutable: cache their parsed specs, and the compiled JSON
/// Schemas of their input parameters.
#[derive(Clone)]
pub struct DefinitionCache {
    store: Arc<dyn Store>,
    cache: moka::future::Cache<Uuid, Arc<DefinitionSpec>>,
    /// Compiled schemas by their JSON text (the same schema in several definitions, or
    /// versions, is compiled once).
    schemas: moka::sync::Cache<String, Arc<jsonschema::Validator>>,
}

impl DefinitionCache {
    /// A bounded cache over the store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            cache: moka::future::Cache::new(1024),
            // Weighed by schema size (a compiled schema takes a few times its text).
            schemas: moka::sync::Cache::builder()
                .weigher(|key: &String, _| u32::try_from(key.len()).unwrap_or(u32::MAX))
                .max_capacity(SCHEMA_CACHE_BYTES)
                .build(),
        }
    }

    /// `schema` compiled (once; later calls get the same validator), or why it does not compile.
    pub fn schema(&self, schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
        self.schemas
            .try_get_with(schema.to_string(), || {
                jsonschema::validator_for(schema)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| e.as_ref().clone())
    }

    /// The spec of definition `id`.
    pub async fn get(&self, id: Uuid) -> Result<Arc<DefinitionSpec>, ExecutorError> {
        if let Some(spec) = self.cache.get(&id).await {
            return Ok(spec);
        }
        let record = self
            .store
            .get_definition(id)
            .await?
            .ok_or(ExecutorError::DefinitionMissing(id))?;
        let spec = DefinitionSpec::from_json(record.spec)
            .map_err(|_| ExecutorError::DefinitionMissing(id))?;
        let spec = Arc::new(spec);
        if !record.is_draft {
            self.cache.insert(id, spec.clone()).await;
        }
        Ok(spec)
    }
}

/// Why the executor could not record something.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transaction that carried this outcome with others failed.
    #[error("recording failed: {0}")]
    Batch(String),
    /// A run's definition is gone.
    #[error("definition {0} is missing or invalid")]
    DefinitionMissing(Uuid),
}

struct Shared {
    store: Arc<dyn Store>,
    runners: Vec<Arc<dyn Runner>>,
    definitions: DefinitionCache,
    options: ExecutorOptions,
    owner: String,
    wake: Notify,
    /// Whether the dispatcher's last look may have left due steps unclaimed (it had no free
    /// slot, its claim failed, or it filled every slot it had): then a transition that fills
    /// its own claim wakes it. Only latency depends on it: the dispatcher also looks at every
    /// poll interval.
    /// Without a backlog a transition that claims its runs' every ready step leaves nothing
    /// behind, and the dispatcher is not woken for nothing (a claim and a look at the next due
    /// time, per step of a lone run).
    backlog: AtomicBool,
    /// Wakes the admission of held runs (`maxConcurrentRuns`).
    admission: Notify,
    in_flight: InFlight,
    slots: Arc<Semaphore>,
    metrics: Metrics,
    traces: Traces,
    /// Outcomes waiting to be recorded (of any runs), and the turn to record them.
    batches: record::Batches,
    /// Cancelled when the dispatcher stops: no step is claimed after it.
    stopping: CancellationToken,
    /// Steps claimed by a transition beyond the one its task goes on with: the dispatcher
    /// spawns them.
    handoff: mpsc::UnboundedSender<worker::Job>,
    handoff_rx: Mutex<Option<mpsc::UnboundedReceiver<worker::Job>>>,
}

/// A handle on the executor. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    shared: Arc<Shared>,
}

impl Executor {
    /// Build the executor (nothing runs until [`Executor::start`]).
    pub fn new(
        store: Arc<dyn Store>,
        runners: Vec<Arc<dyn Runner>>,
        definitions: DefinitionCache,
        options: ExecutorOptions,
        metrics: Metrics,
        traces: Traces,
    ) -> Executor {
        let owner = format!("weft-{}-{}", std::process::id(), Uuid::new_v4().simple());
        let slots = Arc::new(Semaphore::new(options.max_concurrent_steps.max(1)));
        let (handoff, handoff_rx) = mpsc::unbounded_channel();
        Executor {
            shared: Arc::new(Shared {
                store,
                runners,
                definitions,
                options,
                owner,
                wake: Notify::new(),
                backlog: AtomicBool::new(false),
                admission: Notify::new(),
                in_flight: InFlight::default(),
                slots,
                metrics,
                traces,
                batches: record::Batches::default(),
                stopping: CancellationToken::new(),
                handoff,
                handoff_rx: Mutex::new(Some(handoff_rx)),
            }),
        }
    }

    /// Start the dispatcher and the lease keeper on `tasks`; both stop on `shutdown`, after
    /// which in-flight steps get the shutdown bound to finish and the rest are released.
    pub async fn start(
        &self,
        tasks: &mut JoinSet<()>,
        shutdown: CancellationToken,
    ) -> Result<(), StoreError> {
        if self.shared.store.backend() == Backend::Sqlite {
            // One process owns an SQLite file: whatever was executing was interrupted.
            let reset = self.shared.store.reset_executing().await?;
            if reset > 0 {
                tracing::info!(
                    steps = reset,
                    "steps interrupted by the last stop will run again"
                );
            }
        }
        tasks.spawn(self.clone().dispatch(shutdown.clone()));
        tasks.spawn(self.clone().keep_leases(shutdown.clone()));
        tasks.spawn(self.clone().admit(shutdown));
        Ok(())
    }

    /// Wake the admission of held runs: a capped run was started, or a run ended.
    pub fn notify_admission(&self) {
        self.shared.admission.notify_one();
    }

    /// Admit held runs (a definition's `maxConcurrentRuns`) when woken, and every poll interval
    /// (runs ended on other replicas, admissions interrupted by a crash), until `shutdown`.
    async fn admit(self, shutdown: CancellationToken) {
        let mut unreadable = HashSet::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.shared.admission.notified() => {}
                () = tokio::time::sleep(self.shared.options.poll_interval) => {}
            }
            if let Err(e) = self.admit_held(&mut unreadable).await {
                tracing::warn!(error = %e, "cannot admit held runs; retrying");
            }
        }
    }

    /// One admission pass over every definition with held runs. `unreadable`: the definitions
    /// already reported as unreadable (reported once, not at every pass).
    async fn admit_held(&self, unreadable: &mut HashSet<Uuid>) -> Result<(), ExecutorError> {
        let store = &self.shared.store;
        for definition_id in store.held_run_definitions().await? {
            // One definition that cannot be read (deleted meanwhile, say) does not hold up the
            // others' runs.
            let spec = match self.shared.definitions.get(definition_id).await {
                Ok(spec) => {
                    unreadable.remove(&definition_id);
                    spec
                }
                Err(e) => {
                    if unreadable.insert(definition_id) {
                        tracing::warn!(%definition_id, error = %e, "cannot admit the held runs of a definition");
                    }
                    continue;
                }
            };
            let Some(entry) = spec.entry_step() else {
                continue;
            };
            let admitted = match store
                .admit_runs(
                    definition_id,
                    spec.max_concurrent_runs,
                    &entry.step_definition_id,
                    // From the admission: a held run's time waiting does not count.
                    spec.timeout_seconds
                        .map(|s| Duration::from_secs(s.min(plan::MAX_DELAY_SECONDS as u64))),
                )
                .await
            {
                Ok(admitted) => admitted,
                Err(e) => {
                    tracing::warn!(%definition_id, error = %e, "cannot admit the held runs of a definition");
                    continue;
                }
            };
            for run_id in &admitted {
                tracing::info!(run_id = %run_id, %definition_id, "held run admitted");
            }
            if !admitted.is_empty() {
                self.notify();
            }
        }
        Ok(())
    }

    /// Wake the dispatcher: new work may be ready. Also [`Executor::notify_commit`].
    pub fn notify(&self) {
        self.shared.wake.notify_one();
        self.notify_commit();
    }

    /// Something was committed (the live event feed reads it).
    fn notify_commit(&self) {
        if let Some(on_commit) = &self.shared.options.on_commit {
            on_commit.notify_one();
        }
    }

    /// Interrupt the steps of `run_id` running on this replica.
    pub fn interrupt_run(&self, run_id: Uuid) {
        self.shared.in_flight.cancel_run(run_id);
    }

    /// This replica's lease owner id.
    pub fn owner(&self) -> &str {
        &self.shared.owner
    }

    /// The definition cache.
    pub fn definitions(&self) -> &DefinitionCache {
        &self.shared.definitions
    }

    /// The application's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Cancel run `id` (unless it already ended) and every unfinished run below it. With
    /// `include_root = false` only the descendants are cancelled (the root ended by itself).
    pub async fn cancel_tree(
        &self,
        id: Uuid,
        reason: &str,
        include_root: bool,
    ) -> Result<(), ExecutorError> {
        let store = &self.shared.store;
        let mut pending = vec![id];
        while let Some(run_id) = pending.pop() {
            if run_id != id || include_root {
                // Read the definition before locking the run: nothing else is awaited under it.
                let Some(current) = store.get_run(run_id).await? else {
                    continue;
                };
                let spec = self.shared.definitions.get(current.definition_id).await?;
                let mut tx = store.begin_run(run_id).await?;
                let run = tx.run().clone();
                if run.status.is_terminal() {
                    tx.rollback().await?;
                } else {
                    let steps = tx.steps().await?;
                    let view = plan::RunView {
                        spec: &spec,
                        run: &run,
                        steps: &steps,
                    };
                    let mut changes = plan::cancel_run(&view, reason);
                    // A cancelled child's parent is being cancelled too: don't wake it.
                    if run_id != id {
                        changes.wake.clear();
                    }
                    let tally = Tally::of(&run.definition_name, &changes, &steps);
                    tx.apply(changes).await?;
                    self.shared.metrics.record(tally);
                    self.shared.traces.run_ended(&run, RunStatus::Cancelled);
                    self.interrupt_run(run_id);
                    tracing::info!(run_id = %run_id, reason, "run cancelled");
                }
            }
            let children = store
                .list_runs(&weft_store::RunQuery {
                    parent_run_id: Some(run_id),
                    limit: 1000,
                    ..Default::default()
                })
                .await?;
            pending.extend(
                children
                    .items
                    .iter()
                    .filter(|c| !c.status.is_terminal())
                    .map(|c| c.id),
            );
        }
        self.notify();
        Ok(())
    }

    /// Run `job` and then, in the same task, the first step its transition claimed (and so
    /// on); further claimed steps go to the dispatcher to be spawned.
    async fn run_chain(self, job: worker::Job) {
        let mut next = Some(job);
        while let Some(job) = next.take() {
            let id = job.claimed.step.id;
            let mut claimed = worker::execute(&self, job).await;
            // The next step needs its run read: read those of all (the dispatcher reads the
            // others' otherwise, all it was handed at once).
            if claimed.first().is_some_and(|j| j.context.is_none()) {
                worker::with_contexts(&self, &mut claimed).await;
            }
            let mut claimed = claimed.into_iter();
            self.shared.in_flight.remove(id);
            next = claimed.next();
            for job in claimed {
                if let Err(mpsc::error::SendError(job)) = self.shared.handoff.send(job) {
                    // The dispatcher is gone: the claim is released with the others.
                    self.shared.in_flight.remove(job.claimed.step.id);
                }
            }
        }
        // A slot is free: the dispatcher may have ready work waiting for one.
        self.shared.wake.notify_one();
    }

    fn spawn_job(&self, steps: &mut JoinSet<()>, job: worker::Job) {
        steps.spawn(self.clone().run_chain(job));
    }

    async fn dispatch(self, shutdown: CancellationToken) {
        let shared = &self.shared;
        let mut steps = JoinSet::new();
        let Some(mut handoff) = shared
            .handoff_rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        else {
            tracing::error!("the executor was started twice");
            return;
        };
        tracing::info!(owner = %shared.owner, "executor started");
        let mut handed = Vec::new();
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            // Reap finished step tasks, spawn handed-over steps (their runs read at once).
            while steps.try_join_next().is_some() {}
            while let Ok(job) = handoff.try_recv() {
                handed.push(job);
            }
            if !handed.is_empty() {
                worker::with_contexts(&self, &mut handed).await;
                for job in handed.drain(..) {
                    self.spawn_job(&mut steps, job);
                }
            }
            // The slots first, then the claim: a step claimed is a step with a slot to run in
            // (recording transactions take free slots concurrently).
            let mut permits = Vec::new();
            while permits.len() < 256 {
                match shared.slots.clone().try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            let mut claimed_full = false;
            // No free slot, or a failed claim: whatever is due waits, unclaimed.
            let mut backlog = permits.is_empty();
            if !permits.is_empty() {
                let limit = u32::try_from(permits.len()).unwrap_or(256);
                match shared
                    .store
                    .claim_steps(&shared.owner, shared.options.lease, limit)
                    .await
                {
                    Ok(claimed) => {
                        claimed_full = claimed.len() as u32 == limit;
                        // Slots left over go back as `permits` drops.
                        let mut jobs: Vec<worker::Job> = claimed
                            .into_iter()
                            .zip(permits.drain(..))
                            .map(|(step, permit)| worker::Job {
                                cancel: shared.in_flight.insert(step.step.id, step.step.run_id),
                                claimed: step,
                                permit,
                                context: None,
                            })
                            .collect();
                        worker::with_contexts(&self, &mut jobs).await;
                        for job in jobs {
                            self.spawn_job(&mut steps, job);
                        }
                    }
                    Err(e) => {
                        backlog = true;
                        tracing::warn!(error = %e, "claiming steps failed; retrying");
                    }
                }
            }
            shared
                .backlog
                .store(backlog || claimed_full, Ordering::Relaxed);
            drop(permits);
            if claimed_full && shared.slots.available_permits() > 0 {
                continue;
            }
            // No free slot: nothing due could be claimed anyway, and a look at the next due
            // time would find the waiting work due and spin. Transitions claim the oldest due
            // steps with the slots they free; a step task that ends frees its slot here (the
            // select below hears it); the poll interval bounds the rest.
            let saturated = shared.slots.available_permits() == 0;
            let next_due = if saturated {
                Ok(None)
            } else {
                shared.store.next_due_at().await
            };
            let sleep = match next_due {
                Ok(Some(due)) => {
                    let wait = (due - chrono::Utc::now())
                        .to_std()
                        .unwrap_or(Duration::ZERO);
                    wait.min(shared.options.poll_interval)
                }
                _ => shared.options.poll_interval,
            };
            if sleep.is_zero() && shared.slots.available_permits() > 0 {
                // Due work that another replica holds (or that we just failed to claim): don't spin.
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = shared.wake.notified() => {}
                    Some(job) = handoff.recv() => handed.push(job),
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = shared.wake.notified() => {}
                Some(job) = handoff.recv() => handed.push(job),
                () = tokio::time::sleep(sleep) => {}
                Some(_) = steps.join_next(), if !steps.is_empty() => {}
            }
        }
        // Shutdown: claim nothing more; let in-flight steps finish within the bound, then
        // interrupt and release. Steps claimed but not started are released with the rest.
        shared.stopping.cancel();
        tracing::info!(in_flight = steps.len(), "executor stopping");
        let finished = tokio::time::timeout(Duration::from_secs(5), async {
            while steps.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            shared.in_flight.cancel_all();
            steps.abort_all();
            while steps.join_next().await.is_some() {}
        }
        handoff.close();
        while let Ok(job) = handoff.try_recv() {
            handed.push(job);
        }
        for job in handed {
            shared.in_flight.remove(job.claimed.step.id);
        }
        match shared.store.release_leases(&shared.owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(steps = n, "released unfinished steps"),
            Err(e) => tracing::warn!(error = %e, "could not release leases; they will expire"),
        }
        tracing::info!("executor stopped");
    }

    async fn keep_leases(self, shutdown: CancellationToken) {
        let shared = &self.shared;
        let every = shared.options.lease / 3;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let ids = shared.in_flight.ids();
            if ids.is_empty() {
                continue;
            }
            match shared
                .store
                .renew_leases(&shared.owner, &ids, shared.options.lease)
                .await
            {
                Ok(lost) if !lost.is_empty() => {
                    tracing::warn!(steps = lost.len(), "leases lost; interrupting those steps");
                    shared.in_flight.cancel_steps(&lost);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "renewing leases failed"),
            }
        }
    }
}
