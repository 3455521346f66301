//! The telemetry batches received and not yet delivered to the command: bounded in bytes,
//! first in, first out, and what has been seen and delivered of each invocation, for the
//! runner to wait on (`end-of-invoke` flushing, and the drain at SHUTDOWN).
//!
//! The listener pushes a batch before it answers 200, and a push waits while the queue is full:
//! a slow command slows Lambda's deliveries down (backpressure) instead of losing batches.

use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use serde::Deserialize;

/// How many request ids of each kind are remembered: enough for any interleaving of
/// concurrent invocations, and memory stays flat over millions of invokes.
const REMEMBERED_IDS: usize = 256;

/// One delivered batch, as POSTed, and what the runner needs to know of it.
#[derive(Debug)]
pub struct Batch {
    /// The body exactly as Lambda sent it.
    pub body: Vec<u8>,
    /// The number of records (telemetry events) in it; 0 when the body is not a JSON array.
    pub items: usize,
    /// Request ids of its `platform.runtimeDone` records.
    runtime_done: Vec<String>,
    /// Request ids of its `platform.start` records.
    starts: Vec<String>,
    /// Request ids of its `platform.report` records.
    reports: Vec<String>,
}

#[derive(Deserialize)]
struct Record {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    record: RequestId,
}

/// The `requestId` of a record's object, read without building the rest of it (a batch is
/// parsed on every delivery: a `serde_json::Value` of it took about 8 times its size).
#[derive(Default)]
struct RequestId(Option<String>);

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RequestId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a telemetry record")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RequestId, A::Error> {
                let mut id = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "requestId" {
                        id = map.next_value::<Option<String>>()?;
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(RequestId(id))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RequestId, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(RequestId(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<RequestId, E> {
                Ok(RequestId(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<RequestId, E> {
                Ok(RequestId(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<RequestId, E> {
                Ok(RequestId(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<RequestId, E> {
                Ok(RequestId(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<RequestId, E> {
                Ok(RequestId(None))
            }
            fn visit_unit<E>(self) -> Result<RequestId, E> {
                Ok(RequestId(None))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Batch {
    /// Reads the records of `body` (a JSON array of `{time, type, record}`); a body that is not
    /// one is still delivered, byte for byte.
    pub fn parse(body: Vec<u8>) -> Batch {
        let mut batch = Batch {
            items: 0,
            runtime_done: Vec::new(),
            starts: Vec::new(),
            reports: Vec::new(),
            body: Vec::new(),
        };
        if let Ok(records) = serde_json::from_slice::<Vec<Record>>(&body) {
            batch.items = records.len();
            for record in records {
                let ids = match record.kind.as_str() {
                    "platform.runtimeDone" => &mut batch.runtime_done,
                    "platform.start" => &mut batch.starts,
                    "platform.report" => &mut batch.reports,
                    _ => continue,
                };
                if let Some(id) = record.record.0 {
                    ids.push(id);
                }
            }
        }
        batch.body = body;
        batch
    }
}

/// Batches received and delivered so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub received: u64,
    pub delivered: u64,
    pub queued: u64,
}

/// A bounded set of request ids, forgetting the oldest.
#[derive(Default)]
struct Ids {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Ids {
    fn insert(&mut self, id: &str) {
        if self.set.insert(id.to_string()) {
            self.order.push_back(id.to_string());
            if self.order.len() > REMEMBERED_IDS {
                if let Some(oldest) = self.order.pop_front() {
                    self.set.remove(&oldest);
                }
            }
        }
    }

    fn remove(&mut self, id: &str) {
        if self.set.remove(id) {
            self.order.retain(|kept| kept != id);
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }
}

#[derive(Default)]
struct State {
    batches: VecDeque<Batch>,
    bytes: usize,
    /// A batch has been taken for delivery and is not delivered yet.
    in_delivery: bool,
    closed: bool,
    counts: Counts,
    /// Invocations started (INVOKE event or `platform.start`) whose `platform.report` has not
    /// arrived yet.
    unreported: Ids,
    /// Invocations whose `platform.report` has arrived (so a late INVOKE note is not pending).
    reported: Ids,
    /// Invocations whose `platform.runtimeDone` batch has been delivered to the command.
    runtime_done_delivered: Ids,
}

/// The queue between the listener and the delivery thread.
pub struct Queue {
    state: Mutex<State>,
    changed: Condvar,
    capacity_bytes: usize,
    capacity_batches: usize,
}

impl Queue {
    /// A queue that holds at most `capacity_batches` batches and `capacity_bytes` of them (but
    /// always at least one batch, however large: a batch is never refused).
    pub fn new(capacity_bytes: usize, capacity_batches: usize) -> Queue {
        Queue {
            state: Mutex::default(),
            changed: Condvar::new(),
            capacity_bytes,
            capacity_batches,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the state half-changed in a way that matters here.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait<'a>(
        &self,
        state: MutexGuard<'a, State>,
        until: Option<Instant>,
    ) -> MutexGuard<'a, State> {
        match until {
            None => self.changed.wait(state).unwrap_or_else(|p| p.into_inner()),
            Some(until) => {
                let timeout = until.saturating_duration_since(Instant::now());
                self.changed
                    .wait_timeout(state, timeout)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        }
    }

    /// Adds a batch, waiting while the queue is full.
    pub fn push(&self, batch: Batch) {
        let mut state = self.lock();
        while !state.batches.is_empty()
            && (state.bytes + batch.body.len() > self.capacity_bytes
                || state.batches.len() >= self.capacity_batches)
        {
            state = self.wait(state, None);
        }
        for id in &batch.starts {
            if !state.reported.contains(id) {
                state.unreported.insert(id);
            }
        }
        for id in &batch.reports {
            state.unreported.remove(id);
            state.reported.insert(id);
        }
        state.bytes += batch.body.len();
        state.counts.received += 1;
        state.batches.push_back(batch);
        self.changed.notify_all();
    }

    /// The next batch to deliver, waiting for one; `None` once the queue is closed and empty.
    /// Call [`Queue::delivered`] when done with it.
    pub fn next(&self) -> Option<Batch> {
        let mut state = self.lock();
        loop {
            if let Some(batch) = state.batches.pop_front() {
                state.bytes -= batch.body.len();
                state.in_delivery = true;
                self.changed.notify_all();
                return Some(batch);
            }
            if state.closed {
                return None;
            }
            state = self.wait(state, None);
        }
    }

    /// The batch taken with [`Queue::next`] has been through the command.
    pub fn delivered(&self, batch: &Batch) {
        let mut state = self.lock();
        state.in_delivery = false;
        state.counts.delivered += 1;
        for id in &batch.runtime_done {
            state.runtime_done_delivered.insert(id);
        }
        self.changed.notify_all();
    }

    /// An INVOKE event arrived for `request_id`: its `platform.report` is awaited at SHUTDOWN.
    pub fn note_invoke(&self, request_id: &str) {
        let mut state = self.lock();
        if !state.reported.contains(request_id) {
            state.unreported.insert(request_id);
        }
    }

    /// Waits until the batch holding `request_id`'s `platform.runtimeDone` has been delivered;
    /// false if `until` came first.
    pub fn wait_runtime_done_delivered(&self, request_id: &str, until: Instant) -> bool {
        self.wait_for(until, |state| {
            state.runtime_done_delivered.contains(request_id)
        })
    }

    /// Waits until every invocation started has its `platform.report`; false if `until` came
    /// first.
    pub fn wait_reports(&self, until: Instant) -> bool {
        self.wait_for(until, |state| state.unreported.set.is_empty())
    }

    /// No more batches will be pushed: the delivery thread delivers what is queued, then stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Waits until every batch received has been delivered; false if `until` came first.
    pub fn wait_drained(&self, until: Instant) -> bool {
        self.wait_for(until, |state| {
            state.batches.is_empty() && !state.in_delivery
        })
    }

    /// Batches received, delivered and still queued.
    pub fn counts(&self) -> Counts {
        let state = self.lock();
        Counts {
            queued: state.batches.len() as u64,
            ..state.counts
        }
    }

    fn wait_for(&self, until: Instant, done: impl Fn(&State) -> bool) -> bool {
        let mut state = self.lock();
        loop {
            if done(&state) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            state = self.wait(state, Some(until));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    use super::*;

    fn batch(text: &str) -> Batch {
        Batch::parse(text.as_bytes().to_vec())
    }

    #[test]
    fn records_are_counted_and_ids_found() {
        let parsed = batch(
            r#"[{"time":"t","type":"platform.start","record":{"requestId":"a"}},
                {"time":"t","type":"function","record":"hello"},
                {"time":"t","type":"platform.runtimeDone","record":{"requestId":"a","status":"success"}},
                {"time":"t","type":"platform.report","record":{"requestId":"a"}}]"#,
        );
        assert_eq!(parsed.items, 4);
        assert_eq!(parsed.starts, ["a"]);
        assert_eq!(parsed.runtime_done, ["a"]);
        assert_eq!(parsed.reports, ["a"]);
        let odd = batch("not json");
        assert_eq!((odd.items, odd.body.as_slice()), (0, &b"not json"[..]));
    }

    #[test]
    fn a_full_queue_makes_the_pusher_wait_and_loses_nothing() {
        let queue = Arc::new(Queue::new(10, 100));
        let pusher = {
            let queue = queue.clone();
            thread::spawn(move || {
                for n in 0..100 {
                    queue.push(batch(&format!("[{n:08}]")));
                }
                queue.close();
            })
        };
        let mut seen = Vec::new();
        while let Some(next) = queue.next() {
            // One 10-byte batch at a time fits: the pusher can never run ahead by more.
            assert!(queue.counts().queued <= 1);
            seen.push(String::from_utf8(next.body.clone()).unwrap());
            queue.delivered(&next);
        }
        pusher.join().unwrap();
        let expected: Vec<String> = (0..100).map(|n| format!("[{n:08}]")).collect();
        assert_eq!(seen, expected);
        assert_eq!(
            queue.counts(),
            Counts {
                received: 100,
                delivered: 100,
                queued: 0
            }
        );
    }

    #[test]
    fn the_batch_count_is_bounded_too() {
        let queue = Arc::new(Queue::new(1 << 20, 2));
        queue.push(batch("[1]"));
        queue.push(batch("[2]"));
        let pusher = {
            let queue = queue.clone();
            thread::spawn(move || queue.push(batch("[3]")))
        };
        thread::sleep(Duration::from_millis(50));
        assert_eq!(queue.counts().received, 2, "a third batch got in");
        let first = queue.next().unwrap();
        pusher.join().unwrap();
        assert_eq!(queue.counts().received, 3);
        queue.delivered(&first);
    }

    #[test]
    fn waits_end_when_the_batches_arrive_or_the_time_is_up() {
        let queue = Queue::new(1 << 20, 100);
        let soon = || Instant::now() + Duration::from_millis(20);
        queue.note_invoke("a");
        assert!(!queue.wait_reports(soon()));
        queue.push(batch(
            r#"[{"time":"t","type":"platform.runtimeDone","record":{"requestId":"a"}}]"#,
        ));
        assert!(!queue.wait_runtime_done_delivered("a", soon()));
        let taken = queue.next().unwrap();
        assert!(!queue.wait_drained(soon()));
        queue.delivered(&taken);
        assert!(queue.wait_runtime_done_delivered("a", soon()));
        assert!(queue.wait_drained(soon()));
        queue.push(batch(
            r#"[{"time":"t","type":"platform.report","record":{"requestId":"a"}}]"#,
        ));
        assert!(queue.wait_reports(soon()));
        // A report seen before the INVOKE note (concurrent invokes) leaves nothing pending.
        queue.note_invoke("a");
        assert!(queue.wait_reports(soon()));
    }
}
