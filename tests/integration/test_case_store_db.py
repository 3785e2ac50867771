"""case-store's pool warns when the server would never analyze its tables."""

from __future__ import annotations

import logging

import pytest

from casegate_case_store.store.db import create_pool


async def test_the_pool_warns_when_autovacuum_is_off(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="casegate_case_store.store.db")
    pool = await create_pool(database_url, max_size=1)
    try:
        off = await pool.fetchval("SHOW autovacuum") == "off"
    finally:
        await pool.close()
    warned = [r for r in caplog.records if r.getMessage().startswith("autovacuum is off")]
    assert len(warned) == (1 if off else 0)
