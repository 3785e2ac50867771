"""The customer's tracking page over real HTTP: a real case-store (PostgreSQL, RabbitMQ) with
cases made through its API, and a real intake reading them through case-store's tracking
API. Public entries only, bodies escaped, one 404 for every wrong link, the preferences form
changing the customer in the database, the security headers, cross-origin posts refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from tests.conftest import free_port
from tests.integration.test_case_store_api import token_for
from tests.integration.test_case_store_service import running
from tests.integration.test_intake_webform import start_intake
from yarl import URL

from casegate_case_store.settings import Settings as CaseStoreSettings
from casegate_case_store.store.users import Role
from casegate_shared.settings import BusSettings

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
SECRET = "Internal: customer is on the watch list"


class Page(HTMLParser):
    """What a browser would build from the page: elements, text, and the form's fields."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.forms: list[dict[str, str | None]] = []
        self.fields: dict[str, list[str]] = {}
        self.checked: set[str] = set()
        self.selected: dict[str, str] = {}
        self._select: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "form":
            self.forms.append(a)
        elif tag == "input" and a.get("name"):
            name, value = str(a["name"]), a.get("value") or ""
            if a.get("type") == "checkbox":
                if "checked" in a:
                    self.checked.add(value)
            else:
                self.fields.setdefault(name, []).append(value)
        elif tag == "select":
            self._select = a.get("name")
        elif tag == "option" and self._select and "selected" in a:
            self.selected[self._select] = a.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return "".join(self.text)


@dataclass
class Stack:
    intake: str  # intake's base URL
    case_store: str
    db: asyncpg.Connection
    http: aiohttp.ClientSession
    agent: dict[str, str] = field(default_factory=dict)

    async def new_case(self, description: str = "I was charged twice.") -> tuple[str, str]:
        case = {"customer": {"name": "Dana", "email": "dana@example.com", "phone": "+14155550123"},
                "subject": "Invoice <b>twice</b>", "description": description}
        async with self.http.post(f"{self.case_store}/v1/cases", json=case,
                                  headers=self.agent) as resp:
            assert resp.status == 201, await resp.text()
            made = await resp.json()
        return made["ref"], made["tracking_token"]

    async def act(self, ref: str, what: str, body: str) -> None:
        async with self.http.post(f"{self.case_store}/v1/cases/{ref}/{what}",
                                  json={"body": body}, headers=self.agent) as resp:
            assert resp.status in (200, 201), await resp.text()

    async def page(self, path: str, **kw: Any) -> tuple[aiohttp.ClientResponse, str]:
        async with self.http.get(self.intake + path, allow_redirects=False, **kw) as resp:
            return resp, await resp.text()

    async def post(self, path: str, form: list[tuple[str, str]], **kw: Any
                   ) -> tuple[aiohttp.ClientResponse, str]:
        async with self.http.post(self.intake + path, data=form, allow_redirects=False,
                                  **kw) as resp:
            return resp, await resp.text()


@pytest.fixture
async def stack(bus_settings: BusSettings, clean_db: str, tmp_path: Any
                ) -> AsyncIterator[Stack]:
    settings = CaseStoreSettings(
        **bus_settings.model_dump(), database_url=clean_db, case_store_port=free_port(),
        blob_dir=str(tmp_path / "blobs"),
    )
    case_store = f"http://127.0.0.1:{settings.case_store_port}"
    db = await asyncpg.connect(clean_db)
    try:
        token = await token_for(db, "cora", Role.CREATOR, Role.RESOLVER)
        async with running(settings), start_intake(
            bus_settings, observe=False, case_store_url=case_store
        ) as intake, aiohttp.ClientSession() as http:
            yield Stack(intake.url, case_store, db, http, {"Authorization": f"Bearer {token}"})
    finally:
        await db.close()


def form_of(page: Page) -> list[tuple[str, str]]:
    """The form as a browser would send it unchanged."""
    sent = [(name, values[0]) for name, values in page.fields.items()]
    sent += [(name, value) for name, value in page.selected.items()]
    return sent + [("opt_out", value) for value in sorted(page.checked)]


def assert_security_headers(resp: aiohttp.ClientResponse) -> None:
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "no-store"


async def test_the_page_shows_status_and_public_entries_never_internal_notes(
    stack: Stack,
) -> None:
    ref, token = await stack.new_case()
    await stack.act(ref, "replies", "We refunded the second charge.")
    await stack.act(ref, "notes", SECRET)
    resp, html = await stack.page(f"/track/{ref}?token={token}")
    assert resp.status == 200, html
    assert resp.content_type == "text/html"
    page = Page(html)
    text = page.all_text
    assert ref in text and "Invoice <b>twice</b>" in text and "Received" in text
    assert "I was charged twice." in text and "We refunded the second charge." in text
    assert "You wrote" in text and "Support replied" in text
    assert SECRET not in html and "watch list" not in html
    assert page.forms and page.forms[0]["method"] == "post"
    assert page.forms[0]["action"] == f"{ref}/preferences"
    assert page.fields["token"] == [token]  # the form carries its capability


async def test_bodies_and_subjects_are_escaped(stack: Stack) -> None:
    ref, token = await stack.new_case(description=HOSTILE)
    await stack.act(ref, "replies", f"Quoting you: {HOSTILE}")
    resp, html = await stack.page(f"/track/{ref}?token={token}")
    assert resp.status == 200
    page = Page(html)
    assert "script" not in page.tags and "img" not in page.tags and "b" not in page.tags
    assert HOSTILE in page.all_text  # shown as the words they are
    assert "&lt;script&gt;" in html and "<script>" not in html


async def test_every_wrong_link_gets_the_same_404(stack: Stack) -> None:
    ref, token = await stack.new_case()
    other_ref, other_token = await stack.new_case()
    wrong = [
        f"/track/{ref}?token={other_token}",  # another case's token
        f"/track/{ref}?token=guess",
        f"/track/{ref}",  # no token
        f"/track/CS-ZZZZZZ?token={token}",  # unknown case
        f"/track/{ref}?token={'x' * 500}",  # longer than any token
        "/track/..%2F..%2Fetc?token=x",
    ]
    bodies = set()
    for path in wrong:
        resp, html = await stack.page(path)
        assert resp.status == 404, path
        assert_security_headers(resp)
        bodies.add(html)
    assert len(bodies) == 1, "the 404 page must not say which part was wrong"
    assert ref not in bodies.pop()
    resp, _ = await stack.page(f"/track/{other_ref}?token={other_token}")
    assert resp.status == 200


async def test_security_headers_on_the_page_and_the_stylesheet(stack: Stack) -> None:
    ref, token = await stack.new_case()
    resp, _ = await stack.page(f"/track/{ref}?token={token}")
    assert_security_headers(resp)
    assert "form-action 'self'" in resp.headers["Content-Security-Policy"]
    resp, css = await stack.page("/track/style.css")
    assert resp.status == 200 and resp.content_type == "text/css" and "body{" in css
    assert resp.headers["Referrer-Policy"] == "no-referrer"


async def test_the_preferences_form_changes_the_customer(stack: Stack) -> None:
    ref, token = await stack.new_case()
    resp, html = await stack.page(f"/track/{ref}?token={token}")
    page = Page(html)
    assert page.fields["timezone"] == ["UTC"] and page.checked == set()
    sent = dict(form_of(page))
    sent.update(preferred_channel="sms", language="de", timezone="Europe/Berlin",
                quiet_start="21:30", quiet_end="07:00")
    form = [*sent.items(), ("opt_out", "email")]
    origin = {"Origin": stack.intake, "Sec-Fetch-Site": "same-origin"}
    resp, _ = await stack.post(f"/track/{ref}/preferences", form, headers=origin)
    assert resp.status == 303
    assert_security_headers(resp)
    location = URL(stack.intake + f"/track/{ref}/preferences").join(URL(resp.headers["Location"]))
    assert location.path == f"/track/{ref}" and location.query["token"] == token

    row = await stack.db.fetchrow(
        "SELECT c.preferred_channel, c.language, c.timezone, to_char(c.quiet_start, 'HH24:MI') "
        "AS qs, to_char(c.quiet_end, 'HH24:MI') AS qe FROM customers c "
        "JOIN cases k ON k.customer_id = c.id WHERE k.ref = $1", ref)
    assert dict(row) == {"preferred_channel": "sms", "language": "de",
                         "timezone": "Europe/Berlin", "qs": "21:30", "qe": "07:00"}
    opted = await stack.db.fetch(
        "SELECT i.kind, i.opted_out_at IS NOT NULL AS out FROM customer_identities i "
        "JOIN cases k ON k.customer_id = i.customer_id WHERE k.ref = $1 ORDER BY i.kind", ref)
    assert [(r["kind"], r["out"]) for r in opted] == [("email", True), ("phone", False)]

    async with stack.http.get(location) as back:
        html = await back.text()
    page = Page(html)
    assert "Your preferences were saved." in page.all_text
    assert page.selected["preferred_channel"] == "sms" and page.checked == {"email"}
    assert page.fields["quiet_start"] == ["21:30"] and page.fields["language"] == ["de"]
    assert "CET" in page.all_text or "CEST" in page.all_text  # times in their zone now

    # Unticking the box sends the form without it: email is allowed again.
    unticked = [(name, value) for name, value in form_of(page) if name != "opt_out"]
    resp, _ = await stack.post(f"/track/{ref}/preferences", unticked, headers=origin)
    assert resp.status == 303
    assert not await stack.db.fetchval(
        "SELECT bool_or(opted_out_at IS NOT NULL) FROM customer_identities i JOIN cases k "
        "ON k.customer_id = i.customer_id WHERE k.ref = $1", ref)


async def test_invalid_preferences_get_a_422_page_with_the_reason(stack: Stack) -> None:
    ref, token = await stack.new_case()
    form = [("token", token), ("timezone", "Mars/Olympus")]
    resp, html = await stack.post(f"/track/{ref}/preferences", form)
    assert resp.status == 422
    assert "Mars/Olympus" in Page(html).all_text
    assert await stack.db.fetchval("SELECT timezone FROM customers") == "UTC"
    resp, html = await stack.post(f"/track/{ref}/preferences",
                                  [("token", token), ("quiet_start", "25:00")])
    assert resp.status == 422 and "Quiet hours from" in Page(html).all_text


async def test_cross_origin_posts_are_refused(stack: Stack) -> None:
    ref, token = await stack.new_case()
    form = [("token", token), ("preferred_channel", "sms"), ("opt_out", "email")]
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": stack.intake, "Sec-Fetch-Site": "same-site"},
    ):
        resp, html = await stack.post(f"/track/{ref}/preferences", form, headers=headers)
        assert resp.status == 403, headers
        assert_security_headers(resp)
    row = await stack.db.fetchrow("SELECT preferred_channel FROM customers")
    assert row["preferred_channel"] is None
    assert not await stack.db.fetchval(
        "SELECT bool_or(opted_out_at IS NOT NULL) FROM customer_identities")
    # The same form from its own page goes through.
    resp, _ = await stack.post(f"/track/{ref}/preferences", form,
                               headers={"Origin": stack.intake})
    assert resp.status == 303


async def test_a_post_without_the_right_token_changes_nothing(stack: Stack) -> None:
    ref, _ = await stack.new_case()
    _, other_token = await stack.new_case()
    for form in ([("preferred_channel", "sms")], [("token", other_token),
                                                  ("preferred_channel", "sms")]):
        resp, _ = await stack.post(f"/track/{ref}/preferences", form)
        assert resp.status == 404
    resp, _ = await stack.post(f"/track/{ref}/preferences?token={other_token}",
                               [("preferred_channel", "sms")])
    assert resp.status == 404  # the token in the URL is not enough for a change
    assert await stack.db.fetchval(
        "SELECT count(*) FROM customers WHERE preferred_channel IS NOT NULL") == 0


async def test_case_store_out_of_reach_is_a_503_page(bus_settings: BusSettings) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    async with start_intake(bus_settings, observe=False, case_store_url=nowhere) as intake, \
            aiohttp.ClientSession() as http:
        async with http.get(f"{intake.url}/track/CS-7K3M9Q?token=abc") as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"].isdigit()
            assert_security_headers(resp)
            assert "unavailable" in await resp.text()
        async with http.post(f"{intake.url}/track/CS-7K3M9Q/preferences",
                             data={"token": "abc", "language": "de"}) as resp:
            assert resp.status == 503


def test_app_refuses_a_case_store_url_that_is_not_http() -> None:
    from casegate_intake.settings import Settings
    from casegate_intake.tracking import add_tracking_routes

    with pytest.raises(ValueError, match="CASEGATE_CASE_STORE_URL"):
        add_tracking_routes(web.Application(), Settings(case_store_url="ftp://case-store"))
