// A real OpenID provider (node-oidc-provider) for the OAuth end-to-end runs.
//
// Usage: node provider.mjs PORT
//
// Issuer: http://127.0.0.1:PORT (exactly, no trailing slash). node-oidc-provider 9 serves its
// metadata at both /.well-known/oauth-authorization-server (RFC 8414) and
// /.well-known/openid-configuration (OIDC Discovery); both SDKs and mcp-authz take the RFC 8414 one.
//
// Grant: client_credentials only. Clients (client_secret_basic):
//   ts-client / ts-secret, py-client / py-secret,
//   allowed scopes: mcp:connect mcp:tools:weather mcp:tools:files.
// A token request with `resource=<absolute URL>` (RFC 8707) gets a JWT access token (RFC 9068,
// header typ at+jwt) with aud = the resource, iss = the issuer, client_id, sub = client_id,
// scope = (requested scopes) ∩ (client's allowed scopes), plus `tenant: "acme"`; signed with the
// provider's RS256 key (ES256 with ACCESS_TOKEN_ALG=ES256), both published in its JWKS.
// Scopes outside the client's allowance are dropped silently if unknown to the provider (e.g.
// mcp:tools:admin; RFC 6749 s3.3 lets the AS grant less than asked; the response's `scope` says
// what was granted).
// A request without `scope` gets DEFAULT_SCOPE (env, default "mcp:connect").
// A request without `resource` gets an opaque token (useless at mcp-authz), as node-oidc-provider
// only issues JWTs for a resource server.
//
// DPoP (RFC 9449) is on: a token request with a `DPoP` proof header gets a token bound to the
// proof's key (`cnf.jkt`), `token_type: DPoP`.
//
// Opaque tokens and introspection (RFC 7662), for tests/introspection.rs:
//   opaque-client / opaque-secret (client_secret_basic, same scopes) always gets opaque access
//   tokens (accessTokenFormat 'opaque'), for whatever resource it asks; it may revoke them at
//   /token/revocation (RFC 7009).
//   The resource server's own credentials for /token/introspection:
//     rs-basic / rs-basic-secret (client_secret_basic), rs-post / rs-post-secret
//     (client_secret_post), and rs-jwt (private_key_jwt) when RS_JWT_JWKS (env, a JWKS JSON with
//     its public key) is set.
//   The introspection answer of a client_credentials token has no `sub` (no account): map the
//   subject from `client_id`.
//
// Each token request is logged to stderr as one JSON line {"token_request": {...}}.
// Prints one line on stdout when listening: "provider listening on http://127.0.0.1:PORT".

import * as crypto from 'node:crypto';

import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node provider.mjs PORT');
  process.exit(64);
}
const issuer = `http://127.0.0.1:${port}`;
const MCP_SCOPES = 'mcp:connect mcp:tools:weather mcp:tools:files';
const DEFAULT_SCOPE = process.env.DEFAULT_SCOPE ?? 'mcp:connect';
const ACCESS_TOKEN_ALG = process.env.ACCESS_TOKEN_ALG ?? 'RS256';

function jwk(type, opts, kid, alg) {
  const { privateKey } = crypto.generateKeyPairSync(type, opts);
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}
const keys = [
  jwk('rsa', { modulusLength: 2048 }, 'rs256-1', 'RS256'),
  jwk('ec', { namedCurve: 'P-256' }, 'es256-1', 'ES256'),
];

const client = (id, secret) => ({
  client_id: id,
  client_secret: secret,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
  scope: MCP_SCOPES,
});

const OPAQUE_CLIENTS = new Set(['opaque-client']);
const resourceServerClients = [
  client('rs-basic', 'rs-basic-secret'),
  { ...client('rs-post', 'rs-post-secret'), token_endpoint_auth_method: 'client_secret_post' },
];
if (process.env.RS_JWT_JWKS) {
  const { client_secret: _unused, ...rsJwt } = client('rs-jwt', '');
  resourceServerClients.push({
    ...rsJwt,
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: JSON.parse(process.env.RS_JWT_JWKS),
  });
}

const provider = new Provider(issuer, {
  clients: [
    client('ts-client', 'ts-secret'),
    client('py-client', 'py-secret'),
    client('opaque-client', 'opaque-secret'),
    ...resourceServerClients,
  ],
  jwks: { keys },
  // A client's `scope` may only name scopes listed here. A listed scope the client is not allowed
  // is refused (invalid_scope); an unlisted one (mcp:tools:admin) is filtered out by the resource
  // server's scope list below.
  scopes: ['openid', ...MCP_SCOPES.split(' ')],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    // RFC 9449: a token request carrying a DPoP proof gets a DPoP-bound access token (`cnf.jkt`
    // in the JWT or in the introspection answer, `token_type: DPoP`); one without gets a Bearer
    // token as before.
    dPoP: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf,
      useGrantedResource: async () => false,
      getResourceServerInfo: async (ctx, resourceIndicator, oidcClient) => {
        const params = ctx.oidc.params;
        ctx.state.requested = { scope: params.scope ?? null, resource: resourceIndicator };
        // RFC 6749 s3.3: no scope requested -> the AS's pre-defined default. This hook runs before
        // the client_credentials grant reads the requested scopes, so the default is applied here.
        if (params.grant_type === 'client_credentials' && !params.scope) {
          params.scope = DEFAULT_SCOPE;
        }
        return {
          scope: oidcClient.scope ?? '',
          audience: resourceIndicator,
          accessTokenTTL: 600,
          accessTokenFormat: OPAQUE_CLIENTS.has(oidcClient.clientId) ? 'opaque' : 'jwt',
          jwt: { sign: { alg: ACCESS_TOKEN_ALG } },
        };
      },
    },
  },
  extraTokenClaims: async () => ({ tenant: 'acme' }),
  // Only client_credentials is used; keep the discovery document honest.
  responseTypes: ['none'],
});

// Log every token request and its outcome.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.method === 'POST' && ctx.path === '/token') {
    const body = ctx.body && typeof ctx.body === 'object' ? ctx.body : {};
    const line = {
      token_request: {
        client_id: ctx.oidc?.client?.clientId ?? null,
        grant_type: ctx.oidc?.params?.grant_type ?? null,
        requested_scope: ctx.state.requested ? ctx.state.requested.scope : (ctx.oidc?.params?.scope ?? null),
        resource: ctx.state.requested ? ctx.state.requested.resource : (ctx.oidc?.params?.resource ?? null),
        status: ctx.status,
        granted_scope: ctx.status === 200 ? (body.scope ?? null) : null,
        error: body.error ?? null,
        error_description: body.error_description ?? null,
      },
    };
    console.error(JSON.stringify(line));
  }
});

provider.on('server_error', (_ctx, err) => console.error('server_error', err));

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`provider listening on ${issuer}`);
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close();
    process.exit(0);
  });
}
