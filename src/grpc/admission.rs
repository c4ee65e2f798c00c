//! Admission on the check port: a bound on checks received and not yet answered, and on how long
//! one may wait before it starts. Beyond either, a check is shed with gRPC `UNAVAILABLE` instead
//! of being decided after the proxy stopped waiting (Envoy's timeout is 0.5 s in the shipped
//! configuration): an overloaded instance then answers most checks in time and refuses the rest
//! quickly, rather than answering every one too late.
//!
//! Shedding is never an allow: Envoy retries an `UNAVAILABLE` check on another instance
//! (`retry_policy` in deploy/envoy/envoy.yaml) and, failing that, answers 503 to the client
//! (`failure_mode_allow: false`, `status_on_error: 503`).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Context, Poll, Service};

use crate::config::Overload;
use crate::metrics::Metrics;

/// Why a check was shed. Fixed set: it is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// `overload.max_pending_checks` were already received and not yet answered.
    PendingLimit,
    /// It waited longer than `overload.max_queue_wait` before it could start.
    QueueWait,
}

impl Shed {
    pub const ALL: [Shed; 2] = [Shed::PendingLimit, Shed::QueueWait];

    pub fn as_str(self) -> &'static str {
        match self {
            Shed::PendingLimit => "pending_limit",
            Shed::QueueWait => "queue_wait",
        }
    }
}

/// gRPC health checks are never shed: an overloaded instance that stopped answering them would
/// be marked unhealthy, and its load would move onto the others all at once.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// The list filter's streams (ext_proc) are not shed either: Envoy does not retry them, so a
/// shed stream would be a 500 for a list call whose check was already admitted; they follow
/// such a check one for one.
const LIST_FILTER_PREFIX: &str = "/envoy.service.ext_proc.v3.ExternalProcessor/";

/// The shared counters of one listener.
struct Gate {
    pending: AtomicUsize,
    max_pending: usize,
    max_queue_wait: Duration,
    pending_gauge: IntGauge,
    /// Indexed by `Shed as usize`.
    shed: [IntCounter; 2],
}

/// One request, from its arrival to its answer: counted as pending while it lives.
struct Ticket {
    gate: Arc<Gate>,
    arrived: Instant,
    /// There were already `max_pending` when it arrived.
    over_limit: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.pending.fetch_sub(1, Ordering::Relaxed);
        self.gate.pending_gauge.dec();
    }
}

// === impl Admission ===

/// The tower layer for the check port (`tonic::transport::Server::layer`).
#[derive(Clone)]
pub struct Admission {
    gate: Arc<Gate>,
}

impl Admission {
    pub fn new(overload: &Overload, metrics: &Metrics) -> Self {
        Self {
            gate: Arc::new(Gate {
                pending: AtomicUsize::new(0),
                max_pending: overload.max_pending_checks,
                max_queue_wait: overload.max_queue_wait,
                pending_gauge: metrics.checks_pending(),
                shed: Shed::ALL.map(|s| metrics.checks_shed(s)),
            }),
        }
    }

    /// No bound (the admin gRPC API: an operator's `explain` is not load to shed).
    pub fn unbounded() -> Self {
        let overload = Overload {
            max_pending_checks: usize::MAX,
            max_queue_wait: Duration::MAX,
        };
        Self::new(&overload, &Metrics::unregistered())
    }
}

impl<S> tower_layer::Layer<S> for Admission {
    type Service = Admitted<S>;

    fn layer(&self, inner: S) -> Admitted<S> {
        Admitted {
            inner,
            gate: self.gate.clone(),
            copies: 0,
            ticket: None,
        }
    }
}

// === impl Admitted ===

/// The check port's routes behind the gate.
pub struct Admitted<S> {
    inner: S,
    gate: Arc<Gate>,
    /// How many copies away from the service handed to the server this one is.
    copies: u8,
    /// Set on the copies made for one request.
    ticket: Option<Ticket>,
}

impl<S: Clone> Clone for Admitted<S> {
    /// The arrival of a request. tonic copies the service once per connection, and hyper-util
    /// (`TowerToHyperService`) copies the connection's copy once per request, as the connection
    /// task accepts the HTTP/2 stream; the request's own task calls that copy when the runtime
    /// first runs it. A copy of a copy is therefore a request arriving: it takes a ticket, which
    /// stamps the time and counts the request as pending until its answer is complete. (The
    /// tests in tests/availability.rs fail if this stops holding: no shedding under a burst, or
    /// shedding on a connection that was idle.)
    fn clone(&self) -> Self {
        let copies = self.copies.saturating_add(1);
        let ticket = (copies >= 2).then(|| {
            let before = self.gate.pending.fetch_add(1, Ordering::Relaxed);
            self.gate.pending_gauge.inc();
            Ticket {
                gate: self.gate.clone(),
                arrived: Instant::now(),
                over_limit: before >= self.gate.max_pending,
            }
        });
        Self {
            inner: self.inner.clone(),
            gate: self.gate.clone(),
            copies,
            ticket,
        }
    }
}

impl<S, B> Service<Request<B>> for Admitted<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Response<Body>, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let ticket = self.ticket.take();
        let path = request.uri().path();
        if path.starts_with(HEALTH_PREFIX) || path.starts_with(LIST_FILTER_PREFIX) {
            drop(ticket);
            return Box::pin(self.inner.call(request));
        }
        if let Some(reason) = ticket.as_ref().and_then(|t| self.gate.verdict(t)) {
            self.gate.count(reason);
            drop(ticket);
            return Box::pin(std::future::ready(Ok(shed_response(reason))));
        }
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            drop(ticket);
            response
        })
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Admitted<S> {
    const NAME: &'static str = S::NAME;
}

impl Gate {
    /// Whether a request that is about to start must be shed instead.
    fn verdict(&self, ticket: &Ticket) -> Option<Shed> {
        if ticket.over_limit {
            Some(Shed::PendingLimit)
        } else if ticket.arrived.elapsed() > self.max_queue_wait {
            Some(Shed::QueueWait)
        } else {
            None
        }
    }

    fn count(&self, reason: Shed) {
        if let Some(c) = self.shed.get(reason as usize) {
            c.inc();
        }
    }
}

/// `UNAVAILABLE`, trailers-only: the gRPC status that says "not processed, safe to retry", which
/// Envoy's `retry_policy` (`retry_on: unavailable`) retries and otherwise answers with
/// `status_on_error`.
fn shed_response(reason: Shed) -> Response<Body> {
    let message = match reason {
        Shed::PendingLimit => "overloaded: too many pending checks",
        Shed::QueueWait => "overloaded: the check waited too long to start",
    };
    tonic::Status::unavailable(message).into_http()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_layer::Layer;

    /// A service that answers OK and counts its calls.
    #[derive(Clone, Default)]
    struct Counting(Arc<AtomicUsize>);

    impl Service<Request<()>> for Counting {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<Body>, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Result::Ok(()))
        }
        fn call(&mut self, _: Request<()>) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Result::Ok(Response::new(Body::default())))
        }
    }

    fn grpc_status(r: &Response<Body>) -> Option<&str> {
        r.headers().get("grpc-status").and_then(|v| v.to_str().ok())
    }

    fn check() -> Request<()> {
        Request::builder()
            .uri("/envoy.service.auth.v3.Authorization/Check")
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn requests_beyond_the_pending_bound_are_shed_and_counted() {
        let metrics = Metrics::unregistered();
        let overload = Overload {
            max_pending_checks: 2,
            max_queue_wait: Duration::from_secs(60),
        };
        let inner = Counting::default();
        let connection = Admission::new(&overload, &metrics)
            .layer(inner.clone())
            .clone();
        // Three requests arrive before any starts: the third is over the bound.
        let mut arrived: Vec<_> = (0..3).map(|_| connection.clone()).collect();
        assert_eq!(metrics.checks_pending().get(), 3);
        let mut answers = Vec::new();
        for svc in &mut arrived {
            answers.push(svc.call(check()).await.unwrap());
        }
        assert_eq!(grpc_status(&answers[0]), None);
        assert_eq!(grpc_status(&answers[1]), None);
        assert_eq!(grpc_status(&answers[2]), Some("14"), "UNAVAILABLE");
        assert_eq!(
            inner.0.load(Ordering::SeqCst),
            2,
            "a shed check is not decided"
        );
        assert_eq!(metrics.checks_shed(Shed::PendingLimit).get(), 1);
        assert_eq!(metrics.checks_shed(Shed::QueueWait).get(), 0);
        // Answered requests are no longer pending; the connection's own copy never was.
        drop(arrived);
        assert_eq!(metrics.checks_pending().get(), 0);
        // Health checks are never shed, even over the bound.
        let mut held: Vec<_> = (0..3).map(|_| connection.clone()).collect();
        let health = Request::builder()
            .uri("/grpc.health.v1.Health/Check")
            .body(())
            .unwrap();
        let r = held[2].call(health).await.unwrap();
        assert_eq!(grpc_status(&r), None);
    }

    #[tokio::test]
    async fn a_request_that_waited_too_long_to_start_is_shed() {
        let metrics = Metrics::unregistered();
        let overload = Overload {
            max_pending_checks: 100,
            max_queue_wait: Duration::from_millis(200),
        };
        let inner = Counting::default();
        let connection = Admission::new(&overload, &metrics)
            .layer(inner.clone())
            .clone();
        let mut late = connection.clone();
        // Waiting on the connection does not count: only the time since the request arrived.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut fresh = connection.clone();
        let r = late.call(check()).await.unwrap();
        assert_eq!(grpc_status(&r), Some("14"));
        let r = fresh.call(check()).await.unwrap();
        assert_eq!(grpc_status(&r), None);
        assert_eq!(metrics.checks_shed(Shed::QueueWait).get(), 1);
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
    }
}
