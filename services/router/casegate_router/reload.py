"""Hot reload of the policy files: a changed rules, SLA or teams file is applied without a
restart, or refused with the old files staying in force.

The policies in force are one reference (`PolicyStore.current`). A handler takes it once per
message, so a message is decided wholly by the old files or wholly by the new ones; swapping
the reference between two messages neither drops nor repeats one.

Changes are noticed by watching the files' directories (watchfiles, inotify where there is
one), not by polling: an editor or a deploy that replaces a file by renaming a new one over
it, or a Kubernetes ConfigMap that swaps a symlink, changes the directory, not the old file.
Any event leads to comparing the files' hashes, so unrelated files cost one read each.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Counter, Gauge
from watchfiles import awatch

from .domain import Policies, PolicyFiles, RulesError, load_policies
from .domain.policies import current_shas

log = logging.getLogger(__name__)

RELOADS = Counter(
    "casegate_router_rules_reload_total",
    "Reloads of the policy files after a change, by result (ok, error)",
    ["result"],
)
LOADED_MTIME = Gauge(
    "casegate_router_rules_loaded_mtime_seconds",
    "Modification time of the rules file in force (seconds since the epoch)",
)


class PolicyStore:
    """The policies in force, and the one way to replace them."""

    def __init__(self, files: PolicyFiles, policies: Policies) -> None:
        self.files = files
        self._current = policies
        self._refused: tuple[str, ...] | None = None  # so one bad edit is reported once
        LOADED_MTIME.set(policies.files[0].mtime)

    def current(self) -> Policies:
        return self._current

    async def reload(self) -> bool | None:
        """Load the files if they changed: True applied, False refused, None unchanged."""
        shas = await asyncio.to_thread(current_shas, self.files)
        if shas is None or shas == self._current.shas or shas == self._refused:
            return None  # unreadable mid-replace: the rename that follows brings an event
        try:
            policies = await asyncio.to_thread(load_policies, self.files)
        except RulesError as exc:
            self._refused = shas
            RELOADS.labels("error").inc()
            log.error(
                "changed %s file refused, the rules in force stay",
                exc.kind,
                extra={"problems": str(exc).splitlines(), "version": self._current.version},
            )
            return False
        previous = self._current.version
        self._current = policies  # the swap: one reference, between two messages
        self._refused = None
        RELOADS.labels("ok").inc()
        LOADED_MTIME.set(policies.files[0].mtime)
        log.info(
            "policy files reloaded",
            extra={"version": policies.version, "previous_version": previous},
        )
        return True

    async def watch(self, stop: asyncio.Event) -> None:
        """Reload on every change in the files' directories until `stop` is set."""
        # absolute(), not resolve(): a ConfigMap's files are symlinks into a directory that
        # the next update deletes; the directory holding the links is the one that lasts.
        directories = sorted({str(path.absolute().parent) for path in self.files.all()})
        changes = awatch(*directories, stop_event=stop, watch_filter=None, recursive=False)
        await self.reload()  # whatever changed between loading at start and watching
        async for _ in changes:
            try:
                await self.reload()
            except Exception:  # a reload must never end the watching
                log.exception("reloading the policy files failed")
