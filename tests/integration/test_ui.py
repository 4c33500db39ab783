"""The web UI is served as static files, without a key, and talks to the API."""

from __future__ import annotations


async def test_ui_is_served_without_a_key(gateway):
    gw = await gateway({"GATEWAY_API_KEYS": "ui-test-key:team"})
    async with gw.http.get(gw.url + "/") as r:
        assert r.status == 200 and "text/html" in r.headers["Content-Type"]
        html = await r.text()
    assert "/ui/app.js" in html and "/ui/style.css" in html
    for asset in ("/ui/app.js", "/ui/style.css"):
        async with gw.http.get(gw.url + asset) as r:
            assert r.status == 200
    for page in ("/ui", "/ui/"):  # the UI too, not the static folder's listing (a 403)
        async with gw.http.get(gw.url + page, allow_redirects=False) as r:
            assert r.status == 200 and await r.text() == html
    async with gw.http.get(gw.url + "/ui/nope.js") as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    # the API it calls needs the key; the UI asks for it on 401
    async with gw.http.get(gw.url + "/api/status") as r:
        assert r.status == 401
    async with gw.http.get(gw.url + "/api/status", headers={"Authorization": "Bearer ui-test-key"}) as r:
        body = await r.json()
    assert body["mock_only"] is True and body["providers"]["mock"]["configured"] is True
    assert "ui-test-key" not in str(body)


def test_aiohttp_statuses_keep_a_code_of_their_own():
    """A status raised by aiohttp itself (a static route's 403, say) is not an 'internal_error'."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from llm_gateway.keys import SETTINGS
    from llm_gateway.middleware.errors import _from_http
    from llm_gateway.settings import Settings

    app = web.Application()
    app[SETTINGS] = Settings()
    req = make_mocked_request("GET", "/ui/", app=app)
    err = _from_http(web.HTTPForbidden(), req)
    assert (err.status, err.type, err.code) == (403, "invalid_request_error", "forbidden")
    err = _from_http(web.HTTPRequestHeaderFieldsTooLarge(), req)
    assert err.code == "request_header_fields_too_large"
