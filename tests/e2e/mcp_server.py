"""A real MCP server (official Python SDK, Streamable HTTP) for the end-to-end tests.

Usage: mcp_server.py PORT [json]

With `json`, responses are `application/json`; otherwise `text/event-stream` (the SDK's
default).

With MCP_AUTHZ_IDENTITY_ISSUER and MCP_AUTHZ_IDENTITY_AUDIENCE set, the server verifies the
signed upstream identity mcp-authz sends (`x-mcp-authz-identity`) on every request, the way
docs/upstream-identity.md tells an upstream to: the JWKS found through the issuer's discovery
document, then typ, signature, iss, aud and exp. A request without a valid one is refused with
401 before the MCP layer sees it. With MCP_AUTHZ_IDENTITY_LOG also set, each verified token's
claims (or `{"rejected": why}`) are appended to that file as one JSON line. Six tools: two weather tools and two file tools (two scopes, see policies/), one in
the `dangerous` set (forbidden without the break-glass group, whatever the scopes), and
`internal_debug`, which the shipped policies permit to nobody (tests/oauth.rs makes it tenant
`globex`'s tool).
"""

import json
import os
import sys
import urllib.request

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

server = MCPServer("e2e-weather")


@server.tool()
def get_forecast(city: str) -> str:
    """Tomorrow's weather for a city."""
    return f"sunny in {city}"


@server.tool()
def get_alerts(region: str) -> str:
    """Weather alerts for a region."""
    return f"no alerts in {region}"


@server.tool()
def read_file(path: str) -> str:
    """Reads a shared file."""
    return f"contents of {path}"


@server.tool()
def write_file(path: str, content: str) -> str:
    """Writes a shared file."""
    return f"wrote {len(content)} bytes to {path}"


@server.tool()
def delete_everything() -> str:
    """Deletes everything."""
    return "gone"


@server.tool()
def internal_debug() -> str:
    """Another tenant's tool: the shipped policies permit it to nobody; tests/oauth.rs adds
    policies that permit it to tenant globex only."""
    return "debug"


IDENTITY_TYP = "mcp-authz-identity+jwt"


class RequireIdentity:
    """ASGI middleware: every HTTP request must carry a valid signed identity from mcp-authz."""

    def __init__(self, app, issuer, audience, log_path=None):
        import jwt

        self.app = app
        self.jwt = jwt
        self.issuer = issuer
        self.audience = audience
        self.log_path = log_path
        discovery_url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        with urllib.request.urlopen(discovery_url, timeout=10) as r:
            discovery = json.load(r)
        if discovery["issuer"] != issuer:
            raise SystemExit(f"discovery names issuer {discovery['issuer']}, not {issuer}")
        self.header = discovery.get("mcp_authz_identity_header", "x-mcp-authz-identity")
        # Caches the JWKS; fetches it again when a token names a kid it does not have.
        self.jwks = jwt.PyJWKClient(discovery["jwks_uri"], cache_jwk_set=True, lifespan=60)

    def verify(self, token):
        jwt = self.jwt
        if jwt.get_unverified_header(token).get("typ") != IDENTITY_TYP:
            raise jwt.InvalidTokenError("wrong typ")
        key = self.jwks.get_signing_key_from_jwt(token)
        return jwt.decode(
            token,
            key,
            algorithms=["ES256", "EdDSA"],
            audience=self.audience,
            issuer=self.issuer,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
        )

    def log(self, entry):
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(entry) + "\n")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        name = self.header.encode()
        tokens = [v.decode() for k, v in scope["headers"] if k.lower() == name]
        try:
            if len(tokens) != 1:
                raise self.jwt.InvalidTokenError(f"{len(tokens)} identity headers")
            claims = self.verify(tokens[0])
        except Exception as e:  # any failure is a refusal
            self.log({"rejected": f"{type(e).__name__}: {e}"})
            body = json.dumps({"error": "invalid upstream identity"}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            return await send({"type": "http.response.body", "body": body})
        self.log(claims)
        return await self.app(scope, receive, send)


if __name__ == "__main__":
    import uvicorn

    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        json_response=len(sys.argv) > 2 and sys.argv[2] == "json",
        # Envoy forwards the client's Host (127.0.0.1:<envoy port>); the authorizer in front
        # of this server is what the test is about.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    issuer = os.environ.get("MCP_AUTHZ_IDENTITY_ISSUER")
    if issuer:
        app = RequireIdentity(
            app,
            issuer,
            os.environ["MCP_AUTHZ_IDENTITY_AUDIENCE"],
            os.environ.get("MCP_AUTHZ_IDENTITY_LOG"),
        )
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
