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
    pub claims: Claims,
}

/// Every claim of a token, kept as one compact JSON object text. A verified token lives in the
/// token cache for its whole lifetime, and a parsed `Map` costs several times the text (an
/// allocation per name and per string value, plus the index); the claims are read as a whole
/// only when the Cedar principal is built (once per token) and when the decision log includes
/// them, so the text is the one form kept.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Claims(Box<str>);

// === impl Claims ===

impl Claims {
    /// The claims as a JSON object text.
    pub fn as_json(&self) -> &str {
        if self.0.is_empty() { "{}" } else { &self.0 }
    }

    /// The claims parsed again. The text was written from a `Map` (see `From`), so it parses;
    /// should it not, no claims are better than a panic.
    pub fn to_map(&self) -> Map<String, Value> {
        serde_json::from_str(self.as_json()).unwrap_or_default()
    }
}

impl From<&Map<String, Value>> for Claims {
    fn from(map: &Map<String, Value>) -> Self {
        // Serializing a `Map` of `Value`s cannot fail (string keys, no non-finite floats).
        Self(
            serde_json::to_string(map)
                .unwrap_or_default()
                .into_boxed_str(),
        )
    }
}

impl From<Map<String, Value>> for Claims {
    fn from(map: Map<String, Value>) -> Self {
        Self::from(&map)
    }
}
