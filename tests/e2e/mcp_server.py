"""A real MCP server (official Python SDK, Streamable HTTP) for the end-to-end tests.

Usage: mcp_server.py PORT [json]

With `json`, responses are `application/json`; otherwise `text/event-stream` (the SDK's
default). Six tools: two weather tools and two file tools (two scopes, see policies/), one in
the `dangerous` set (forbidden without the break-glass group, whatever the scopes), and
`internal_debug`, which the shipped policies permit to nobody (tests/oauth.rs makes it tenant
`globex`'s tool).
"""

import sys

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


if __name__ == "__main__":
    server.run(
        "streamable-http",
        host="127.0.0.1",
        port=int(sys.argv[1]),
        streamable_http_path="/mcp",
        json_response=len(sys.argv) > 2 and sys.argv[2] == "json",
        # Envoy forwards the client's Host (127.0.0.1:<envoy port>); the authorizer in front
        # of this server is what the test is about.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
