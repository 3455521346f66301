//! Telemetry in the binary: the listener thread answers each batch once it is queued, the
//! delivery thread runs the telemetry command for each batch in arrival order, and the runner
//! waits on the queue where the flush mode and SHUTDOWN ask it to.

use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::api::{LogType, TelemetryBuffering, TelemetrySchema, TelemetrySubscription};
use crate::client::{ClientError, InvocationClient, Subscribed};
use crate::command::{
    as_line, time_left, CommandFailure, CommandLine, Deadline, Executor, Input, Leftovers,
    LongLived, Slot, MANAGED_ENV,
};
use crate::config::{Flush, Initialization, Mode, SchemaChoice, TelemetryConfig};
use crate::telemetry::queue::{Batch, Queue};
use crate::telemetry::Listener;

/// How many bytes of batches may wait for the command: a slow command then slows Lambda's
/// deliveries down instead of growing the extension's memory.
pub const QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// How many batches may wait for the command: few enough that what has been answered 200 can
/// still be run through the command within SHUTDOWN's ~2 s (a burst of 2 000 small batches,
/// queued by bytes alone, left up to 366 undelivered at a 2 s deadline in `make bench`).
pub const QUEUE_BATCHES: usize = 16;
/// How long one run of the telemetry command may take before it is stopped.
const RUN_LIMIT: Duration = Duration::from_secs(30);
/// How long before `RUN_LIMIT` SIGTERM comes (SIGKILL at half of it).
const RUN_MARGIN: Duration = Duration::from_millis(1000);
/// At most one log line per this long about failing runs (an extension subscribed to its own
/// `extension` telemetry would otherwise feed itself).
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);
const RUN_HINT: &str = "a telemetry batch gets 30 s: make the telemetry command faster";
/// How long a persistent telemetry command gets to exit once its stdin has closed at SHUTDOWN
/// (the SHUTDOWN deadline, if sooner, kills it first).
const EXIT_LIMIT: Duration = Duration::from_secs(2);

/// The batch's item count, set for each run of the telemetry command.
const BATCH_ITEMS_ENV: &str = "LAMBDA_TELEMETRY_BATCH_ITEMS";

/// Why telemetry could not be set up: the message for `Extension.TelemetrySubscribeFailed`.
pub struct SetupFailed(pub String);

/// The running telemetry pipeline.
pub struct Telemetry {
    queue: Arc<Queue>,
    flush: Flush,
    /// Subscribed to `platform`, so each invocation ends with a `platform.report` to wait for.
    reports_expected: bool,
    /// Disconnected once the delivery thread has ended (after the queue is closed).
    delivery_ended: mpsc::Receiver<()>,
}

impl Telemetry {
    /// Binds the listener, starts the listener and delivery threads, and subscribes.
    pub fn start(
        client: &InvocationClient,
        config: &TelemetryConfig,
        initialization: Initialization,
    ) -> Result<Telemetry, SetupFailed> {
        let listener = Listener::bind().map_err(|error| {
            SetupFailed(format!(
                "cannot listen for telemetry on a local port: {error}"
            ))
        })?;
        let destination = listener.destination();
        let queue = Arc::new(Queue::new(QUEUE_BYTES, QUEUE_BATCHES));
        spawn_thread("telemetry-listener", {
            let queue = queue.clone();
            move || receive(listener, &queue)
        })?;
        let (ended, delivery_ended) = mpsc::channel();
        spawn_thread("telemetry-delivery", {
            let queue = queue.clone();
            let command = config.command.clone();
            let mode = config.mode;
            let name = client.extension_name().to_string();
            move || {
                deliver(command, mode, &name, &queue);
                drop(ended);
            }
        })?;
        let schema = match (config.schema, initialization) {
            (SchemaChoice::Auto, Initialization::ManagedInstances) => TelemetrySchema::V2025_01_29,
            (SchemaChoice::Auto, Initialization::Standard) => TelemetrySchema::V2022_12_13,
            (SchemaChoice::V2022_12_13, _) => TelemetrySchema::V2022_12_13,
            (SchemaChoice::V2025_01_29, _) => TelemetrySchema::V2025_01_29,
        };
        let subscription = |schema| {
            let mut subscription =
                TelemetrySubscription::new(schema, destination.clone(), config.types.clone());
            subscription.buffering = buffering(config);
            subscription
        };
        let mut answer = client.telemetry_register(&subscription(schema));
        let mut accepted = schema;
        if schema == TelemetrySchema::V2025_01_29 && is_bad_request(&answer) {
            // Some runtimes still refuse the newer schema.
            warn!(
                "telemetry: schema 2025-01-29 refused ({}); retrying with 2022-12-13",
                refusal(&answer)
            );
            accepted = TelemetrySchema::V2022_12_13;
            answer = client.telemetry_register(&subscription(accepted));
        }
        let types = config
            .types
            .iter()
            .map(|kind| kind.as_str())
            .collect::<Vec<_>>()
            .join(",");
        match answer {
            Ok(Subscribed::Active) => info!(
                "telemetry: subscribed to {types} with schema {} at {}",
                accepted.as_str(),
                destination.uri
            ),
            Ok(Subscribed::NotSupported {
                error_type,
                message,
            }) => warn!(
                "telemetry: this Lambda API does not support the Telemetry API ({error_type}: \
                 {message}); carrying on without telemetry (an emulator?)"
            ),
            Err(error) => {
                return Err(SetupFailed(format!(
                    "telemetry subscription refused: {error}"
                )))
            }
        }
        Ok(Telemetry {
            queue,
            flush: config.flush,
            reports_expected: config.types.contains(&LogType::Platform),
            delivery_ended,
        })
    }

    /// After an INVOKE's handler: remember the invocation (SHUTDOWN waits for its report) and,
    /// with `end-of-invoke`, hold until its `platform.runtimeDone` batch has been delivered.
    pub fn after_invoke(&self, request_id: &str, until: Instant) {
        if self.reports_expected {
            self.queue.note_invoke(request_id);
        }
        if self.flush == Flush::EndOfInvoke
            && !self.queue.wait_runtime_done_delivered(request_id, until)
        {
            warn!(
                "telemetry: the batch with platform.runtimeDone of {request_id} was not \
                 delivered before the invoke's deadline; it will be delivered later"
            );
        }
    }

    /// At SHUTDOWN: waits for the last invocations' `platform.report` batches, then for every
    /// batch received to be delivered, until `until` at most; logs the counts.
    pub fn finish(&self, until: Instant) {
        let reported = !self.reports_expected || self.queue.wait_reports(until);
        let drained = self.queue.wait_drained(until);
        // No more batches: a persistent command reads end of file and exits.
        self.queue.close();
        let remaining = until.saturating_duration_since(Instant::now());
        let ended = match self.delivery_ended.recv_timeout(remaining) {
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => true,
        };
        if drained && !ended {
            crate::command::kill_slot(Slot::Telemetry);
            warn!(
                "telemetry: the persistent telemetry command did not exit after its stdin \
                 closed, before the SHUTDOWN deadline; it was killed"
            );
        }
        let counts = self.queue.counts();
        let undelivered = counts.received - counts.delivered;
        if drained && reported {
            info!(
                "telemetry: {} received, {} delivered",
                batches(counts.received),
                counts.delivered
            );
        } else {
            crate::command::kill_slot(Slot::Telemetry);
            warn!(
                "telemetry: {} received, {} delivered, {undelivered} left undelivered{} \
                 (the SHUTDOWN deadline came first)",
                batches(counts.received),
                counts.delivered,
                if reported {
                    ""
                } else {
                    ", the last platform.report not received"
                },
            );
        }
    }
}

/// `1 batch`, `2 batches`.
fn batches(count: u64) -> String {
    match count {
        1 => "1 batch".into(),
        n => format!("{n} batches"),
    }
}

fn spawn_thread(name: &str, body: impl FnOnce() + Send + 'static) -> Result<(), SetupFailed> {
    thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map(|_| ())
        .map_err(|error| SetupFailed(format!("cannot start the {name} thread: {error}")))
}

/// The buffering asked for, with Lambda's defaults for what was not; `None` when nothing was
/// asked (no `buffering` in the request at all). The values were checked by the configuration.
fn buffering(config: &TelemetryConfig) -> Option<TelemetryBuffering> {
    let wanted = config.buffering;
    if wanted == Default::default() {
        return None;
    }
    TelemetryBuffering::new(
        wanted
            .max_items
            .unwrap_or(TelemetryBuffering::DEFAULT_MAX_ITEMS),
        wanted
            .max_bytes
            .unwrap_or(TelemetryBuffering::DEFAULT_MAX_BYTES),
        wanted
            .timeout_ms
            .unwrap_or(TelemetryBuffering::DEFAULT_TIMEOUT_MS),
    )
    .ok()
}

fn is_bad_request(answer: &Result<Subscribed, ClientError>) -> bool {
    matches!(answer, Err(error) if error.status() == Some(400))
}

fn refusal(answer: &Result<Subscribed, ClientError>) -> String {
    match answer {
        Err(error) => error.to_string(),
        Ok(_) => String::new(),
    }
}

/// The listener thread: every batch is queued (waiting while the queue is full), then answered.
fn receive(listener: Listener, queue: &Queue) {
    while let Some(delivery) = listener.next_batch() {
        let (body, acknowledgement) = delivery.into_parts();
        debug!("telemetry: batch of {} bytes received", body.len());
        queue.push(Batch::parse(body));
        acknowledgement.acknowledge();
    }
    // Never stopped by the extension: the server itself died (for example no descriptor left).
    warn!("telemetry: the listener stopped accepting connections; no more batches will arrive");
}

/// The delivery thread: each batch through the command, in arrival order, one at a time.
fn deliver(command: CommandLine, mode: Mode, extension_name: &str, queue: &Queue) {
    let fixed = [("LAMBDA_EXTENSION_NAME", extension_name)];
    let mut runner = match mode {
        Mode::PerEvent => BatchRunner::PerBatch {
            executor: Executor::new(&MANAGED_ENV, &fixed).in_slot(Slot::Telemetry),
            command,
        },
        Mode::Persistent => BatchRunner::Persistent(LongLived::new(
            "telemetry command",
            command,
            &MANAGED_ENV,
            &fixed,
            Slot::Telemetry,
        )),
    };
    let mut failures = FailureLog::default();
    if let BatchRunner::Persistent(process) = &mut runner {
        // Started now, so the first batch does not wait for its start-up.
        if let Err(failure) = process.start() {
            failures.log(&failure);
        }
    }
    while let Some(batch) = queue.next() {
        let deadline = Deadline::within(RUN_LIMIT, RUN_MARGIN, RUN_HINT);
        let started = Instant::now();
        match runner.run(&batch, deadline) {
            Ok(()) => debug!(
                "telemetry: batch of {} items delivered in {} ms",
                batch.items,
                started.elapsed().as_millis()
            ),
            Err(CommandFailure::Stopped { .. }) => return,
            Err(failure) => failures.log(&failure),
        }
        queue.delivered(&batch);
    }
    if let BatchRunner::Persistent(process) = &mut runner {
        let deadline = Deadline::within(EXIT_LIMIT, RUN_MARGIN / 4, RUN_HINT);
        match process.finish(Some(deadline)) {
            Ok(()) | Err(CommandFailure::Stopped { .. }) => {}
            Err(failure) => warn!(
                "telemetry command {} at SHUTDOWN",
                super::one_line(&failure.to_string())
            ),
        }
    }
}

/// How the telemetry command runs.
enum BatchRunner {
    /// A new process per batch, the batch on its stdin.
    PerBatch {
        executor: Executor,
        command: CommandLine,
    },
    /// One process, a batch per line.
    Persistent(LongLived),
}

impl BatchRunner {
    fn run(&mut self, batch: &Batch, deadline: Deadline) -> Result<(), CommandFailure> {
        match self {
            BatchRunner::PerBatch { executor, command } => {
                let items = batch.items.to_string();
                executor.run(
                    command,
                    Input::Bytes(&batch.body),
                    &[(BATCH_ITEMS_ENV, &items)],
                    Some(deadline),
                    Leftovers::Kill,
                )
            }
            BatchRunner::Persistent(process) => {
                process.deliver(&as_line(&batch.body), Some(deadline))
            }
        }
    }
}

/// Failing runs, logged at most once per [`FAILURE_LOG_INTERVAL`].
#[derive(Default)]
struct FailureLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl FailureLog {
    fn log(&mut self, failure: &CommandFailure) {
        let due = self
            .last
            .is_none_or(|last| last.elapsed() >= FAILURE_LOG_INTERVAL);
        if !due {
            self.unlogged += 1;
            return;
        }
        let more = match self.unlogged {
            0 => String::new(),
            n => format!(" ({n} more failed runs since the last such line)"),
        };
        warn!(
            "telemetry command {}{more}; the batch counts as delivered, the extension carries on",
            super::one_line(&failure.to_string())
        );
        self.last = Some(Instant::now());
        self.unlogged = 0;
    }
}

/// The instant `margin` before `deadline_ms` (Unix epoch ms); now if that has passed, and a
/// day from now for a `deadline_ms` of 0 (no deadline).
pub fn before_deadline(deadline_ms: u64, margin: Duration) -> Instant {
    if deadline_ms == 0 {
        return Instant::now() + Duration::from_secs(24 * 3600);
    }
    Instant::now() + time_left(deadline_ms).saturating_sub(margin)
}
