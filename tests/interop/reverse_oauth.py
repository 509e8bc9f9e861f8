#!/usr/bin/env python3
"""Interop check: the official Python MCP SDK 2.x client-side OAuth provider
(`mcp.client.auth.OAuthClientProvider`) against `mcp-relay reverse
--oauth-issuer <test authorization server> --oauth-audience URL -- echo_server`.

Usage:
    python3 reverse_oauth.py URL

The SDK does everything itself from the relay's 401: it reads
`resource_metadata` from `WWW-Authenticate`, fetches the relay's RFC 9728
document, checks its `resource` against URL, discovers the authorization
server's metadata, registers (RFC 7591), sends the user to /authorize with
PKCE S256 and `resource`, exchanges the code for a token and retries with
it. The "browser" here is the redirect handler: it GETs the authorize URL
with urllib, as a user who approves at once, and keeps the 302's Location;
the callback handler hands the code, state and iss found there to the SDK.
No callback server is needed: the redirect is never followed.

Asserts: the flow ran once (one redirect, with S256 and `resource` = URL),
a client was registered and a token stored, tools/list names `echo`, two
tools/call of `echo` work. Prints `interop ok: ...`; any failure raises.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.parse
import urllib.request

import anyio
from mcp.client.auth import OAuthClientProvider
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

OVERALL_TIMEOUT_S = 30


class MemoryStorage:
    """Token storage in memory (the SDK's `TokenStorage` protocol)."""

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


class KeepRedirect(urllib.request.HTTPRedirectHandler):
    """Do not follow: the 302 from /authorize is the answer."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401
        return None


def approve(authorize_url: str) -> str:
    """GET the authorize URL as a browser whose user approves; the
    Location of its redirect."""
    opener = urllib.request.build_opener(KeepRedirect)
    try:
        with opener.open(authorize_url, timeout=10) as resp:
            raise AssertionError(f"/authorize answered {resp.status}, not a redirect")
    except urllib.error.HTTPError as e:
        if e.code in (301, 302, 303, 307, 308) and e.headers.get("Location"):
            return e.headers["Location"]
        raise AssertionError(f"/authorize failed: {e.code} {e.read()!r}") from e


async def run(url: str) -> str:
    redirects: list[str] = []
    authorize_urls: list[str] = []

    async def redirect_handler(authorize_url: str) -> None:
        authorize_urls.append(authorize_url)
        redirects.append(await anyio.to_thread.run_sync(approve, authorize_url))

    async def callback_handler() -> AuthorizationCodeResult:
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(redirects[-1]).query)
        assert "error" not in q, q
        return AuthorizationCodeResult(
            code=q["code"][0],
            state=q.get("state", [None])[0],
            iss=q.get("iss", [None])[0],
        )

    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="mcp-relay interop",
            redirect_uris=["http://127.0.0.1:9/callback"],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    with anyio.fail_after(OVERALL_TIMEOUT_S):
        async with create_mcp_http_client(auth=provider) as http:
            async with Client(streamable_http_client(url, http_client=http), mode="auto") as client:
                tools = await client.list_tools()
                names = [t.name for t in tools.tools]
                assert names == ["echo"], names
                for text in ("authorized", "and again"):
                    result = await client.call_tool("echo", {"text": text})
                    got = result.content[0].text
                    assert got == text, got
                version = client.protocol_version
    assert storage.tokens is not None, "no token stored"
    assert storage.client_info is not None, "no client registered"
    assert len(redirects) == 1, f"{len(redirects)} authorizations, expected 1"
    for a in authorize_urls:
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(a).query)
        assert q.get("code_challenge_method") == ["S256"], a
        assert q.get("resource") == [url], a
    return (
        f"version {version}, tools {names}, client {storage.client_info.client_id}, "
        f"authorizations {len(redirects)}, scope {storage.tokens.scope!r}"
    )


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {os.path.basename(sys.argv[0])} URL")
    print("interop ok:", anyio.run(run, sys.argv[1]))


if __name__ == "__main__":
    main()
