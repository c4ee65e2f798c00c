//! mcp-authz: an Envoy external-authorization service for MCP servers.
//!
//! A request flows `grpc` (Envoy's `CheckRequest`) -> `engine` (routing via `resource`,
//! credentials via `bearer`, tokens via `token` and `keys`, DPoP proofs via `dpop`) -> `Decision` -> `grpc`
//! (`CheckResponse`), with `challenge` rendering RFC 6750 / RFC 9728 answers. List responses
//! come back through `grpc::ext_proc` (Envoy's external processing) to `lists`, which keeps
//! only the items the caller may use.

pub mod admin;
pub mod bearer;
pub mod challenge;
pub mod cli;
pub mod config;
pub mod dev;
pub mod dpop;
pub mod engine;
pub mod grpc;
pub mod identity;
pub mod introspection;
pub mod keys;
pub mod lists;
pub mod mcp;
pub mod metrics;
pub mod policy;
pub mod resource;
pub mod server;
pub mod strict_json;
pub mod tls;
pub mod token;
pub mod upstream_identity;

#[cfg(any(test, feature = "test-util"))]
pub mod testutil;
