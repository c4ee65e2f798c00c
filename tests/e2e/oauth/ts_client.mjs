// The official MCP TypeScript SDK client doing its OWN OAuth (client credentials) flow.
//
// Usage: node ts_client.mjs URL CLIENT_ID CLIENT_SECRET [SCOPE]
//
//   URL     the MCP endpoint through Envoy, e.g. http://127.0.0.1:18000/mcp
//   SCOPE   the scope the SDK's ClientCredentialsProvider is configured with (its `scope`
//           option; default "mcp:connect mcp:tools:weather"); "" configures none (the token
//           request then carries no `scope`).
//   env OAUTH_ISSUER  passed as `expectedIssuer` (the issuer the credentials belong to); without
//           it the SDK warns on stderr that omitting it is deprecated.
//   env TS_STEP_UP_WORKAROUND=replace|union  NOT the SDK's behaviour: when a 403
//           insufficient_scope passes through the recording fetch, set the provider's configured
//           scope to the challenge's scope (replace) or to configured ∪ challenged (union) before
//           the SDK re-authorizes. SDK 1.32.2 itself never feeds the challenged scope to a
//           client_credentials token request (see README); this shows what it would take.
//
// Nothing but the SDK talks OAuth here: the script hands the SDK a ClientCredentialsProvider and
// a recording `fetch`, then connects, lists tools, calls get_forecast (needs mcp:tools:weather)
// and read_file (needs mcp:tools:files: a 403 insufficient_scope step-up unless already held),
// then tools/list and get_forecast again (does the token after the step-up still cover them?).
// Prints ONE JSON object on stdout:
//   {sdk, configured_scope, connect, tools, forecast, read_file, tools_after, forecast_after,
//    final_token_scope, exchanges, token_requests, errors}
// exchanges: every HTTP request the SDK made, in order (method, url, status, www_authenticate,
//   the scope of the bearer token sent, the JSON-RPC method for MCP POSTs).
// token_requests: every token endpoint request (grant_type, scope, resource, auth method,
//   status, granted scope).
// Exits 0 when the script ran to the end, whatever the outcome of each step.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';

const [url, clientId, clientSecret, scopeArg] = process.argv.slice(2);
if (!url || !clientId || !clientSecret) {
  console.error('usage: node ts_client.mjs URL CLIENT_ID CLIENT_SECRET [SCOPE]');
  process.exit(64);
}
const scope = scopeArg === undefined ? 'mcp:connect mcp:tools:weather' : scopeArg || undefined;

const workaround = process.env.TS_STEP_UP_WORKAROUND;
let provider; // set below; used by the workaround only
const exchanges = [];
const tokenRequests = [];
const errors = [];

function jwtScope(authorization) {
  const m = /^Bearer\s+(\S+)$/i.exec(authorization ?? '');
  if (!m) return undefined;
  try {
    const payload = JSON.parse(Buffer.from(m[1].split('.')[1], 'base64url').toString());
    return payload.scope ?? null;
  } catch {
    return 'opaque';
  }
}

function bodyParams(body) {
  if (body instanceof URLSearchParams) return body;
  if (typeof body === 'string' && !body.startsWith('{')) return new URLSearchParams(body);
  return undefined;
}

async function recordingFetch(input, init = {}) {
  const reqUrl = String(input instanceof Request ? input.url : input);
  const method = init.method ?? (input instanceof Request ? input.method : 'GET');
  const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
  const entry = { method, url: reqUrl };
  const tokenScope = jwtScope(headers.get('authorization'));
  if (tokenScope !== undefined) entry.token_scope = tokenScope;
  if (typeof init.body === 'string' && init.body.startsWith('{')) {
    try {
      const msg = JSON.parse(init.body);
      entry.rpc = Array.isArray(msg) ? msg.map((m) => m.method) : msg.method;
    } catch {
      // not JSON-RPC
    }
  }
  const params = bodyParams(init.body);
  let tokenRequest;
  if (params?.get('grant_type')) {
    tokenRequest = {
      url: reqUrl,
      grant_type: params.get('grant_type'),
      scope: params.get('scope'),
      resource: params.get('resource'),
      client_auth: headers.get('authorization')?.startsWith('Basic ')
        ? 'client_secret_basic'
        : params.get('client_secret')
          ? 'client_secret_post'
          : 'none',
    };
    tokenRequests.push(tokenRequest);
  }
  exchanges.push(entry);
  let response;
  try {
    response = await fetch(input, init);
  } catch (e) {
    entry.error = String(e);
    throw e;
  }
  entry.status = response.status;
  const wwwAuth = response.headers.get('www-authenticate');
  if (wwwAuth) entry.www_authenticate = wwwAuth;
  if (workaround && response.status === 403 && /error="insufficient_scope"/.test(wwwAuth ?? '')) {
    const challenged = /scope="([^"]*)"/.exec(wwwAuth)?.[1];
    if (challenged) {
      const held = provider.clientMetadata.scope?.split(' ') ?? [];
      const next = workaround === 'union' ? [...new Set([...held, ...challenged.split(' ')])] : challenged.split(' ');
      provider.clientMetadata.scope = next.join(' ');
      entry.workaround_scope = provider.clientMetadata.scope;
    }
  }
  if (tokenRequest) {
    tokenRequest.status = response.status;
    try {
      const body = await response.clone().json();
      tokenRequest.granted_scope = body.scope ?? null;
      if (body.error) tokenRequest.error = body.error;
    } catch {
      // not JSON
    }
  }
  return response;
}

provider = new ClientCredentialsProvider({
  clientId,
  clientSecret,
  scope,
  ...(process.env.OAUTH_ISSUER ? { expectedIssuer: process.env.OAUTH_ISSUER } : {}),
});
const transport = new StreamableHTTPClientTransport(new URL(url), {
  authProvider: provider,
  fetch: recordingFetch,
});
const client = new Client({ name: 'mcp-authz-oauth-e2e-ts', version: '1.0.0' });
client.onerror = (e) => errors.push(`client.onerror: ${e?.message ?? e}`);

const errorOf = (e) => ({ error: e?.constructor?.name ?? 'Error', code: e?.code, message: String(e?.message ?? e) });
const report = { sdk: '@modelcontextprotocol/sdk (TypeScript)', configured_scope: scope ?? null };
if (workaround) report.workaround = workaround;

async function step(name, fn) {
  try {
    report[name] = await fn();
  } catch (e) {
    report[name] = errorOf(e);
  }
}

await step('connect', async () => {
  await client.connect(transport);
  return 'ok';
});
if (report.connect === 'ok') {
  await step('tools', async () => (await client.listTools()).tools.map((t) => t.name).sort());
  await step('forecast', async () => {
    const r = await client.callTool({ name: 'get_forecast', arguments: { city: 'Paris' } });
    return { is_error: r.isError ?? false, text: r.content.filter((c) => c.type === 'text').map((c) => c.text) };
  });
  await step('read_file', async () => {
    const r = await client.callTool({ name: 'read_file', arguments: { path: '/srv/shared/a.txt' } });
    return { is_error: r.isError ?? false, text: r.content.filter((c) => c.type === 'text').map((c) => c.text) };
  });
  // After the step-up: does the token still cover what worked before?
  await step('tools_after', async () => (await client.listTools()).tools.map((t) => t.name).sort());
  await step('forecast_after', async () => {
    const r = await client.callTool({ name: 'get_forecast', arguments: { city: 'Paris' } });
    return { is_error: r.isError ?? false, text: r.content.filter((c) => c.type === 'text').map((c) => c.text) };
  });
}
try {
  await client.close();
} catch (e) {
  errors.push(`close: ${e?.message ?? e}`);
}
report.final_token_scope = jwtScope(`Bearer ${provider.tokens()?.access_token ?? ''}`) ?? null;
report.exchanges = exchanges;
report.token_requests = tokenRequests;
report.errors = errors;
process.stdout.write(`${JSON.stringify(report)}\n`);
process.exit(0);
