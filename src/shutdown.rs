//! Shutdown on SIGTERM or Ctrl-C, shared by every role in the process.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// A signal that fires once when the process should stop. Clones share it.
#[derive(Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

impl Shutdown {
    /// Starts listening for SIGTERM and Ctrl-C.
    pub fn on_signals() -> Shutdown {
        let (sender, receiver) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received, draining");
            let _ = sender.send(true);
        });
        Shutdown { receiver }
    }

    /// Returns a future that completes when shutdown starts.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut receiver = self.receiver.clone();
        async move {
            // An error means the sender is gone, which only happens when the
            // process is ending anyway.
            let _ = receiver.wait_for(|stopping| *stopping).await;
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Runs `task` until it ends. Once shutdown starts, waits at most `grace`
/// for it to drain, then gives up on it so the process can exit.
pub async fn run_with_grace<T>(
    task: impl Future<Output = T>,
    shutdown: &Shutdown,
    grace: Duration,
) -> Option<T> {
    tokio::pin!(task);
    tokio::select! {
        output = &mut task => return Some(output),
        () = shutdown.wait() => {}
    }
    match tokio::time::timeout(grace, task).await {
        Ok(output) => Some(output),
        Err(_) => {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "in-flight work did not finish within the grace period, exiting"
            );
            None
        }
    }
}
