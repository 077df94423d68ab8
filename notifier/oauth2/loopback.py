"""A one-shot HTTP listener that catches the provider's redirect back to a loopback redirect URI
(RFC 8252 §7.3), for `notifier oauth2 authorize` when the service is not serving that port."""

from __future__ import annotations

import asyncio
import contextlib
import errno
from urllib.parse import parse_qsl, urlsplit

from notifier.config import host_port
from notifier.oauth2.errors import AuthorizationFlowError, OAuth2Error

LOOPBACK_HOSTS = {"localhost": ("127.0.0.1", "::1"), "127.0.0.1": ("127.0.0.1",), "::1": ("::1",)}

_DONE_PAGE = (
    "<!doctype html><html><body style='font:15px system-ui,sans-serif;margin:2em'>"
    "<h1>{title}</h1><p>{text}</p></body></html>"
)


def loopback_target(redirect_uri: str) -> tuple[tuple[str, ...], int, str] | None:
    """(addresses to bind, port, path) when `redirect_uri` is a plain-HTTP loopback URI."""
    parts = urlsplit(redirect_uri)
    host = (parts.hostname or "").lower()
    if parts.scheme != "http" or host not in LOOPBACK_HOSTS:
        return None
    return LOOPBACK_HOSTS[host], parts.port or 80, parts.path or "/"


class PortBusy(OAuth2Error):
    """Something (usually the running notifier) already listens on the redirect port."""


class RedirectCatcher:
    """Listens on the redirect URI's loopback port until one request to its path arrives."""

    def __init__(self, addresses: tuple[str, ...], port: int, path: str) -> None:
        self._addresses = addresses
        self._port = port
        self._path = path
        self._servers: list[asyncio.Server] = []
        self._result: asyncio.Future[dict[str, str]] | None = None

    async def start(self) -> None:
        """Raises `PortBusy` when the port is taken on the first address."""
        self._result = asyncio.get_running_loop().create_future()
        for i, address in enumerate(self._addresses):
            try:
                server = await asyncio.start_server(self._serve, address, self._port)
            except OSError as e:
                if i == 0 and e.errno == errno.EADDRINUSE:
                    raise PortBusy(f"{host_port(address, self._port)} is in use") from None
                if i == 0:
                    raise
                continue  # e.g. no IPv6 on this machine: 127.0.0.1 is enough
            self._servers.append(server)

    async def wait(self, timeout_s: float) -> dict[str, str]:
        """The redirect's query parameters (code and state, or error)."""
        assert self._result is not None, "start() first"
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.shield(self._result)
        except TimeoutError:
            raise AuthorizationFlowError(
                f"no sign-in came back within {timeout_s:g} s: start again"
            ) from None

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            parts = urlsplit(target)
            params = dict(parse_qsl(parts.query))
            wanted = method == "GET" and parts.path == self._path
            if wanted and ("code" in params or "error" in params):
                ok = "code" in params
                body = _DONE_PAGE.format(
                    title="Signed in" if ok else "Sign-in refused",
                    text="notifier has the authorization: you can close this window."
                    if ok
                    else "The provider refused the sign-in; the terminal says why.",
                )
                status = "200 OK"
                if self._result is not None and not self._result.done():
                    self._result.set_result(params)
            else:
                body, status = "not found", "404 Not Found"
            data = body.encode("utf-8")
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n"
                "Cache-Control: no-store\r\n\r\n".encode("ascii")
                + data
            )
            await writer.drain()
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except TimeoutError:
            pass
        finally:
            writer.close()
