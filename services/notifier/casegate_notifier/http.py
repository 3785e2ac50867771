"""HTTP views of the sandbox: what the notifier would have sent, on every channel, as JSON
(`?case_ref=`, `?channel=`) and as a page.

Served only while the sandbox is the email provider; with real SMTP these routes do not exist.
"""

from __future__ import annotations

from html import escape

from aiohttp import web

from .adapters.sandbox import Sandbox

SANDBOX = web.AppKey("sandbox", Sandbox)


async def list_messages(request: web.Request) -> web.Response:
    case_ref = request.query.get("case_ref") or None
    channel = request.query.get("channel") or None
    return web.json_response(await request.app[SANDBOX].messages(case_ref, channel))


async def clear_messages(request: web.Request) -> web.Response:
    await request.app[SANDBOX].clear()
    return web.Response(status=204)


async def sandbox_page(request: web.Request) -> web.Response:
    case_ref = request.query.get("case_ref") or None
    messages = await request.app[SANDBOX].messages(case_ref)
    rows = "\n".join(
        "<article><h2>{subject}</h2><p class=meta>{time} &middot; {channel} to {to} &middot; {ref}"
        "</p><pre>{body}</pre></article>".format(
            subject=escape(str(m.get("subject", ""))),
            channel=escape(str(m.get("channel", ""))),
            time=escape(str(m.get("time", ""))),
            to=escape(str(m.get("to", ""))),
            ref=escape(str(m.get("case_ref", ""))),
            body=escape(str(m.get("body", ""))),
        )
        for m in reversed(messages)  # newest on top, as in a mailbox
    )
    page = (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>casegate sandbox</title>"
        "<style>body{font-family:sans-serif;max-width:60rem;margin:auto}"
        "article{border-bottom:1px solid #ccc}.meta{color:#666}pre{white-space:pre-wrap}</style>"
        f"</head><body><h1>Sandbox: {len(messages)} message(s)</h1>\n{rows}</body></html>"
    )
    # Customer text is escaped above; the policy is a second lock should that ever slip.
    csp = "default-src 'none'; style-src 'unsafe-inline'"
    return web.Response(
        text=page, content_type="text/html", headers={"Content-Security-Policy": csp}
    )


def add_sandbox_routes(app: web.Application) -> None:
    app.router.add_get("/sandbox/messages", list_messages)
    app.router.add_delete("/sandbox/messages", clear_messages)
    app.router.add_get("/sandbox", sandbox_page)
