"""A real MCP server (official Python SDK, Streamable HTTP) for the end-to-end tests.

Usage: mcp_server.py PORT
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
def read_file(path: str) -> str:
    """Reads a shared file."""
    return f"contents of {path}"


if __name__ == "__main__":
    server.run(
        "streamable-http",
        host="127.0.0.1",
        port=int(sys.argv[1]),
        streamable_http_path="/mcp",
        # Envoy forwards the client's Host (127.0.0.1:<envoy port>); the authorizer in front
        # of this server is what the test is about.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
