//! The operator-facing side, on its own ports: `http` (liveness, readiness, Prometheus metrics,
//! PRM documents) and `grpc` (the admin API: status and live policy explain).

pub mod grpc;
pub mod http;
