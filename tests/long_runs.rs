//! Long runs (issue 12): 10 000 INVOKE events in per-event mode, 10 000 in persistent mode, and
//! 10 000 telemetry batches, each through the real binary. The extension's open file
//! descriptors, threads and RSS are sampled at quiet moments (while it waits in `/event/next`,
//! or once a batch has been through the command) and the first thousand are compared with the
//! last thousand: fds and threads equal, RSS within `rss_bound_kib` (25 % or 512 KiB). Its
//! children are looked at on every sample (no zombie, ever, at a quiet moment) and by a
//! background sampler all along (no zombie that lasts, `ZOMBIE_GRACE`). Every event and batch
//! must have reached the command intact and in order.

mod common;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const EVENTS: usize = 10_000;
/// The first and the last this many events (or batches) are compared.
const WINDOW: usize = 1_000;
/// How often the background sampler looks at the extension's children.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// Every this many events the quiet sample lists all the extension's children (a scan of
/// `/proc`, about a millisecond); the others only look at the process that handled the last event.
const SCAN_EVERY: usize = 10;

/// What was seen at one quiet moment, after `after` events or batches.
#[derive(Clone, Debug)]
struct Quiet {
    after: usize,
    usage: Usage,
    /// Every child of the extension (every `SCAN_EVERY` samples), else `None`.
    children: Option<Vec<(i32, String)>>,
    /// The process that handled the last event (its pid read from the file `last`), and its
    /// state then (`None`: gone, reaped).
    last: Option<(i32, Option<String>)>,
}

/// Samples taken at quiet moments, keyed by how many events had been handled.
#[derive(Clone, Default)]
struct QuietLog(Arc<Mutex<Vec<Quiet>>>);

impl QuietLog {
    /// Samples `pid` after `after` events; `last` is the file a handler writes its pid to.
    fn take(&self, pid: i32, after: usize, last: Option<&Path>) {
        let Some(usage) = Usage::of(pid) else { return };
        let children = after.is_multiple_of(SCAN_EVERY).then(|| children(pid));
        let last = last
            .and_then(|path| fs::read_to_string(path).ok()?.trim().parse::<i32>().ok())
            .map(|handler| (handler, stat(handler).map(|(state, _, _)| state)));
        self.0.lock().unwrap().push(Quiet {
            after,
            usage,
            children,
            last,
        });
    }

    fn all(&self) -> Vec<Quiet> {
        self.0.lock().unwrap().clone()
    }
}

/// Compares the first and last `WINDOW` quiet samples; checks each sample with `ok` (which
/// says what is wrong, if anything).
fn check_quiet(
    samples: &[Quiet],
    total: usize,
    what: &str,
    ok: impl Fn(&Quiet) -> Result<(), String>,
) {
    let mut bad = Vec::new();
    for sample in samples {
        if let Err(problem) = ok(sample) {
            bad.push(format!("after {}: {problem}", sample.after));
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: the extension's children at {} of {} quiet moments were wrong, first: {:?}",
        bad.len(),
        samples.len(),
        &bad[..bad.len().min(5)]
    );
    let window = |range: std::ops::RangeInclusive<usize>| -> Vec<Usage> {
        samples
            .iter()
            .filter(|s| range.contains(&s.after))
            .map(|s| s.usage)
            .collect()
    };
    let first = window(1..=WINDOW);
    let last = window(total - WINDOW + 1..=total);
    assert_eq!(first.len(), WINDOW, "{what}: samples in the first window");
    assert_eq!(last.len(), WINDOW, "{what}: samples in the last window");
    assert_flat(&first, &last, what);
}

/// The background sampler saw no child that stayed a zombie.
fn check_watch(watch: &Watch, what: &str) {
    eprintln!(
        "{what}: background sampler: {} rounds, {} zombies seen for an instant, lasting: {:?}",
        watch.zombie_rounds, watch.zombies_seen, watch.lasting_zombies
    );
    assert!(watch.zombie_rounds > 10, "{what}: the sampler hardly ran");
    assert!(
        watch.lasting_zombies.is_empty(),
        "{what}: children left zombies for {ZOMBIE_GRACE:?} or more: {:?}",
        watch.lasting_zombies
    );
}

/// Queues `EVENTS` INVOKEs and a SHUTDOWN, takes a quiet sample at every `/event/next` (the
/// extension waits for its answer, so what it holds is stable while we look), runs the
/// extension to its exit 0 and returns the samples, the background watch and the events served.
fn run_events(sb: &Sandbox, api: &FakeApi, launcher: Launcher<'_>) -> (Vec<Quiet>, Watch) {
    let last = sb.path("last");
    let ext_pid = PidSlot::default();
    let quiet = QuietLog::default();
    let nexts = Arc::new(AtomicUsize::new(0));
    {
        let (ext_pid, quiet, nexts) = (ext_pid.clone(), quiet.clone(), nexts.clone());
        let last = last.clone();
        api.on_request(move |r| {
            if r.endpoint != Endpoint::Next {
                return;
            }
            // The n-th /event/next comes after n events were handled.
            let after = nexts.fetch_add(1, Ordering::SeqCst);
            if after >= 1 {
                quiet.take(ext_pid.get(), after, Some(&last));
            }
        });
    }
    for n in 0..EVENTS {
        api.push_invoke(&format!("req-{n}"), deadline_in(300_000));
    }
    api.push_shutdown("spindown", deadline_in(300_000));
    let started = Instant::now();
    let mut ext = launcher.env("RUST_LOG", "warn").spawn();
    ext_pid.set(ext.pid);
    let sampler = Sampler::start(ext.pid as i32, SAMPLE_EVERY);
    ext.expect_exit(0, secs(150));
    let watch = sampler.stop();
    let took = started.elapsed();
    eprintln!(
        "{EVENTS} events in {took:?} ({:?} per event)",
        took / EVENTS as u32
    );
    let context = format!("{}\n{}", api.describe(), ext.output_tail());
    assert_none(api, Endpoint::ExitError);
    assert_eq!(api.count(Endpoint::Next), EVENTS + 1, "{context}");
    (quiet.all(), watch)
}

/// The lines of a sandbox file.
fn lines_of(sb: &Sandbox, name: &str) -> Vec<String> {
    fs::read_to_string(sb.path(name))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// The event bodies served, as text, INVOKEs only.
fn served_invokes(api: &FakeApi) -> Vec<String> {
    api.served()
        .iter()
        .map(|body| String::from_utf8_lossy(body).into_owned())
        .filter(|body| body.contains("\"INVOKE\""))
        .collect()
}

/// 10 000 INVOKEs in per-event mode, a process each (a `sh` script that appends its stdin to
/// a file and writes its pid to `last`): every event reached its own process, in order; at every
/// `/event/next` the process of the last event is gone (reaped, not a zombie) and, every
/// `SCAN_EVERY` events, the extension has no child at all; its fds, threads and RSS are flat.
#[test]
fn ten_thousand_events_per_event_mode_stay_flat() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let script = sb.script(
        "handler.sh",
        &format!(
            "#!/bin/sh\nIFS= read -r event\nprintf '%s\\n' \"$event\" >> {events}\necho $$ > {last}\n",
            events = sb.p("events"),
            last = sb.p("last"),
        ),
    );
    let launcher = sb.ext(&api).handler(&script);
    let (samples, watch) = run_events(&sb, &api, launcher);
    let seen = lines_of(&sb, "events");
    let served = served_invokes(&api);
    assert_eq!(served.len(), EVENTS);
    // The SHUTDOWN follows the INVOKEs.
    assert_eq!(seen.len(), EVENTS + 1, "events the handler saw");
    assert!(
        seen[..EVENTS] == served[..],
        "the events the handler saw differ from those served"
    );
    let mut handlers: Vec<i32> = samples
        .iter()
        .filter_map(|s| Some(s.last.as_ref()?.0))
        .collect();
    assert_eq!(handlers.len(), EVENTS, "a handler pid at every /event/next");
    handlers.dedup();
    assert!(
        handlers.len() > EVENTS / 2,
        "a process per event: {} pids",
        handlers.len()
    );
    check_quiet(&samples, EVENTS, "per-event", |sample| {
        if let Some((pid, Some(state))) = &sample.last {
            return Err(format!(
                "the last event's process {pid} is still there ({state})"
            ));
        }
        match &sample.children {
            Some(children) if !children.is_empty() => {
                Err(format!("children while waiting for an event: {children:?}"))
            }
            _ => Ok(()),
        }
    });
    check_watch(&watch, "per-event");
}

/// 10 000 INVOKEs in persistent mode through one handler process (a `sh` loop acknowledging
/// each line on fd 3): every line reached it in order; at every `/event/next` that process is
/// alive (not a zombie) and, every `SCAN_EVERY` events, it is the extension's only child; its
/// fds, threads and RSS are flat.
#[test]
fn ten_thousand_events_persistent_mode_stay_flat() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let script = sb.script(
        "handler.sh",
        &format!(
            "#!/bin/sh\necho $$ > {last}\n\
             while IFS= read -r line; do printf '%s\\n' \"$line\" >> {events}; echo ok >&3; done\n",
            last = sb.p("last"),
            events = sb.p("events"),
        ),
    );
    let launcher = sb
        .ext(&api)
        .handler(&script)
        .env("SHELL_EXT_MODE", "persistent");
    let (samples, watch) = run_events(&sb, &api, launcher);
    let handler: i32 = lines_of(&sb, "last")[0].parse().unwrap();
    let seen = lines_of(&sb, "events");
    let served = served_invokes(&api);
    assert_eq!(served.len(), EVENTS);
    // The SHUTDOWN line follows the INVOKEs.
    assert_eq!(seen.len(), EVENTS + 1, "lines the handler read");
    assert!(
        seen[..EVENTS] == served[..],
        "the lines the handler read differ from the events served"
    );
    check_quiet(&samples, EVENTS, "persistent", |sample| {
        match &sample.last {
            Some((pid, Some(state))) if *pid == handler && state != "Z" => {}
            last => return Err(format!("handler {handler}: {last:?}")),
        }
        match sample.children.as_deref() {
            None => Ok(()),
            Some([(pid, state)]) if *pid == handler && state != "Z" => Ok(()),
            Some(children) => Err(format!("children {children:?}, want only {handler} alive")),
        }
    });
    check_watch(&watch, "persistent");
}

/// Batch `n` of the telemetry run: 1 to 7 records, text with escapes and non-ASCII, distinct.
fn telemetry_batch(n: usize) -> Vec<u8> {
    let records: Vec<String> = (0..=(n % 7))
        .map(|i| {
            record(
                "function",
                &format!(r#""batch {n} line {i} \u00e9 é \"q\" \\ end""#),
            )
        })
        .collect();
    batch(&records)
}

/// Polls `cond` every 200 µs until it holds or `timeout` passes.
fn wait_briefly(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    true
}

/// 10 000 telemetry batches POSTed one after another to the listener, as the Telemetry API
/// does, each run through the telemetry command (a process per batch, `tee -a`): every batch
/// reaches it byte for byte and in order, all are counted at SHUTDOWN. In the first and last
/// thousand, once each batch has been through the command (the file has grown by its bytes and
/// the extension has no child left), its fds, threads and RSS are sampled: flat.
#[test]
fn ten_thousand_telemetry_batches_stay_flat() {
    let sb = Sandbox::new();
    let api = FakeApi::start();
    let file = sb.path("batches");
    let mut ext = sb
        .ext(&api)
        .env(
            "SHELL_EXT_TELEMETRY_HANDLER",
            &format!("tee -a {}", file.display()),
        )
        .spawn();
    let pid = ext.pid as i32;
    let target = TelemetryTarget::of(&api);
    let sampler = Sampler::start(pid, SAMPLE_EVERY);
    let started = Instant::now();
    let mut expected = Vec::new();
    let mut samples = Vec::new();
    for n in 1..=EVENTS {
        let body = telemetry_batch(n);
        target.deliver(&body);
        expected.extend_from_slice(&body);
        if n > WINDOW && n <= EVENTS - WINDOW {
            continue;
        }
        // A quiet moment: the batch has been through the command, the command is reaped, and
        // two looks 1 ms apart agree.
        let delivered = wait_briefly(secs(10), || {
            fs::metadata(&file).is_ok_and(|m| m.len() == expected.len() as u64)
        });
        assert!(delivered, "batch {n} not through the command within 10 s");
        let mut previous = None;
        let settled = wait_briefly(secs(2), || {
            let now = Usage::of(pid);
            let kids = children(pid);
            let stable = kids.is_empty() && now.is_some() && now == previous;
            previous = now;
            std::thread::sleep(ms(1));
            stable
        });
        assert!(
            settled,
            "after batch {n}: children {:?}, usage {previous:?}",
            children(pid)
        );
        samples.push(Quiet {
            after: n,
            usage: previous.unwrap(),
            children: Some(Vec::new()),
            last: None,
        });
    }
    let took = started.elapsed();
    api.push_shutdown("spindown", deadline_in(10_000));
    ext.expect_exit(0, secs(20));
    let watch = sampler.stop();
    eprintln!(
        "{EVENTS} batches in {took:?} ({:?} per batch)",
        took / EVENTS as u32
    );
    let context = format!("{}\n{}", api.describe(), ext.output_tail());
    assert_none(&api, Endpoint::ExitError);
    let got = fs::read(&file).unwrap();
    assert!(
        got == expected,
        "the command got {} bytes, {} were posted; first difference at byte {:?}",
        got.len(),
        expected.len(),
        got.iter().zip(&expected).position(|(a, b)| a != b)
    );
    assert!(
        ext.stderr_str().contains(&format!(
            "telemetry: {EVENTS} batches received, {EVENTS} delivered"
        )),
        "{context}"
    );
    check_quiet(&samples, EVENTS, "telemetry", |_| Ok(()));
    check_watch(&watch, "telemetry");
}
