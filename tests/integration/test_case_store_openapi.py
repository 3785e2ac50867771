"""schemathesis against a live case-store: generated requests for every operation in
/openapi.json (with an admin token, so the role checks let them through) must never get a
5xx and every answer must match the document."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import asyncpg
import pytest
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from tests.conftest import free_port

from casegate_case_store.app import init_app
from casegate_case_store.settings import Settings
from casegate_case_store.store.users import Role, create_token, create_user
from casegate_shared.settings import BusSettings


class ServerThread:
    """The service on its own event loop: schemathesis calls it synchronously, which would
    block the test's loop if the server shared it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as exc:  # reported by start()
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())

    async def _start(self) -> None:
        self.runner = web.AppRunner(await init_app(self.settings))
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.settings.case_store_port).start()

    def start(self) -> None:
        self.thread.start()
        if not self.ready.wait(30) or self.error:
            pytest.fail(f"case-store did not start: {self.error}")

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(15)


async def _admin_token(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        user = await create_user(conn, "fuzz", "Fuzz", [Role.ADMIN, Role.SUPERVISOR])
        return (await create_token(conn, user, "schemathesis"))[1]
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def live(database_url: str, amqp_url: str, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[str, str]]:
    prefix = f"tfuzz{free_port()}"
    bus = BusSettings(amqp_url=amqp_url, bus_exchange=prefix, bus_prefix=prefix)
    settings = Settings(
        **bus.model_dump(), database_url=database_url, case_store_port=free_port(),
        blob_dir=str(tmp_path_factory.mktemp("blobs")),
    )
    token = asyncio.run(_admin_token(database_url))
    server = ServerThread(settings)
    server.start()
    yield f"http://127.0.0.1:{settings.case_store_port}", token
    server.stop()
    from tests.conftest import delete_queues

    asyncio.run(delete_queues(amqp_url, prefix))


def test_api_never_fails_and_keeps_to_its_schema(live: tuple[str, str]) -> None:
    base, token = live
    api = schemathesis.openapi.from_url(f"{base}/openapi.json")
    auth = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    operations = 0
    for result in api.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        def check(case: schemathesis.Case) -> None:
            # Schema-valid is not always meaningful (an unknown assignee, a forged cursor):
            # those get a 4xx with a reason, which is right, so positive-data acceptance is
            # not checked; no 5xx, declared status codes and response schemas are.
            case.call_and_validate(headers=auth, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except (Exception, ExceptionGroup) as exc:  # every operation's failure, not the first
            failures.append(f"{operation.label}: {exc}"[:2000])
    assert operations >= 20
    assert not failures, "\n\n".join(failures)
