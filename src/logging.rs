//! The extension's own log lines (env_logger with a format of its own): `[<name>] LEVEL message`
//! by default, one JSON object per line with `AWS_LAMBDA_LOG_FORMAT=JSON`. The level comes from
//! `RUST_LOG`, else `AWS_LAMBDA_LOG_LEVEL`, else `info`. A command's output never goes through
//! here (it is copied as is).

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use log::LevelFilter;
use serde::Serialize;

use crate::config::{self, LogFormat, LogLevel};

thread_local! {
    /// The invocation the current thread is handling, for the `requestId` of JSON lines (empty:
    /// none). One buffer, reused from invoke to invoke.
    static REQUEST_ID: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Whether lines are JSON: only then is the request id kept (text lines do not show it, and
/// this runs on every invoke).
static JSON: AtomicBool = AtomicBool::new(false);

/// Marks the lines the calling thread logs from now on as about invocation `request_id`
/// (`None`: about none).
pub fn set_request_id(request_id: Option<&str>) {
    if JSON.load(Ordering::Relaxed) {
        REQUEST_ID.with(|current| {
            let mut current = current.borrow_mut();
            current.clear();
            current.push_str(request_id.unwrap_or_default());
        });
    }
}

/// Installs the logger; `name` is the name the extension registers under.
pub fn init(name: &str) {
    let level = config::log_level();
    let mut builder = env_logger::Builder::new();
    match config::log_filter() {
        Some(filter) => builder.parse_filters(&filter),
        None => {
            let level = level_filter(level.as_ref().ok().copied().flatten());
            // A function's log level set to TRACE is meant for the function: the HTTP crates'
            // trace lines hex-dump every event and payload, so they stop at DEBUG unless
            // RUST_LOG asks for them by name.
            builder
                .filter_level(level)
                .filter_module("ureq", level.min(LevelFilter::Debug))
                .filter_module("ureq_proto", level.min(LevelFilter::Debug))
        }
    };
    let name = name.to_string();
    match config::log_format() {
        LogFormat::Text => builder.format(move |out, record| {
            writeln!(out, "[{name}] {} {}", record.level(), record.args())
        }),
        LogFormat::Json => builder.format({
            JSON.store(true, Ordering::Relaxed);
            move |out, record| {
                let message = record.args().to_string();
                REQUEST_ID.with(|request_id| {
                    let request_id = request_id.borrow();
                    let line = JsonLine {
                        timestamp: &rfc3339_millis(SystemTime::now()),
                        level: record.level().as_str(),
                        message: &message,
                        extension: &name,
                        request_id: Some(request_id.as_str()).filter(|id| !id.is_empty()),
                    };
                    serde_json::to_writer(&mut *out, &line)?;
                    out.write_all(b"\n")
                })
            }
        }),
    };
    builder.init();
    if let Err(error) = level {
        log::warn!("{error}");
    }
}

/// One line of `AWS_LAMBDA_LOG_FORMAT=JSON`.
#[derive(Serialize)]
struct JsonLine<'a> {
    timestamp: &'a str,
    level: &'a str,
    message: &'a str,
    extension: &'a str,
    #[serde(rename = "requestId", skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

fn level_filter(level: Option<LogLevel>) -> LevelFilter {
    match level {
        Some(LogLevel::Trace) => LevelFilter::Trace,
        Some(LogLevel::Debug) => LevelFilter::Debug,
        None | Some(LogLevel::Info) => LevelFilter::Info,
        Some(LogLevel::Warn) => LevelFilter::Warn,
        Some(LogLevel::Error) => LevelFilter::Error,
    }
}

/// `time` as RFC 3339 in UTC with milliseconds: `2026-12-01T23:59:59.123Z`.
pub fn rfc3339_millis(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// The proleptic Gregorian date `days` days after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A message as one log line: CloudWatch would split a multi-line stderr tail into separate
/// events that look like more output of the command.
pub fn one_line(message: &str) -> String {
    message.trim_end().replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        let at = |secs: u64, millis: u64| {
            rfc3339_millis(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(at(1_796_169_599, 123), "2026-12-01T23:59:59.123Z");
        assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
    }
}
