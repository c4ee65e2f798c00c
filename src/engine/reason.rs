//! How a check ended: one fixed set of reasons, each with its metric labels. The engine picks
//! one per check; `respond` turns it into a status, `log` names it in the decision line.

/// Why a check ended the way it did. Fixed set: it is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Allowed,
    Metadata,
    NoToken,
    InvalidRequest,
    InvalidToken,
    NoMatchingServer,
    Unavailable,
    /// The MCP body is not an acceptable JSON-RPC message (400, 405).
    BadMcpRequest,
    /// Envoy truncated the body (413).
    PayloadTooLarge,
    /// Compressed body or wrong content type (415).
    UnsupportedMediaType,
    /// Policies deny and more scopes would allow (403 insufficient_scope).
    InsufficientScope,
    /// Policies deny, and no scope would change that (403).
    PolicyDeny,
    /// A policy failed to evaluate or the request could not be built: denied (403).
    PolicyError,
    /// The DPoP proof is missing, malformed, replayed or does not match (401, RFC 9449 s7.1).
    InvalidDpopProof,
    /// The DPoP proof lacks a current server nonce (401 `use_dpop_nonce`, RFC 9449 s9).
    UseDpopNonce,
}

impl Reason {
    pub const ALL: [Reason; 15] = [
        Reason::Allowed,
        Reason::Metadata,
        Reason::NoToken,
        Reason::InvalidRequest,
        Reason::InvalidToken,
        Reason::NoMatchingServer,
        Reason::Unavailable,
        Reason::BadMcpRequest,
        Reason::PayloadTooLarge,
        Reason::UnsupportedMediaType,
        Reason::InsufficientScope,
        Reason::PolicyDeny,
        Reason::PolicyError,
        Reason::InvalidDpopProof,
        Reason::UseDpopNonce,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::Metadata => "metadata",
            Reason::NoToken => "no_token",
            Reason::InvalidRequest => "invalid_request",
            Reason::InvalidToken => "invalid_token",
            Reason::NoMatchingServer => "no_matching_server",
            Reason::Unavailable => "unavailable",
            Reason::BadMcpRequest => "bad_mcp_request",
            Reason::PayloadTooLarge => "payload_too_large",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::PolicyDeny => "policy_deny",
            Reason::PolicyError => "policy_error",
            Reason::InvalidDpopProof => "invalid_dpop_proof",
            Reason::UseDpopNonce => "use_dpop_nonce",
        }
    }

    /// The `decision` label of `mcp_authz_checks_total`.
    pub fn decision(self) -> &'static str {
        match self {
            Reason::Allowed => "allow",
            Reason::Metadata => "metadata",
            Reason::Unavailable => "error",
            _ => "deny",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    /// The engine indexes its per-reason counters by `Reason as usize`.
    #[test]
    fn all_lists_every_reason_in_declaration_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
        let labels: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), Reason::ALL.len());
    }
}
