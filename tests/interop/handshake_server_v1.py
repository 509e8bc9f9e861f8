#!/usr/bin/env python3
"""A handshake-era stdio MCP server built on the Python SDK 1.x (FastMCP),
for tests/interop_eras.rs:

- tool `echo`: returns `text`;
- tool `ask`: asks the client for a name with `elicitation/create` while the
  call is in flight, answers `hello NAME` (or `no name: ACTION`);
- resource `file:///note`, with `resources/subscribe` and `unsubscribe`
  (capabilities say `resources.subscribe` and `tools.listChanged`);
- tool `touch`: sends `notifications/resources/updated` for each subscribed
  URI and `notifications/tools/list_changed`, then answers
  `touched [URIS]`.

Usage: python3 handshake_server_v1.py   (speaks MCP on stdin/stdout)
"""

from mcp import types
from mcp.server.fastmcp import Context, FastMCP
from pydantic import BaseModel

mcp = FastMCP("handshake-v1")
low = mcp._mcp_server
subscribed: set[str] = set()

_capabilities = low.get_capabilities


def capabilities(notification_options, experimental):  # noqa: ANN001 - SDK shape
    caps = _capabilities(notification_options, experimental)
    caps.resources = types.ResourcesCapability(subscribe=True, listChanged=False)
    caps.tools = types.ToolsCapability(listChanged=True)
    return caps


low.get_capabilities = capabilities


@low.subscribe_resource()
async def subscribe(uri) -> None:  # noqa: ANN001
    subscribed.add(str(uri))


@low.unsubscribe_resource()
async def unsubscribe(uri) -> None:  # noqa: ANN001
    subscribed.discard(str(uri))


class Name(BaseModel):
    name: str


@mcp.resource("file:///note")
def note() -> str:
    """A note."""
    return "a note"


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


@mcp.tool()
async def touch(ctx: Context) -> str:
    """Announces an update of every subscribed resource and a tool list change."""
    for uri in sorted(subscribed):
        await ctx.session.send_resource_updated(uri)
    await ctx.session.send_tool_list_changed()
    return f"touched {sorted(subscribed)}"


if __name__ == "__main__":
    mcp.run("stdio")
