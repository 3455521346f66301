//! Sentinel AWS credentials: every extension the suites start has them in its environment (set
//! by `Sandbox::ext_at`), and the harness checks that none of them ever shows up in what the
//! extension wrote to its stdout or stderr (`Ext`'s drop) or in a request it sent to the fake
//! API (`FakeApi`'s drop): the extension's own log lines, its debug output and its error reports
//! (issue 12, "Credentials in the environment").
//!
//! A handler that prints its environment to stdout would trip the check; handlers that need to
//! look at their environment write it to a file.

/// The three variables Lambda gives a function's execution role credentials in, with values no
/// test would produce by chance (alphanumeric, so escaping in a JSON or `{:?}` message cannot
/// hide them).
pub const SENTINELS: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "ASIASENTINEL7KEYID7Q4X"),
    (
        "AWS_SECRET_ACCESS_KEY",
        "sentinelSECRET7accessKEY7mustNEVERbeLOGGED7z9",
    ),
    (
        "AWS_SESSION_TOKEN",
        "sentinelSESSION7tokenMUSTneverBElogged7IQoJb3JpZ2luX2VjEPT7k2",
    ),
];

/// Pieces of each sentinel that must not appear either: its first and last 14 characters, so a
/// value cut short (a truncated message, a stderr tail) is caught too.
fn markers() -> impl Iterator<Item = (&'static str, &'static str)> {
    SENTINELS
        .iter()
        .flat_map(|(name, value)| [(*name, &value[..14]), (*name, &value[value.len() - 14..])])
}

/// The names of the sentinels (or parts of them) found in `bytes`, or in the bytes of the
/// HTTP hex dumps among them (at `RUST_LOG=trace` the HTTP client logs every byte it sends and
/// receives, 16 to a line: a value split over two lines is caught too).
pub fn leaked(bytes: &[u8]) -> Vec<&'static str> {
    // `str::contains` (core's two-way search, built optimised) keeps a 50 MB output fast.
    let text = String::from_utf8_lossy(bytes);
    let dumped = match text.contains(" TRACE ") {
        true => hex_dump_text(&text),
        false => String::new(),
    };
    let mut names: Vec<&'static str> = markers()
        .filter(|(_, marker)| text.contains(marker) || dumped.contains(marker))
        .map(|(name, _)| name)
        .collect();
    names.dedup();
    names
}

/// The text columns of the hex-dump lines in `log`, joined: a line such as
/// `[name] TRACE 4745 5420 2f32 3032 302d 3031 2d30 312f  GET./2020-01-01/`.
fn hex_dump_text(log: &str) -> String {
    let mut out = String::new();
    for line in log.lines() {
        let Some((_, rest)) = line.split_once(" TRACE ") else {
            continue;
        };
        let fields: Vec<&str> = rest.splitn(9, ' ').collect();
        let hex = |g: &&str| g.len() == 4 && g.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if fields.len() == 9 && fields[..8].iter().all(hex) {
            out.push_str(fields[8].trim_start().trim_end_matches('"'));
        }
    }
    out
}

/// Panics, naming `what` and the variables, if `bytes` holds any sentinel (or part of one).
pub fn assert_no_credentials(what: &str, bytes: &[u8]) {
    let names = leaked(bytes);
    if !names.is_empty() {
        let text = String::from_utf8_lossy(bytes);
        let lines: Vec<&str> = text
            .lines()
            .filter(|line| markers().any(|(_, marker)| line.contains(marker)))
            .take(5)
            .collect();
        panic!(
            "credentials leaked: the value of {names:?} appears in {what}; lines:\n{}",
            lines.join("\n")
        );
    }
}
