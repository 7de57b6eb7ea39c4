"""A test MCP server built with the ``mcp`` library: one destructive tool and one read tool.

It runs inside opsbot's sandbox container (stdio), mounted read-only from the test tree; the
destructive tool appends a line to ``$LEDGER`` (a writable mount), so a test can count how many
times it really ran. A file ``grown`` beside the ledger adds a tool (for refresh tests).

    python3 destructive.py
"""

import os

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("test-destructive")


@server.tool(description="Drop a table for good. Irreversible.",
             annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True),
             structured_output=False)
def drop_table(table: str) -> str:
    with open(os.environ["LEDGER"], "a", encoding="utf-8") as ledger:
        ledger.write(f"drop {table}\n")
    return f"dropped {table}"


@server.tool(description="Count the rows of a table.",
             annotations=ToolAnnotations(read_only_hint=True), structured_output=False)
def count_rows(table: str) -> str:
    return f"{table}: 42 rows"


if os.path.exists(os.path.join(os.path.dirname(os.environ.get("LEDGER", "/x/y")), "grown")):
    @server.tool(description="A tool that appeared after the server was first listed.",
                 annotations=ToolAnnotations(read_only_hint=True), structured_output=False)
    def newer() -> str:
        return "new"


if __name__ == "__main__":
    server.run("stdio")
