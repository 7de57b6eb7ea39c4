"""An ingress process runs no sandbox: it builds the MCP toolsets from the listings workers
recorded (both storage modes), so a typed `/ops <server> <tool>` parses whichever process
takes it."""

from graph import commands
from graph.mcp import Follower, load_servers
from tools import TOOLSETS
from tools.catalog import Catalog

SERVERS = """\
version: 1
servers:
  - name: time
    transport: stdio
    command: python3
    args: [-m, mcp_server_time]
  - name: git
    transport: stdio
    command: python3
    args: [-m, mcp_server_git]
"""
LISTED = [{"name": "get_current_time", "description": "Now, in a time zone.",
           "input_schema": {"type": "object", "properties": {"timezone": {"type": "string"}},
                            "required": ["timezone"]}, "read_only": True}]


async def test_ingress_learns_the_tools_workers_listed(records, tmp_path):
    path = tmp_path / "mcp.yml"
    path.write_text(SERVERS)
    catalog = Catalog(TOOLSETS, {})
    follower = Follower(load_servers(path), catalog, records.listings)
    await follower.load()
    assert catalog.toolsets["time"].actions == [], "nothing listed yet"
    assert Follower.NOT_LISTED in catalog.toolsets["time"].description

    await records.listings.save("time", LISTED)  # what a worker's discovery writes
    await follower.load()
    parsed = commands.parse("time get_current_time timezone=UTC", catalog)
    assert (parsed.toolset, parsed.action, parsed.params) == (
        "time", "get_current_time", {"timezone": "UTC"})
    assert catalog.toolsets["git"].actions == []
