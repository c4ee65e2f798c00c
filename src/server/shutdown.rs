//! Stopping without dropping a check: on the first signal, health turns NOT_SERVING while every
//! listener keeps accepting and answering for `shutdown.drain_delay` (the proxies' health checks
//! need that long to stop sending); then the listeners close and in-flight requests get
//! `shutdown.grace` to finish. A second signal stops at once.

use std::time::Duration;

use futures_util::{Stream, StreamExt};

use super::{Running, ServeError};
use crate::config::Shutdown;

impl Running {
    /// Serves until the first item of `signals` (or until a server fails), then shuts down as
    /// `settings` say. Another item of `signals` while shutting down stops at once.
    pub async fn run_until(
        mut self,
        signals: impl Stream<Item = ()> + Unpin,
        settings: &Shutdown,
    ) -> Result<(), ServeError> {
        let mut signals = signals.fuse();
        // Serving. (A stream that ends without a signal, say none could be registered, leaves
        // the service running rather than stopping it.)
        tokio::select! {
            Some(()) = signals.next() => {}
            r = self.tasks.join_next() => {
                let _ = self.shutdown.send(true);
                return match r {
                    Some(Ok(Err(e))) => Err(e),
                    _ => Ok(()),
                };
            }
        }

        // Draining: NOT_SERVING, still accepting and answering.
        if !settings.drain_delay.is_zero() {
            tracing::info!(
                drain_delay_ms = millis(settings.drain_delay),
                "shutting down: NOT_SERVING, still answering checks during the drain delay"
            );
        }
        let _ = self.draining.send(true);
        self.engine.metrics().set_draining(true);
        tokio::select! {
            _ = tokio::time::sleep(settings.drain_delay) => {}
            Some(()) = signals.next() => return self.stop_now().await,
            r = self.tasks.join_next() => {
                let _ = self.shutdown.send(true);
                return match r {
                    Some(Ok(Err(e))) => Err(e),
                    _ => Ok(()),
                };
            }
        }

        // Stopping: the listeners close, in-flight requests finish within the grace period.
        tracing::info!(
            grace_ms = millis(settings.grace),
            "shutting down: no longer accepting, finishing in-flight checks"
        );
        let _ = self.shutdown.send(true);
        let tasks = &mut self.tasks;
        let drained = async {
            while let Some(r) = tasks.join_next().await {
                if let Ok(Err(e)) = r {
                    return Err(e);
                }
            }
            Ok(())
        };
        tokio::select! {
            r = tokio::time::timeout(settings.grace, drained) => match r {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(
                        grace_ms = millis(settings.grace),
                        "shutdown grace period elapsed with requests still in flight"
                    );
                    self.abort_all().await;
                    Ok(())
                }
            },
            Some(()) = signals.next() => self.stop_now().await,
        }
    }

    /// A second signal: close everything without waiting.
    async fn stop_now(mut self) -> Result<(), ServeError> {
        tracing::warn!("second signal: stopping without waiting for in-flight checks");
        let _ = self.shutdown.send(true);
        self.abort_all().await;
        Ok(())
    }

    /// Aborts the servers and waits until each task is gone, so their listeners are closed
    /// when this returns (an aborted task is only dropped the next time the runtime gets to
    /// it; a port still open after "stopped" made an in-process test flaky).
    async fn abort_all(&mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Stops the service at once: no drain delay, 5 s for in-flight requests (tests).
    pub async fn stop(self) {
        let _ = self
            .run_until(
                futures_util::stream::iter([()]),
                &Shutdown::immediate(Duration::from_secs(5)),
            )
            .await;
    }

    /// Starts shutting down as a signal would, and returns a handle that sends further
    /// signals, and the future that completes when the service has stopped (tests).
    pub fn shut_down_with(
        self,
        settings: Shutdown,
    ) -> (
        tokio::sync::mpsc::UnboundedSender<()>,
        tokio::task::JoinHandle<Result<(), ServeError>>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let _ = tx.send(());
        let signals = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let task = tokio::spawn(async move { self.run_until(signals, &settings).await });
        (tx, task)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// SIGTERM and SIGINT, each time one arrives.
pub fn shutdown_signals() -> impl Stream<Item = ()> + Unpin + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        Box::pin(futures_util::stream::unfold(
            (term, int),
            |(mut term, mut int)| async move {
                tokio::select! {
                    Some(()) = recv(term.as_mut()) => {}
                    Some(()) = recv(int.as_mut()) => {}
                    else => return None,
                }
                Some(((), (term, int)))
            },
        ))
    }
    #[cfg(not(unix))]
    {
        Box::pin(futures_util::stream::unfold((), |()| async {
            tokio::signal::ctrl_c().await.ok()?;
            Some(((), ()))
        }))
    }
}

/// SIGHUP, the signal operators send to ask for a reload (as Prometheus and nginx read it):
/// handled, it reads the configuration file at once instead of ending the process (its
/// default action). Never fires where there is no SIGHUP.
pub fn reload_signals() -> impl Stream<Item = ()> + Unpin + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let hup = signal(SignalKind::hangup())
            .inspect_err(|e| tracing::warn!(error = %e, "SIGHUP not handled"))
            .ok();
        Box::pin(futures_util::stream::unfold(hup, |mut hup| async move {
            recv(hup.as_mut()).await?;
            Some(((), hup))
        }))
    }
    #[cfg(not(unix))]
    {
        futures_util::stream::pending()
    }
}

/// The next delivery of a signal; one that could not be registered never fires.
#[cfg(unix)]
async fn recv(signal: Option<&mut tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Completes on the first SIGINT or SIGTERM (the benchmark's servers).
pub async fn shutdown_signal() {
    let _ = shutdown_signals().next().await;
}
