//! The list filter's gRPC adapter: `envoy.service.ext_proc.v3.ExternalProcessor/Process`, one
//! stream per marked HTTP response (see `lists` and `deploy/envoy/envoy.yaml`).
//!
//! Envoy is configured to send the response headers and then the body in `STREAMED` mode, with
//! ext_authz's dynamic metadata forwarded on each message. Every message gets exactly one answer,
//! in order; the stream is never ended early (Envoy would then pass the rest of the response
//! unprocessed: `external_processor.proto`, "if the server closes the gRPC stream cleanly, then
//! the data plane proceeds without consulting the server"). What cannot be filtered becomes a
//! JSON-RPC error: an immediate 502 at the headers (no caller, unreadable content type), or a
//! replacement body.

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{
    HeaderMap, HeaderValue, HeaderValueOption, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, ImmediateResponse,
    ProcessingRequest, ProcessingResponse, TrailersResponse, body_mutation, processing_request,
    processing_response,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Struct, value::Kind};
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::engine::Engine;
use crate::identity::Identity;
use crate::lists::body::{BodyFilter, Framing};
use crate::lists::{ListCaller, ListError, ListFilter, ListMark, error_message};

/// The namespace ext_authz writes its `CheckResponse.dynamic_metadata` to (fixed by Envoy).
pub const EXT_AUTHZ_NAMESPACE: &str = "envoy.filters.http.ext_authz";

/// `envoy.service.ext_proc.v3.ExternalProcessor` backed by an [`Engine`].
#[derive(Clone)]
pub struct ListService {
    engine: Arc<Engine>,
    max_bytes: usize,
}

impl ListService {
    pub fn new(engine: Arc<Engine>, max_bytes: usize) -> Self {
        Self { engine, max_bytes }
    }
}

type Answers = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for ListService {
    type ProcessStream = Answers;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let this = self.clone();
        tokio::spawn(async move {
            let mut state = State::Waiting;
            while let Some(message) = inbound.next().await {
                let Ok(message) = message else { break };
                let answer = this.answer(&mut state, message);
                if tx.send(Ok(answer)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Where one response stream is.
enum State {
    /// Before the response headers.
    Waiting,
    /// Filtering the body.
    Body {
        filter: Box<ListFilter>,
        body: BodyFilter,
    },
    /// Nothing to filter (not a success) or already answered.
    Done,
}

impl ListService {
    fn answer(&self, state: &mut State, message: ProcessingRequest) -> ProcessingResponse {
        use processing_request::Request as In;
        use processing_response::Response as Out;
        let response = match message.request {
            Some(In::ResponseHeaders(h)) => {
                let headers = (h.headers.as_ref(), h.end_of_stream);
                match self.on_headers(state, &message.metadata_context, headers) {
                    Ok(mutation) => Out::ResponseHeaders(HeadersResponse {
                        response: Some(CommonResponse {
                            header_mutation: mutation,
                            ..Default::default()
                        }),
                    }),
                    Err(immediate) => {
                        *state = State::Done;
                        Out::ImmediateResponse(immediate)
                    }
                }
            }
            Some(In::ResponseBody(b)) => {
                let replacement = self.on_body(state, &b.body, b.end_of_stream);
                Out::ResponseBody(BodyResponse {
                    response: replacement.map(|bytes| CommonResponse {
                        body_mutation: Some(BodyMutation {
                            mutation: Some(if bytes.is_empty() {
                                body_mutation::Mutation::ClearBody(true)
                            } else {
                                body_mutation::Mutation::Body(bytes)
                            }),
                        }),
                        ..Default::default()
                    }),
                })
            }
            // Not asked for by the shipped configuration; answered so Envoy never waits.
            Some(In::RequestHeaders(_)) => Out::RequestHeaders(HeadersResponse::default()),
            Some(In::RequestBody(_)) => Out::RequestBody(BodyResponse::default()),
            Some(In::RequestTrailers(_)) => Out::RequestTrailers(TrailersResponse::default()),
            Some(In::ResponseTrailers(_)) | None => {
                Out::ResponseTrailers(TrailersResponse::default())
            }
        };
        ProcessingResponse {
            response: Some(response),
            ..Default::default()
        }
    }

    /// Reads the caller and the body's framing; `Err` answers at once.
    fn on_headers(
        &self,
        state: &mut State,
        metadata: &Option<envoy_types::pb::envoy::config::core::v3::Metadata>,
        (headers, no_body): (Option<&HeaderMap>, bool),
    ) -> Result<Option<HeaderMutation>, ImmediateResponse> {
        let metrics = self.engine.metrics();
        let fields = metadata
            .as_ref()
            .and_then(|m| m.filter_metadata.get(EXT_AUTHZ_NAMESPACE));
        let caller = match fields.map(caller_from_metadata) {
            Some(Ok(caller)) => caller,
            Some(Err(e)) => return Err(self.refuse("", e, None)),
            None => return Err(self.refuse("", ListError::NoCaller, None)),
        };
        let server = caller.server_id.clone();
        let header = |name: &str| header_value(headers, name);
        let status = header(":status")
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        let framing = Framing::of(
            status,
            header("content-type").as_deref(),
            header("content-encoding").as_deref(),
        );
        let filter = match framing {
            Framing::PassThrough => {
                metrics.list_response(&server, "passed");
                *state = State::Done;
                return Ok(None);
            }
            Framing::Refused(e) => return Err(self.refuse(&server, e, Some(&caller))),
            // A success with a list's content type and no body at all: no list to vouch for.
            Framing::Json | Framing::Sse if no_body => {
                return Err(self.refuse(&server, ListError::Malformed(""), Some(&caller)));
            }
            Framing::Json | Framing::Sse => match self.engine.list_filter(caller) {
                Ok(f) => f,
                Err(e) => return Err(self.refuse(&server, e, None)),
            },
        };
        *state = State::Body {
            filter: Box::new(filter),
            body: BodyFilter::new(framing, self.max_bytes),
        };
        // The body changes length; Envoy drops content-length itself in STREAMED mode, and this
        // says so too. The filtered list is the caller's own: no shared cache may keep it.
        Ok(Some(HeaderMutation {
            set_headers: vec![set("cache-control", "private, no-store")],
            remove_headers: vec!["content-length".to_owned()],
        }))
    }

    /// The replacement for one body chunk; `None` leaves it as it is.
    fn on_body(&self, state: &mut State, chunk: &[u8], end: bool) -> Option<Vec<u8>> {
        let (filter, body) = match state {
            State::Body { filter, body } => (filter, body),
            State::Done => return None,
            // A body before any headers (a configuration that skips them): nothing says whose
            // list this is, so nothing of it passes.
            State::Waiting => {
                return Some(if end {
                    self.engine.metrics().list_response("", "error");
                    error_message(&ListError::NoCaller).into_bytes()
                } else {
                    Vec::new()
                });
            }
        };
        let filter: &ListFilter = filter;
        let caller = filter.caller();
        let mut lists = Vec::new();
        let mut apply = |message: &mut serde_json::Value| {
            lists.extend(filter.apply(message)?);
            Ok(())
        };
        let out = body.push(chunk, end, &mut apply);
        let metrics = self.engine.metrics();
        for (kind, counts) in &lists {
            metrics.list_response(&caller.server_id, "filtered");
            tracing::info!(
                server = %caller.server_id,
                subject = %caller.identity.subject,
                kind = kind.as_str(),
                kept = counts.kept,
                removed = counts.removed,
                "list filtered"
            );
        }
        Some(match out {
            Ok(bytes) => bytes,
            Err(bytes) => {
                if end {
                    metrics.list_response(&caller.server_id, "error");
                    tracing::warn!(server = %caller.server_id, subject = %caller.identity.subject, "list response could not be filtered; replaced by a JSON-RPC error");
                }
                bytes
            }
        })
    }

    /// A 502 carrying a JSON-RPC error, counted and logged.
    fn refuse(&self, server: &str, e: ListError, caller: Option<&ListCaller>) -> ImmediateResponse {
        self.engine.metrics().list_response(server, "error");
        let subject = caller.map_or("", |c| c.identity.subject.as_str());
        tracing::warn!(server, subject, error = %e, "list response refused");
        ImmediateResponse {
            status: Some(HttpStatus { code: 502 }),
            headers: Some(HeaderMutation {
                set_headers: vec![
                    set("content-type", "application/json"),
                    set("cache-control", "no-store"),
                ],
                remove_headers: vec![],
            }),
            body: error_message(&e).into_bytes(),
            ..Default::default()
        }
    }
}

fn set(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            raw_value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// A header's value; Envoy sends ext_proc values in `raw_value`.
fn header_value(headers: Option<&HeaderMap>, name: &str) -> Option<String> {
    let h = headers?
        .headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))?;
    Some(if h.raw_value.is_empty() {
        h.value.clone()
    } else {
        String::from_utf8_lossy(&h.raw_value).into_owned()
    })
}

/// The caller as `grpc::allowed` wrote it into ext_authz's dynamic metadata.
pub fn caller_from_metadata(fields: &Struct) -> Result<ListCaller, ListError> {
    let text = |key: &str| match fields.fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    };
    let need = |key: &str| text(key).ok_or(ListError::NoCaller);
    let mark = ListMark::decode(&need("mcp_list")?).ok_or(ListError::NoCaller)?;
    let groups = match fields.fields.get("groups").and_then(|v| v.kind.as_ref()) {
        Some(Kind::ListValue(list)) => list
            .values
            .iter()
            .map(|v| match &v.kind {
                Some(Kind::StringValue(s)) => Ok(s.clone()),
                _ => Err(ListError::NoCaller),
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
        Some(_) => return Err(ListError::NoCaller),
    };
    let claims = match text("claims") {
        Some(json) => match crate::strict_json::parse(&json, 64) {
            Ok(serde_json::Value::Object(map)) => map.into(),
            _ => return Err(ListError::NoCaller),
        },
        None => Default::default(),
    };
    Ok(ListCaller {
        identity: Identity {
            issuer: need("issuer")?,
            subject: need("subject")?,
            tenant: text("tenant"),
            client_id: text("client_id"),
            scopes: text("scopes")
                .unwrap_or_default()
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            groups,
            expires_at: 0,
            claims,
        },
        server_id: need("server")?,
        server_tenant: need("server_tenant")?,
        protocol_version: text("protocol_version").unwrap_or_default(),
        session_id: text("session_id").unwrap_or_default(),
        mark,
    })
}
