"""The official MCP Python SDK client doing its OWN OAuth (client credentials) flow.

Usage: py_client.py URL CLIENT_ID CLIENT_SECRET [SCOPE]

  URL    the MCP endpoint through Envoy, e.g. http://127.0.0.1:18000/mcp
  SCOPE  the scope the SDK's ClientCredentialsOAuthProvider is constructed with (default
         "mcp:connect mcp:tools:weather"; "" for none). Note: on a 401 the SDK replaces it with
         the challenge's scope (mcp/client/auth/oauth2.py, `_auth_flow`, "Step 3").
  env OAUTH_ISSUER  passed as `issuer` (the issuer the credentials belong to); without it the
         SDK emits an MCPDeprecationWarning.

Nothing but the SDK talks OAuth here: the script hands the SDK's ClientCredentialsOAuthProvider
to an httpx2.AsyncClient (as `auth`) whose transport records every request, then connects, lists
tools, calls get_forecast (needs mcp:tools:weather) and read_file (needs mcp:tools:files), then
tools/list and get_forecast again (does the token after the step-up still cover them?).
Prints ONE JSON object on stdout, the same shape as ts_client.mjs:
  {sdk, configured_scope, connect, tools, forecast, read_file, tools_after, forecast_after,
   final_token_scope, exchanges, token_requests, errors}
Exits 0 when the script ran to the end, whatever the outcome of each step.
"""

import asyncio
import base64
import json
import os
import sys
import warnings
from urllib.parse import parse_qs

import httpx2
from mcp import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken


class MemoryStorage:
    """TokenStorage kept in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def jwt_scope(authorization: str | None):
    if not authorization or not authorization.lower().startswith("bearer "):
        return None, False
    token = authorization.split(" ", 1)[1].strip()
    try:
        part = token.split(".")[1]
        payload = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return payload.get("scope"), True
    except Exception:
        return "opaque", True


class RecordingTransport(httpx2.AsyncBaseTransport):
    """Records every request the SDK sends (MCP and OAuth alike)."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.exchanges: list[dict] = []
        self.token_requests: list[dict] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        entry: dict = {"method": request.method, "url": str(request.url)}
        scope, has_bearer = jwt_scope(request.headers.get("authorization"))
        if has_bearer:
            entry["token_scope"] = scope
        body = request.content if request.method == "POST" else b""
        token_request = None
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            if "grant_type" in form:
                basic = request.headers.get("authorization", "").startswith("Basic ")
                token_request = {
                    "url": str(request.url),
                    "grant_type": form.get("grant_type"),
                    "scope": form.get("scope"),
                    "resource": form.get("resource"),
                    "client_auth": "client_secret_basic"
                    if basic
                    else ("client_secret_post" if "client_secret" in form else "none"),
                }
                self.token_requests.append(token_request)
        elif body.startswith(b"{"):
            try:
                msg = json.loads(body)
                entry["rpc"] = [m.get("method") for m in msg] if isinstance(msg, list) else msg.get("method")
            except ValueError:
                pass
        self.exchanges.append(entry)
        try:
            response = await self.inner.handle_async_request(request)
        except Exception as e:
            entry["error"] = repr(e)
            raise
        entry["status"] = response.status_code
        if "www-authenticate" in response.headers:
            entry["www_authenticate"] = response.headers["www-authenticate"]
        if token_request is not None:
            token_request["status"] = response.status_code
            content = await response.aread()
            try:
                parsed = json.loads(content)
                token_request["granted_scope"] = parsed.get("scope")
                if "error" in parsed:
                    token_request["error"] = parsed["error"]
            except ValueError:
                pass
            response = httpx2.Response(
                status_code=response.status_code, headers=response.headers, content=content, request=request
            )
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def error_of(e: BaseException) -> dict:
    # anyio task groups wrap errors; report the innermost ones.
    if isinstance(e, BaseExceptionGroup):
        return {"error": type(e).__name__, "causes": [error_of(x) for x in e.exceptions]}
    return {"error": type(e).__name__, "message": str(e)}


def text_of(result) -> dict:
    return {
        "is_error": bool(getattr(result, "is_error", False)),
        "text": [c.text for c in result.content if hasattr(c, "text")],
    }


async def main(url: str, client_id: str, client_secret: str, scope: str | None) -> None:
    storage = MemoryStorage()
    issuer = os.environ.get("OAUTH_ISSUER")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        provider = ClientCredentialsOAuthProvider(
            server_url=url,
            storage=storage,
            client_id=client_id,
            client_secret=client_secret,
            scope=scope,
            issuer=issuer,
        )
    recorder = RecordingTransport()
    report: dict = {"sdk": "mcp (Python) 2.3.0", "configured_scope": scope}
    errors: list[str] = [f"warning: {w.message}" for w in caught]
    http = httpx2.AsyncClient(auth=provider, transport=recorder, timeout=10)
    try:
        async with http:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                report["connect"] = "ok"
                for name, call in (
                    ("tools", lambda: client.list_tools()),
                    ("forecast", lambda: client.call_tool("get_forecast", {"city": "Paris"})),
                    ("read_file", lambda: client.call_tool("read_file", {"path": "/srv/shared/a.txt"})),
                    # After the step-up: does the token still cover what worked before?
                    ("tools_after", lambda: client.list_tools()),
                    ("forecast_after", lambda: client.call_tool("get_forecast", {"city": "Paris"})),
                ):
                    try:
                        result = await call()
                        report[name] = (
                            sorted(t.name for t in result.tools) if name.startswith("tools") else text_of(result)
                        )
                    except Exception as e:
                        report[name] = error_of(e)
    except BaseException as e:  # connect failed, or closing failed
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        if "connect" not in report:
            report["connect"] = error_of(e)
        else:
            errors.append(f"close: {error_of(e)}")
    tokens = storage.tokens
    report["final_token_scope"] = jwt_scope(f"Bearer {tokens.access_token}")[0] if tokens else None
    report["exchanges"] = recorder.exchanges
    report["token_requests"] = recorder.token_requests
    report["errors"] = errors
    print(json.dumps(report))


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    scope_arg = args[3] if len(args) > 3 else "mcp:connect mcp:tools:weather"
    asyncio.run(main(args[0], args[1], args[2], scope_arg or None))
