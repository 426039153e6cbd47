"""The cron source's I/O: sleep until the next tick, emit it, checkpoint it.

The decision of what to fire is :func:`~connectors.cron.schedule.plan_tick`'s; this loop
only reads the clock, sleeps, emits and checkpoints. Two checkpoints are kept: ``anchor``
(when the schedule first started; ``rate()`` ticks are counted from it and a first start
that crashed before its first tick still fires it) and ``last_fired`` (the scheduled time
of the last tick durably queued, or deliberately skipped).

Ticks are planned on wall time, but a sleep runs on the monotonic clock, which stops while
the host is suspended and does not follow a step of the wall clock. So no sleep is longer
than :data:`REPLAN` seconds: after each the loop re-plans from the wall clock, and a daily
tick is at most that late whatever happened to the host meanwhile.

A checkpoint that cannot be read (written by a bug, or edited by hand) is bad input, not a
reason to stop: it is logged once, counted (:meth:`CronSource.statistics`), and replaced
(``anchor``: the schedule starts anew now) or ignored (``last_fired``: as if no tick had
fired since the anchor).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from connectors.cron.event import schedule_arn, scheduled_event
from streamfn.events.contract import SourceContext

from .config import CronConfig
from .schedule import parse_schedule, plan_tick

_NAMESPACE = uuid.UUID("6f3d2a5e-8c41-4e0b-9a57-2b1c0d9e7f10")
REPLAN = 60.0
"""Longest sleep, in seconds: the loop re-plans from the wall clock at least this often."""


@dataclass(frozen=True, slots=True)
class CronStatistics:
    bad_checkpoints: int
    """Checkpoints found unreadable (and replaced or ignored) since the source started."""


class CronSource:
    def __init__(self, config: CronConfig) -> None:
        self._config = config
        self._bad_checkpoints = 0

    def statistics(self) -> CronStatistics:
        return CronStatistics(bad_checkpoints=self._bad_checkpoints)

    async def run(self, context: SourceContext) -> None:
        config = self._config
        checkpoints = await context.get_checkpoints()
        now = resumed = self._now(context)
        stored = checkpoints.get("anchor")
        if stored is None:  # first start; instances of a fleet starting together agree
            stored = await context.setdefault_checkpoint("anchor", _encode(now))
        anchor = self._read(context, "anchor", stored)
        if anchor is None:
            anchor = now
            await context.put_checkpoint("anchor", _encode(anchor))
        last_fired = self._read(context, "last_fired", checkpoints.get("last_fired"))
        schedule = parse_schedule(config.schedule, config.timezone, anchor=anchor)
        arn = schedule_arn(context.name, region=context.region, account=context.account)
        payload = config.payload()
        context.log.info(
            "schedule %s (%s) invokes %s", config.schedule, config.timezone, context.function
        )
        while True:
            now = self._now(context)
            plan = plan_tick(
                schedule, last_fired=last_fired, started=anchor, now=now, catch_up=config.catch_up
            )
            if plan.skipped is not None:
                context.log.info(
                    "skipped the tick of %s missed while stopped (catch_up = false)",
                    plan.skipped.isoformat(),
                )
                last_fired = plan.skipped
                await context.put_checkpoint("last_fired", _encode(last_fired))
            if plan.fire is not None:
                if plan.fire < resumed:  # its time came while this source was not running
                    context.log.info(
                        "catching up: firing the tick of %s once, for every tick "
                        "missed while stopped",
                        plan.fire.isoformat(),
                    )
                key = f"{context.name}/{plan.fire.isoformat()}"
                event = (
                    payload
                    if payload is not None
                    else scheduled_event(
                        event_id=str(uuid.uuid5(_NAMESPACE, key)),
                        time=plan.fire,
                        rule_arn=arn,
                        region=context.region,
                        account=context.account,
                    )
                )
                await context.emit(event, key, checkpoint=("last_fired", _encode(plan.fire)))
                last_fired = plan.fire
                continue
            if plan.next_wakeup is None:
                context.log.info("schedule %s will not fire again", config.schedule)
                return
            await context.clock.sleep(min(REPLAN, (plan.next_wakeup - now).total_seconds()))

    @staticmethod
    def _now(context: SourceContext) -> datetime:
        return datetime.fromtimestamp(context.clock.time(), UTC)

    def _read(self, context: SourceContext, key: str, value: bytes | None) -> datetime | None:
        """A checkpointed moment; None (logged and counted) when it cannot be read."""
        if value is None:
            return None
        moment = _decode(value)
        if moment is None:
            self._bad_checkpoints += 1
            context.log.warning(
                "checkpoint %s = %r is not an ISO 8601 time with a zone; %s",
                key,
                value[:100],
                "starting the schedule anew now"
                if key == "anchor"
                else "treating it as if no tick had fired since the anchor",
            )
        return moment


def _encode(moment: datetime) -> bytes:
    return moment.isoformat().encode()


def _decode(value: bytes) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    return moment if moment.utcoffset() is not None else None
