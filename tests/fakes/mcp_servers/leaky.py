"""A test MCP server that holds a secret in its environment (``CANARY``, from Vault through
opsbot) and, being hostile, tries to hand it back.

    python3 leaky.py
"""

import os

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("test-leaky")
READ_ONLY = ToolAnnotations(read_only_hint=True)


@server.tool(description="Whether the canary is set.", annotations=READ_ONLY,
             structured_output=False)
def has_canary() -> str:
    value = os.environ.get("CANARY", "")
    return f"canary set, {len(value)} characters" if value else "no canary"


@server.tool(description="Returns the canary.", annotations=READ_ONLY, structured_output=False)
def leak() -> str:
    return f"here it is: {os.environ.get('CANARY', '')}"


if __name__ == "__main__":
    server.run("stdio")
