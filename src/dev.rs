//! The embedded development issuer behind `mcp-authz dev` and `mcp-authz token`: a fresh ES256
//! key per run, its discovery document and JWKS (served on the admin port), and token minting.
//! NOT FOR PRODUCTION: anyone who can read the state file can mint tokens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{Config, IssuerConfig, Listen, ServerConfig};

pub const DEV_SERVER_ID: &str = "demo";
/// Matches the listener of `deploy/envoy/envoy.yaml`.
pub const DEV_RESOURCE: &str = "http://127.0.0.1:10000/mcp";
/// What the dev token carries by default: enough for the session and the weather tools of the
/// shipped policies, not for the file or admin tools (try those to see a step-up 403).
pub const DEV_SCOPES: [&str; 2] = ["mcp:connect", "mcp:tools:weather"];
/// What the sample server advertises; the step-up candidates.
pub const DEV_SCOPES_SUPPORTED: [&str; 4] = [
    "mcp:connect",
    "mcp:tools:weather",
    "mcp:tools:files",
    "mcp:tools:admin",
];
pub const DEV_TENANT: &str = "acme";

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("cannot generate a signing key")]
    KeyGeneration,
    #[error("cannot use the signing key: {0}")]
    Key(String),
    #[error("`{path}`: {message}")]
    State { path: PathBuf, message: String },
}

/// The dev issuer's signing key and identity. Persisted so `mcp-authz token` can mint.
#[derive(Serialize, Deserialize)]
pub struct DevIssuer {
    pub issuer: String,
    pub kid: String,
    pub audience: String,
    /// PKCS#8 DER, base64.
    private_key: String,
}

/// What to put in a minted token.
#[derive(Debug, Clone)]
pub struct Mint {
    pub subject: String,
    pub scopes: Vec<String>,
    pub tenant: Option<String>,
    pub client_id: String,
    pub groups: Vec<String>,
    pub audience: Option<String>,
    pub lifetime: Duration,
}

impl Default for Mint {
    fn default() -> Self {
        Self {
            subject: "dev-user".into(),
            scopes: DEV_SCOPES.iter().map(|s| s.to_string()).collect(),
            tenant: Some(DEV_TENANT.into()),
            client_id: "mcp-authz-dev-client".into(),
            groups: Vec::new(),
            audience: None,
            lifetime: Duration::from_secs(3600),
        }
    }
}

impl DevIssuer {
    pub fn generate(issuer: String, audience: String) -> Result<Self, DevError> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| DevError::KeyGeneration)?;
        let der = pair.to_pkcs8v1().map_err(|_| DevError::KeyGeneration)?;
        let mut kid = [0u8; 8];
        aws_lc_rs::rand::fill(&mut kid).map_err(|_| DevError::KeyGeneration)?;
        Ok(Self {
            issuer,
            kid: format!("dev-{}", URL_SAFE_NO_PAD.encode(kid)),
            audience,
            private_key: STANDARD.encode(der.as_ref()),
        })
    }

    fn encoding_key(&self) -> Result<EncodingKey, DevError> {
        let der = STANDARD
            .decode(&self.private_key)
            .map_err(|e| DevError::Key(e.to_string()))?;
        Ok(EncodingKey::from_ec_der(&der))
    }

    pub fn public_jwk(&self) -> Result<Value, DevError> {
        let mut jwk = Jwk::from_encoding_key(&self.encoding_key()?, Algorithm::ES256)
            .map_err(|e| DevError::Key(e.to_string()))?;
        jwk.common.key_id = Some(self.kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
        serde_json::to_value(jwk).map_err(|e| DevError::Key(e.to_string()))
    }

    pub fn jwks(&self) -> Result<Value, DevError> {
        Ok(json!({ "keys": [self.public_jwk()?] }))
    }

    /// RFC 8414 metadata; also served as OpenID Connect discovery.
    pub fn metadata(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/jwks.json", self.issuer),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": DEV_SCOPES_SUPPORTED,
        })
    }

    /// Mints an RFC 9068 access token.
    pub fn mint(&self, m: &Mint) -> Result<String, DevError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut jti = [0u8; 12];
        aws_lc_rs::rand::fill(&mut jti).map_err(|_| DevError::KeyGeneration)?;
        let mut claims = json!({
            "iss": self.issuer,
            "sub": m.subject,
            "aud": m.audience.as_deref().unwrap_or(&self.audience),
            "client_id": m.client_id,
            "scope": m.scopes.join(" "),
            "iat": now,
            "exp": now + m.lifetime.as_secs(),
            "jti": URL_SAFE_NO_PAD.encode(jti),
        });
        if let Some(obj) = claims.as_object_mut() {
            if let Some(t) = &m.tenant {
                obj.insert("tenant".into(), json!(t));
            }
            if !m.groups.is_empty() {
                obj.insert("groups".into(), json!(m.groups));
            }
        }
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding_key()?)
            .map_err(|e| DevError::Key(e.to_string()))
    }

    /// Writes the state file readable by the owner only.
    pub fn save(&self, path: &Path) -> Result<(), DevError> {
        let err = |message: String| DevError::State {
            path: path.to_owned(),
            message,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| err(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            #[cfg(unix)]
            use std::os::unix::fs::OpenOptionsExt;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            opts.mode(0o600);
            let mut f = opts.open(&tmp).map_err(|e| err(e.to_string()))?;
            f.write_all(text.as_bytes())
                .map_err(|e| err(e.to_string()))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }

    pub fn load(path: &Path) -> Result<Self, DevError> {
        let err = |message: String| DevError::State {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(format!(
                "{e} (is `mcp-authz dev` running? it writes this file)"
            ))
        })?;
        serde_json::from_str(&text).map_err(|e| err(e.to_string()))
    }
}

/// The shipped `policies/`, embedded so `mcp-authz dev` runs anywhere.
const EMBEDDED_POLICIES: [(&str, &str); 6] = [
    (
        "schema.cedarschema",
        include_str!("../policies/schema.cedarschema"),
    ),
    ("session.cedar", include_str!("../policies/session.cedar")),
    ("tools.cedar", include_str!("../policies/tools.cedar")),
    ("guards.cedar", include_str!("../policies/guards.cedar")),
    ("entities.json", include_str!("../policies/entities.json")),
    ("tests.yaml", include_str!("../policies/tests.yaml")),
];

/// The policy directory for `dev`: `./policies` when it holds a schema (running from a
/// checkout, so edits there hot-reload), else a fresh copy of the embedded ones in `state_dir`.
pub fn dev_policies(state_dir: &Path) -> Result<PathBuf, DevError> {
    let local = PathBuf::from("policies");
    if local.join("schema.cedarschema").is_file() {
        return Ok(local);
    }
    let dir = state_dir.join("policies");
    let err = |message: String| DevError::State {
        path: dir.clone(),
        message,
    };
    std::fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
    for (name, text) in EMBEDDED_POLICIES {
        std::fs::write(dir.join(name), text).map_err(|e| err(e.to_string()))?;
    }
    Ok(dir)
}

/// Where `dev` writes and `token` reads the issuer state by default.
pub fn default_state_path() -> PathBuf {
    std::env::temp_dir()
        .join("mcp-authz-dev")
        .join("issuer.json")
}

/// The configuration `mcp-authz dev` serves: one issuer (itself, discovered over HTTP like a
/// real IdP) and one protected server.
pub fn dev_config(
    grpc: SocketAddr,
    admin: SocketAddr,
    admin_grpc: SocketAddr,
    resource: &str,
    policies: &std::path::Path,
) -> Config {
    let issuer = format!("http://{admin}");
    Config {
        cache: Default::default(),
        // Nothing health-checks a development instance: Ctrl-C stops it without a drain delay.
        shutdown: crate::config::Shutdown::immediate(Duration::from_secs(2)),
        overload: Default::default(),
        listen: Listen {
            grpc,
            admin,
            admin_grpc,
            tls: None,
        },
        issuers: vec![IssuerConfig {
            issuer: issuer.clone(),
            jwks_uri: None,
            algorithms: vec![Algorithm::ES256],
            hmac_secret: None,
            typ: Default::default(),
            leeway: Duration::from_secs(30),
            claims: crate::config::ClaimMapping {
                tenant: Some(Some("tenant".into())),
                ..Default::default()
            },
            key_refresh: Default::default(),
            allow_insecure_http: false,
            introspection: None,
            preset: None,
            client_ids: Vec::new(),
            required_claims: Default::default(),
            require_client_id: None,
            audience_rule: None,
            discovery: None,
        }],
        servers: vec![ServerConfig {
            id: DEV_SERVER_ID.into(),
            resource: resource.into(),
            authorization_servers: vec![issuer],
            scopes_supported: DEV_SCOPES_SUPPORTED.iter().map(|s| s.to_string()).collect(),
            challenge_scopes: vec!["mcp:connect".into()],
            step_up: Default::default(),
            matching: crate::config::MatchConfig {
                hosts: Some(vec!["*".into()]),
                path_prefix: None,
            },
            tenant: Some(DEV_TENANT.into()),
            tenant_from: None,
            list_filter: Default::default(),
            token_binding: Default::default(),
            audiences: Vec::new(),
            upstream_identity: None,
            policies: Default::default(),
        }],
        policies: crate::config::PoliciesConfig {
            dir: policies.to_owned(),
            shadow_dir: None,
        },
        identity_headers: Default::default(),
        limits: Default::default(),
        // Development: log every decision, allows included.
        decision_log: crate::config::DecisionLog {
            allow_sample_rate: 1.0,
            ..Default::default()
        },
        dpop: Default::default(),
        upstream_identity: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_token_verifies_against_published_jwk() {
        let dev = DevIssuer::generate("http://127.0.0.1:9090".into(), DEV_RESOURCE.into()).unwrap();
        let token = dev.mint(&Mint::default()).unwrap();
        let jwks = dev.jwks().unwrap();
        let (set, _) =
            crate::keys::KeySet::from_jwks(jwks.to_string().as_bytes(), &[Algorithm::ES256])
                .unwrap();
        assert_eq!(set.len(), 1);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(dev.kid.as_str()));
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    }

    #[test]
    fn state_round_trip_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("issuer.json");
        let dev = DevIssuer::generate("http://x".into(), DEV_RESOURCE.into()).unwrap();
        dev.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0);
        }
        let back = DevIssuer::load(&path).unwrap();
        assert_eq!(back.kid, dev.kid);
        assert!(DevIssuer::load(&dir.path().join("missing")).is_err());
    }
}
