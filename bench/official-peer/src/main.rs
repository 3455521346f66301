//! Benchmark peer: the minimal extension a user of the official `lambda-extension` crate would
//! write to run a command per event: `#[tokio::main]` (multi-threaded runtime), `service_fn`,
//! `tokio::process::Command` with the event JSON on stdin, wait for it.
//!
//! Env: `AWS_LAMBDA_RUNTIME_API`, `BENCH_HANDLER` (argv: fields separated by `\x1f`, or by
//! whitespace when there is none; unset or empty: no command at all, only the crate's own event
//! loop, compared with the no-command floor). The crate does not hand out the raw event body, so the JSON is
//! rebuilt from the parsed event. After SHUTDOWN the crate would call event/next again (Lambda
//! normally kills the process first), so the peer exits 0 itself once the SHUTDOWN handler is done.

use std::process::Stdio;

use lambda_extension::{service_fn, Error, LambdaEvent, NextEvent};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

fn handler_argv() -> Vec<String> {
    let spec = std::env::var("BENCH_HANDLER").unwrap_or_default();
    if spec.contains('\x1f') {
        spec.split('\x1f').map(str::to_owned).collect()
    } else {
        spec.split_whitespace().map(str::to_owned).collect()
    }
}

async fn run_handler(argv: &[String], body: Vec<u8>) -> Result<(), Error> {
    let (program, args) = argv.split_first().ok_or("BENCH_HANDLER is empty")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A handler that does not read its stdin (/bin/true) may be gone already.
        match stdin.write_all(&body).await {
            Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(error.into())
            }
            _ => {}
        }
    }
    let status = child.wait().await?;
    if !status.success() {
        return Err(format!("handler {status}").into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let argv: &'static [String] = Vec::leak(handler_argv());
    let processor = service_fn(move |event: LambdaEvent| async move {
        let shutdown = matches!(event.next, NextEvent::Shutdown(_));
        if argv.is_empty() {
            // No command: the crate's event loop alone (official-nocmd).
            if shutdown {
                std::process::exit(0);
            }
            return Ok::<(), Error>(());
        }
        let (body, shutdown) = match &event.next {
            NextEvent::Invoke(invoke) => (
                json!({
                    "eventType": "INVOKE",
                    "deadlineMs": invoke.deadline_ms,
                    "requestId": invoke.request_id,
                    "invokedFunctionArn": invoke.invoked_function_arn,
                    "tracing": {"type": invoke.tracing.r#type, "value": invoke.tracing.value},
                }),
                false,
            ),
            NextEvent::Shutdown(shutdown) => (
                json!({
                    "eventType": "SHUTDOWN",
                    "shutdownReason": shutdown.shutdown_reason,
                    "deadlineMs": shutdown.deadline_ms,
                }),
                true,
            ),
        };
        run_handler(argv, serde_json::to_vec(&body)?).await?;
        if shutdown {
            std::process::exit(0);
        }
        Ok::<(), Error>(())
    });
    lambda_extension::run(processor).await
}
