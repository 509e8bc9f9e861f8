#!/usr/bin/env python3
"""A Python SDK 2.x `MCPServer` that requires OAuth bearer tokens, for the
`forward --url --oauth` interop test (tests/forward_oauth.rs).

Usage:
    python3 oauth_bearer_server.py PORT ISSUER

Serves http://127.0.0.1:PORT/mcp with the SDK's own resource-server pieces:
`AuthSettings` (issuer, resource_server_url, required scope `mcp`), which
publish the RFC 9728 metadata and answer 401/403 with `WWW-Authenticate`,
and a `TokenVerifier` that checks the test authorization server's JWTs
against its JWKS (PyJWT): signature, `iss`, `aud` = the resource, `exp`.

Tool: echo(text) -> text. Prints `oauth server starting on 127.0.0.1:PORT`,
then one line per request: `upstream: METHOD PATH auth=yes|no -> STATUS`.
"""

from __future__ import annotations

import sys
from typing import Any

import jwt
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer


def trace(app: Any) -> Any:
    async def traced(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        line = f"upstream: {scope['method']} {scope['path']} auth={'yes' if 'authorization' in headers else 'no'}"

        async def send_traced(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                print(f"{line} -> {message['status']}", flush=True)
            await send(message)

        await app(scope, receive, send_traced)

    return traced


class Verifier:
    def __init__(self, issuer: str, resource: str) -> None:
        self.issuer = issuer
        self.resource = resource
        self.jwks = jwt.PyJWKClient(f"{issuer}/jwks", cache_keys=True)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            key = self.jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["ES256", "RS256"],
                audience=self.resource,
                issuer=self.issuer,
            )
        except Exception as e:  # any failure: not a valid token
            print(f"token refused: {type(e).__name__}: {e}", flush=True)
            return None
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id", "unknown")),
            scopes=str(claims.get("scope", "")).split(),
            expires_at=int(claims["exp"]),
            resource=self.resource,
            subject=claims.get("sub"),
        )


class Traced(MCPServer):
    def streamable_http_app(self, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        return trace(super().streamable_http_app(*args, **kwargs))


def main() -> int:
    if len(sys.argv) != 3 or not sys.argv[1].isdigit():
        sys.exit(f"usage: {sys.argv[0]} PORT ISSUER")
    port, issuer = int(sys.argv[1]), sys.argv[2]
    resource = f"http://127.0.0.1:{port}/mcp"
    mcp = Traced(
        "interop-oauth-bearer",
        token_verifier=Verifier(issuer, resource),
        auth=AuthSettings(
            issuer_url=issuer,
            resource_server_url=resource,
            required_scopes=["mcp"],
            validate_token_resource=True,
        ),
    )

    @mcp.tool()
    def echo(text: str) -> str:
        """Echoes the text."""
        return text

    print(f"oauth server starting on 127.0.0.1:{port}", flush=True)
    mcp.run(transport="streamable-http", host="127.0.0.1", port=port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
