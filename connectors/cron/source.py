"""The cron source's I/O: sleep until the next tick, emit it, checkpoint it.

The decision of what to fire is :func:`~connectors.cron.schedule.plan_tick`'s; this loop
only reads the clock, sleeps, emits and checkpoints. Two checkpoints are kept: ``anchor``
(when the schedule first started; ``rate()`` ticks are counted from it and a first start
that crashed before its first tick still fires it) and ``last_fired`` (the scheduled time
of the last tick durably queued, or deliberately skipped).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from connectors.cron.event import schedule_arn, scheduled_event
from streamfn.events.contract import SourceContext

from .config import CronConfig
from .schedule import parse_schedule, plan_tick

_NAMESPACE = uuid.UUID("6f3d2a5e-8c41-4e0b-9a57-2b1c0d9e7f10")


class CronSource:
    def __init__(self, config: CronConfig) -> None:
        self._config = config

    async def run(self, context: SourceContext) -> None:
        config = self._config
        checkpoints = await context.get_checkpoints()
        now = resumed = self._now(context)
        stored = checkpoints.get("anchor")
        if stored is None:  # first start; instances of a fleet starting together agree
            stored = await context.setdefault_checkpoint("anchor", _encode(now))
        anchor = datetime.fromisoformat(stored.decode())
        last_fired = _decode(checkpoints.get("last_fired"))
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
            await context.clock.sleep((plan.next_wakeup - now).total_seconds())

    @staticmethod
    def _now(context: SourceContext) -> datetime:
        return datetime.fromtimestamp(context.clock.time(), UTC)


def _encode(moment: datetime) -> bytes:
    return moment.isoformat().encode()


def _decode(value: bytes | None) -> datetime | None:
    return datetime.fromisoformat(value.decode()) if value is not None else None
