"""The one shared upstream ``ClientSession`` and the HTTP transport built on it.

Opened once for the app's life (``app.py`` cleanup_ctx) with a cookie-less jar,
connector limits and connect/read timeouts but no ``total`` cap (it would cut long
streams). Transport failures become ``errors.UpstreamTimeout`` /
``errors.UpstreamUnavailable``; the message names the provider, never a URL with a
secret or a header.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager

import aiohttp
from yarl import URL

from . import errors
from .adapters.base import UpstreamRequest, UpstreamResponse
from .settings import Settings


def make_session(settings: Settings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=settings.upstream_connection_limit,
        limit_per_host=0,
        ttl_dns_cache=300,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout),
        auto_decompress=True,
        raise_for_status=False,
        skip_auto_headers=("User-Agent",),
        headers={"User-Agent": "llm-gateway"},
    )


class HttpStream:
    __slots__ = ("_resp", "status", "headers")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._resp.content.iter_any():
                yield data
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as e:
            raise errors.UpstreamUnavailable(f"the upstream stream broke: {type(e).__name__}") from None

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as e:
            raise errors.UpstreamUnavailable(f"the upstream answer broke: {type(e).__name__}") from None

    def close(self) -> None:
        self._resp.close()


class HttpTransport:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self._urls: dict[str, URL] = {}  # parsed once: adapters build a handful of distinct URLs

    def _url(self, url: str) -> URL:
        u = self._urls.get(url)
        if u is None:
            u = URL(url)
            if len(self._urls) < 4096:
                self._urls[url] = u
        return u

    async def send(self, req: UpstreamRequest, timeout: float) -> UpstreamResponse:
        with _transport_errors(f"no answer within {timeout:g} s"):
            async with asyncio.timeout(timeout):
                async with self.session.request(req.method, self._url(req.url), data=req.body, headers=req.headers) as r:
                    body = await r.read()
                    return UpstreamResponse(r.status, r.headers, body)

    async def open_stream(self, req: UpstreamRequest, timeout: float) -> HttpStream:
        """Send and wait for the response head (status, headers) within ``timeout``."""
        with _transport_errors(f"no response head within {timeout:g} s"):
            async with asyncio.timeout(timeout):
                resp = await self.session.request(req.method, self._url(req.url), data=req.body, headers=req.headers)
        return HttpStream(resp)


@contextmanager
def _transport_errors(timeout_message: str) -> Iterator[None]:
    """aiohttp's and asyncio's transport failures → the gateway's retryable errors."""
    try:
        yield
    except TimeoutError:
        raise errors.UpstreamTimeout(timeout_message) from None
    except aiohttp.ClientConnectorError as e:
        raise errors.UpstreamUnavailable(f"could not connect: {_why(e)}") from None
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, aiohttp.ClientResponseError) as e:
        raise errors.UpstreamUnavailable(f"the connection failed: {type(e).__name__}") from None


def _why(e: aiohttp.ClientConnectorError) -> str:
    err = e.os_error
    return err.strerror or type(err).__name__ if err is not None else type(e).__name__
