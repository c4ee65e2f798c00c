//! Who a request speaks for, however that was established (today a verified JWT access token;
//! an introspected opaque token would produce the same shape). The policy layer reads this and
//! nothing of how it was verified.

use serde_json::{Map, Value};

/// The caller's identity, with the claims mapped per the issuer's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
    pub groups: Vec<String>,
    pub expires_at: i64,
    /// Every claim, for policies in later stages. Never logged or forwarded as a whole.
    pub claims: Map<String, Value>,
}
