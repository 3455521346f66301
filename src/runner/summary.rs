//! What the extension did, for one log line per event and a summary at SHUTDOWN.
//!
//! Handler times go into a fixed histogram (16 steps per doubling, so within about 3 %), not a
//! list: an environment can live for hours and millions of invokes, and the extension's memory
//! must stay flat.

use std::fmt;
use std::time::Duration;

use crate::api::LifecycleEvent;
use crate::command::CommandFailure;

/// Steps per doubling of the histogram.
const STEPS: u32 = 16;
/// Buckets: exact microseconds below `STEPS`, then `STEPS` per doubling up to 2^64 µs.
const BUCKETS: usize = (STEPS as usize) * (64 - STEPS.trailing_zeros() as usize + 1);

/// Counts and handler times of the events handled so far.
pub struct Summary {
    invokes: u64,
    shutdowns: u64,
    failed: u64,
    timed_out: u64,
    max: Duration,
    histogram: Box<[u64; BUCKETS]>,
}

impl Default for Summary {
    fn default() -> Self {
        Summary {
            invokes: 0,
            shutdowns: 0,
            failed: 0,
            timed_out: 0,
            max: Duration::ZERO,
            histogram: Box::new([0; BUCKETS]),
        }
    }
}

impl Summary {
    /// Counts one handled event.
    pub fn record(
        &mut self,
        event: LifecycleEvent,
        elapsed: Duration,
        outcome: &Result<(), CommandFailure>,
    ) {
        match event {
            LifecycleEvent::Invoke => self.invokes += 1,
            LifecycleEvent::Shutdown => self.shutdowns += 1,
        }
        match outcome {
            Ok(()) => {}
            Err(CommandFailure::TimedOut { .. }) => self.timed_out += 1,
            Err(_) => self.failed += 1,
        }
        self.max = self.max.max(elapsed);
        self.histogram[bucket(micros(elapsed))] += 1;
    }

    fn events(&self) -> u64 {
        self.invokes + self.shutdowns
    }

    /// The median handler time, to within one bucket (its middle).
    fn median(&self) -> Duration {
        let half = self.events().div_ceil(2);
        let mut seen = 0;
        for (index, count) in self.histogram.iter().enumerate() {
            seen += count;
            if seen >= half && *count > 0 {
                let (low, high) = bounds(index);
                return Duration::from_micros(low + (high - low) / 2).min(self.max);
            }
        }
        Duration::ZERO
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} events ({} INVOKE, {} SHUTDOWN), {} failed, {} timed out",
            self.events(),
            self.invokes,
            self.shutdowns,
            self.failed,
            self.timed_out
        )?;
        if self.events() > 0 {
            write!(
                f,
                "; handler time median {}, max {}",
                Millis(self.median()),
                Millis(self.max)
            )?;
        }
        Ok(())
    }
}

/// A duration as the log shows it: `0.52 ms`, `1.2 ms`, `15 ms`, `2.50 s`.
pub struct Millis(pub Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_secs_f64() * 1000.0;
        if ms < 1.0 {
            write!(f, "{ms:.2} ms")
        } else if ms < 10.0 {
            write!(f, "{ms:.1} ms")
        } else if ms < 1000.0 {
            write!(f, "{ms:.0} ms")
        } else {
            write!(f, "{:.2} s", ms / 1000.0)
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// The bucket of `value`: exact below `STEPS`, then `STEPS` equal steps per doubling.
fn bucket(value: u64) -> usize {
    if value < u64::from(STEPS) {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros(); // >= log2(STEPS)
    let shift = exponent - STEPS.trailing_zeros();
    let step = (value >> shift) - u64::from(STEPS); // 0..STEPS
    ((shift + 1) * STEPS) as usize + step as usize
}

/// The values `[low, high)` of bucket `index`.
fn bounds(index: usize) -> (u64, u64) {
    let steps = STEPS as usize;
    if index < steps {
        return (index as u64, index as u64 + 1);
    }
    let shift = (index / steps - 1) as u32;
    let low = (u64::from(STEPS) + (index % steps) as u64) << shift;
    (low, low.saturating_add(1 << shift))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_values() {
        for value in (0..5000).chain([u64::MAX / 3, u64::MAX]) {
            let (low, high) = bounds(bucket(value));
            assert!(
                low <= value && (value < high || high == u64::MAX),
                "{value}: {low}..{high}"
            );
            assert!(bucket(value) < BUCKETS);
        }
        // Within about 3 % from 16 µs up.
        for value in [16_u64, 100, 999, 123_456, 9_999_999] {
            let (low, high) = bounds(bucket(value));
            assert!(
                (high - low) as f64 / low as f64 <= 1.0 / 16.0 + 1e-9,
                "{value}"
            );
        }
    }

    #[test]
    fn median_max_and_counts() {
        let mut summary = Summary::default();
        let ok = Ok(());
        for ms in [1, 2, 3, 100] {
            summary.record(LifecycleEvent::Invoke, Duration::from_millis(ms), &ok);
        }
        let stopped = Err(CommandFailure::Stopped {
            command: "x".into(),
            signal: 15,
        });
        summary.record(LifecycleEvent::Shutdown, Duration::from_millis(3), &stopped);
        let text = summary.to_string();
        assert!(
            text.starts_with("5 events (4 INVOKE, 1 SHUTDOWN), 1 failed, 0 timed out"),
            "{text}"
        );
        let median = summary.median().as_secs_f64() * 1000.0;
        assert!((median - 3.0).abs() < 0.1, "{median}");
        assert!(text.ends_with("max 100 ms"), "{text}");
        assert_eq!(
            Summary::default().to_string(),
            "0 events (0 INVOKE, 0 SHUTDOWN), 0 failed, 0 timed out"
        );
    }

    #[test]
    fn millis_format() {
        let show = |us| Millis(Duration::from_micros(us)).to_string();
        assert_eq!(show(520), "0.52 ms");
        assert_eq!(show(1_234), "1.2 ms");
        assert_eq!(show(15_400), "15 ms");
        assert_eq!(show(2_500_000), "2.50 s");
    }
}
