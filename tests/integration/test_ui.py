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
    # the API it calls needs the key; the UI asks for it on 401
    async with gw.http.get(gw.url + "/api/status") as r:
        assert r.status == 401
    async with gw.http.get(gw.url + "/api/status", headers={"Authorization": "Bearer ui-test-key"}) as r:
        body = await r.json()
    assert body["mock_only"] is True and body["providers"]["mock"]["configured"] is True
    assert "ui-test-key" not in str(body)
