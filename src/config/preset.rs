//! Identity-provider presets (`issuers[].preset`): the defaults each provider's access tokens
//! need (claim mapping, `typ`, how an access token is told from an ID token, the audience rule,
//! where discovery looks). A preset only fills what the issuer entry leaves unset; every value
//! written in `issuers[]` wins. docs/identity-providers.md has the provider-side setup.

use serde::Deserialize;

use super::issuer::{AudienceRule, Discovery, TypPolicy};

/// A provider whose token format this service knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// Okta custom authorization servers (`https://{domain}/oauth2/{id}`); the org
    /// authorization server's access tokens are for Okta's own APIs and cannot be validated.
    Okta,
    /// Microsoft Entra ID, v1 (`https://sts.windows.net/{tid}/`) and v2
    /// (`https://login.microsoftonline.com/{tid}/v2.0`) access tokens.
    Entra,
    /// Auth0, both access token profiles (`Auth0` and `RFC 9068`).
    Auth0,
    /// Amazon Cognito user pools (`https://cognito-idp.{region}.amazonaws.com/{pool}`).
    Cognito,
    /// Keycloak realms (`https://{host}/realms/{realm}`).
    Keycloak,
}

/// What a preset sets. Claim names starting with `/` are JSON Pointers (RFC 6901).
#[derive(Debug, PartialEq, Eq)]
pub struct Defaults {
    pub subject: &'static str,
    pub scopes: &'static [&'static str],
    pub tenant: Option<&'static str>,
    pub groups: Option<&'static str>,
    pub client_id: &'static [&'static str],
    pub typ: TypPolicy,
    /// Claims an access token of this provider always has with exactly this value, and its ID
    /// tokens never do.
    pub required_claims: &'static [(&'static str, &'static str)],
    /// The provider's access tokens always name their client, its ID tokens never do (Okta
    /// `cid`, Entra `azp`/`appid`): a token without one is not an access token.
    pub require_client_id: bool,
    pub audience_rule: AudienceRule,
    pub discovery: Discovery,
}

/// The defaults without a preset: RFC 9068 claim names and checks.
pub const GENERIC: Defaults = Defaults {
    subject: "sub",
    scopes: &["scope", "scp"],
    tenant: None,
    groups: Some("groups"),
    client_id: &["client_id", "azp"],
    typ: TypPolicy::Strict,
    required_claims: &[],
    require_client_id: false,
    audience_rule: AudienceRule::Resource,
    discovery: Discovery::Auto,
};

// === impl Preset ===

impl Preset {
    pub fn defaults(self) -> &'static Defaults {
        match self {
            Preset::Okta => &OKTA,
            Preset::Entra => &ENTRA,
            Preset::Auth0 => &AUTH0,
            Preset::Cognito => &COGNITO,
            Preset::Keycloak => &KEYCLOAK,
        }
    }
}

/// Okta custom authorization server access tokens: no `typ` header, `scp` an array, the client
/// in `cid`, the Okta user id in `uid`; the audience is the authorization server's configured
/// audience (set it to the resource URI). ID tokens have no `cid` and `aud` = the client id.
/// <https://developer.okta.com/docs/api/openapi/okta-oauth/guides/overview/>
const OKTA: Defaults = Defaults {
    subject: "sub",
    scopes: &["scp"],
    tenant: None,
    groups: Some("groups"),
    client_id: &["cid"],
    typ: TypPolicy::Relaxed,
    required_claims: &[],
    require_client_id: true,
    audience_rule: AudienceRule::Resource,
    // Okta serves its RFC 8414 document at `{issuer}/.well-known/oauth-authorization-server`
    // (appended, not the RFC 8414 s3.1 inserted form): only the OIDC location is where this
    // service would look.
    discovery: Discovery::Oidc,
};

/// Entra ID access tokens: `typ: JWT`; `scp` a space-separated string (delegated), `roles` an
/// array (app roles; the only permissions of an app-only token); `tid` the tenant; `azp` (v2)
/// or `appid` (v1) the client, which ID tokens never carry; `oid` the user's object id, stable
/// across applications, where `sub` is pairwise per application.
/// <https://learn.microsoft.com/en-us/entra/identity-platform/access-token-claims-reference>
const ENTRA: Defaults = Defaults {
    subject: "oid",
    scopes: &["scp", "roles"],
    tenant: Some("tid"),
    groups: Some("roles"),
    client_id: &["azp", "appid"],
    typ: TypPolicy::Relaxed,
    required_claims: &[],
    require_client_id: true,
    // v2 tokens name the API's client id (a GUID), v1 tokens its application ID URI: list
    // them in `servers[].audiences`.
    audience_rule: AudienceRule::Resource,
    // Entra publishes OpenID discovery only.
    discovery: Discovery::Oidc,
};

/// Auth0 access tokens: `typ: JWT` with the Auth0 profile (client in `azp`), `at+jwt` with the
/// RFC 9068 profile (client in `client_id`); `scope` a string; RBAC `permissions` an array.
/// ID tokens have `aud` = the client id and neither client claim.
/// <https://auth0.com/docs/secure/tokens/access-tokens/access-token-profiles>
const AUTH0: Defaults = Defaults {
    subject: "sub",
    scopes: &["scope"],
    tenant: None,
    groups: Some("permissions"),
    client_id: &["client_id", "azp"],
    typ: TypPolicy::Relaxed,
    required_claims: &[],
    require_client_id: true,
    audience_rule: AudienceRule::Resource,
    discovery: Discovery::Oidc,
};

/// Cognito user pool access tokens: no `typ` header, no `aud`, `token_use: access` (ID tokens
/// say `id`), the app client in `client_id`, groups in `cognito:groups`.
/// <https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-access-token.html>
const COGNITO: Defaults = Defaults {
    subject: "sub",
    scopes: &["scope"],
    tenant: None,
    groups: Some("cognito:groups"),
    client_id: &["client_id"],
    typ: TypPolicy::Relaxed,
    required_claims: &[("token_use", "access")],
    require_client_id: true,
    audience_rule: AudienceRule::ClientId,
    discovery: Discovery::Oidc,
};

/// Keycloak access tokens: `typ: JWT` header, a `typ` claim `Bearer` (`ID` in ID tokens),
/// realm roles in `realm_access.roles`, the client in `azp`.
/// <https://www.keycloak.org/docs/latest/server_admin/#_audience>
const KEYCLOAK: Defaults = Defaults {
    subject: "sub",
    scopes: &["scope"],
    tenant: None,
    groups: Some("/realm_access/roles"),
    client_id: &["azp"],
    typ: TypPolicy::Relaxed,
    required_claims: &[("typ", "Bearer")],
    require_client_id: true,
    audience_rule: AudienceRule::Resource,
    // Keycloak serves RFC 8414 metadata appended to the realm URL, not in the inserted form.
    discovery: Discovery::Oidc,
};
