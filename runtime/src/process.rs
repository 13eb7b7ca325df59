//! How every binary of the project starts and stops: a runtime that runs
//! the service until it returns, SIGTERM and SIGINT caught before anything
//! listens, and a refusal to start that says why as `validate` would.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use tracing::{error, warn};

use crate::log::{self, LogFormat};

/// Says why a binary cannot start, and gives its exit code. As text, each
/// line of `error` comes as `error: LINE` (a policy's or a routes file's
/// problems, one per line, as `validate` prints them), then `what`; as
/// JSON, one log record.
pub fn refuse_to_start(format: LogFormat, what: &str, error: &str) -> ExitCode {
    match format {
        LogFormat::Json => {
            error!(error = %error, "{what}");
            log::flush(Duration::from_secs(1));
        }
        LogFormat::Text => {
            let mut stderr = std::io::stderr().lock();
            for line in error.lines() {
                let _ = writeln!(stderr, "error: {line}");
            }
            let _ = writeln!(stderr, "{what}");
        }
    }
    ExitCode::FAILURE
}

/// Runs `service` on a multi-threaded runtime until it returns; logs why it
/// failed, if it did, and gives the exit code for `main`. Every binary of
/// the project starts this way.
pub fn run_until_done<F>(what: &str, service: F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), Box<dyn std::error::Error>>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            log::flush(Duration::from_secs(1));
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(service) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "{what} stopped");
            ExitCode::FAILURE
        }
    };
    log::flush(Duration::from_secs(1));
    code
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when it is first awaited: call it before saying that the
/// process listens, so a signal sent at once is not the default one (which
/// kills the process without its drain).
pub fn wait_for_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            match handlers {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    warn!(error = %e, "cannot listen for SIGTERM and SIGINT; falling back to Ctrl-C");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async move {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
