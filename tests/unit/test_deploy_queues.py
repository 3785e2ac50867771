"""The autoscaling manifest watches every queue each service consumes: a queue left out is a
backlog nobody scales for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from casegate_case_store import handlers as case_store
from casegate_notifier import handlers as notifier
from casegate_router import handlers as router

KEDA = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "keda.yaml"


@pytest.mark.parametrize("queues", [case_store.QUEUES, router.QUEUES, notifier.QUEUES],
                         ids=["case-store", "router", "notifier"])
def test_every_consumed_queue_is_scaled_on(queues: list[str]) -> None:
    watched = set(re.findall(r"queueName: casegate\.(\S+)", KEDA.read_text()))
    assert set(queues) <= watched, f"not in {KEDA.name}: {sorted(set(queues) - watched)}"
