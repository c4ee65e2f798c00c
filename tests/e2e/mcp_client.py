"""A real MCP client (official Python SDK) that connects through Envoy with a bearer token,
lists tools, calls an allowed tool, then a tool its token does not cover. Prints one JSON
object with what happened, for the Rust test to assert on.

Usage: mcp_client.py URL TOKEN
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def main(url: str, token: str) -> None:
    seen = []

    async def record(response):
        seen.append(
            {
                "status": response.status_code,
                "www_authenticate": response.headers.get("www-authenticate"),
                "decision_id": response.headers.get("x-mcp-authz-decision-id"),
            }
        )

    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"},
        event_hooks={"response": [record]},
        timeout=10,
    )
    out = {}
    async with http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            tools = await client.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            result = await client.call_tool("get_forecast", {"city": "Paris"})
            out["forecast"] = [c.text for c in result.content if hasattr(c, "text")]
            try:
                denied = await client.call_tool("read_file", {"path": "/srv/shared/a.txt"})
                out["denied_call"] = {"is_error": getattr(denied, "is_error", None)}
            except Exception as e:  # the SDK surfaces the HTTP 403 as an error
                out["denied_error"] = type(e).__name__
    out["responses"] = seen
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
