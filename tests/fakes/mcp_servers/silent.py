"""A test "MCP server" that never answers anything, not even the handshake.

    python3 silent.py
"""

import time

while True:
    time.sleep(3600)
