#!/usr/bin/env python3
"""A handshake-era stdio MCP server built on the Python SDK 1.x (FastMCP),
for tests/interop_eras.rs: tools `echo` (text back) and `ask`, which asks the
client for a name with `elicitation/create` while the call is in flight and
answers `hello NAME` (or `no name: ACTION`).

Usage: python3 elicit_server_v1.py   (speaks MCP on stdin/stdout)
"""

from mcp.server.fastmcp import Context, FastMCP
from pydantic import BaseModel

mcp = FastMCP("elicit-v1")


class Name(BaseModel):
    name: str


@mcp.tool()
async def echo(text: str) -> str:
    """Returns `text`."""
    return text


@mcp.tool()
async def ask(ctx: Context) -> str:
    """Asks the client for a name, then greets it."""
    result = await ctx.elicit("What is your name?", schema=Name)
    if result.action == "accept" and result.data is not None:
        return f"hello {result.data.name}"
    return f"no name: {result.action}"


if __name__ == "__main__":
    mcp.run("stdio")
