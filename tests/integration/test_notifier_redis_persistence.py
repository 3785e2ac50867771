"""The notifier's start-up check that Redis persists (the append-only file): the real server's
setting read and one clear warning when it is off; servers that refuse CONFIG or are away
are tolerated."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from casegate_notifier.adapters.redis_persistence import Persistence, check_persistence

LOGGER = "casegate_notifier.adapters.redis_persistence"


class Server:
    """A Redis client's CONFIG GET as a managed or an unreachable server answers it."""

    def __init__(self, answer: dict[str, Any] | None = None, error: Exception | None = None):
        self.answer, self.error = answer, error

    async def config_get(self, pattern: str) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        return self.answer or {}


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno >= logging.WARNING]


async def test_the_real_servers_setting_is_read_and_off_gives_one_warning(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    actual = (await redis.config_get("appendonly"))["appendonly"]
    with caplog.at_level(logging.INFO, logger=LOGGER):
        state = await check_persistence(redis)
    assert state is (Persistence.ON if actual == "yes" else Persistence.OFF)
    if state is Persistence.OFF:  # this machine's Redis runs with --appendonly no
        [warning] = warnings(caplog)
        assert "append-only file" in warning and "--appendonly yes" in warning
    else:
        assert warnings(caplog) == []


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        (Server({"appendonly": "yes"}), Persistence.ON),
        (Server({"appendonly": b"yes"}), Persistence.ON),
        (Server({"appendonly": "no"}), Persistence.OFF),
        (Server(error=ResponseError("unknown command 'CONFIG'")), Persistence.UNKNOWN),
        (Server(error=RedisConnectionError("refused")), Persistence.UNKNOWN),
        (Server({}), Persistence.UNKNOWN),
    ],
)
async def test_what_each_server_answer_means(
    server: Server, expected: Persistence, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert await check_persistence(server) is expected  # type: ignore[arg-type]
    assert len(warnings(caplog)) == (1 if expected is Persistence.OFF else 0)
