"""The filedrop source on real directories, against the public test kit's in-memory engine:
it passes the conformance checks, and bad directory entries never stop it."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from connectors.filedrop.config import FiledropConfig
from connectors.filedrop.source import FiledropSource
from streamfn.testing import MemoryEngine, check_event_source

pytestmark = pytest.mark.anyio
LIMIT = 10.0  # seconds any one wait may take


async def test_filedrop_conforms(tmp_path: Path) -> None:
    config = FiledropConfig(function="fn", path="inbox", stable_for=0.2)

    async def produce() -> None:
        (tmp_path / "inbox").mkdir(exist_ok=True)
        for name in ("a.txt", "b.txt", "c d.txt"):
            (tmp_path / "inbox" / name).write_text(name)

    engine = await check_event_source(
        lambda: FiledropSource(config), produce=produce, expected=3, root=tmp_path
    )
    keys = sorted(event["Records"][0]["s3"]["object"]["key"] for event, _ in engine.events)
    assert keys == ["a.txt", "b.txt", "c+d.txt"]


def keys(engine: MemoryEngine) -> set[str]:
    events: list[tuple[Any, str]] = engine.events
    return {event["Records"][0]["s3"]["object"]["key"] for event, _ in events}


async def eventually(condition: Callable[[], object], what: str) -> None:
    with anyio.move_on_after(LIMIT):
        while not condition():  # noqa: ASYNC110 - observing a source from outside
            await anyio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {LIMIT}s waiting for {what}")


@asynccontextmanager
async def running(source: FiledropSource, engine: MemoryEngine, root: Path) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run, engine.context(root=root))
        yield
        tg.cancel_scope.cancel()


def old(path: Path) -> None:
    """Make a file look long finished (complete at first sight)."""
    then = time.time() - 60
    os.utime(path, (then, then), follow_symlinks=False)


def make_bad_entries(inbox: Path) -> None:
    (inbox / "a").symlink_to(inbox / "b")  # a -> b -> a
    (inbox / "b").symlink_to(inbox / "a")
    (inbox / "x").symlink_to(inbox / "x")  # x -> x
    os.mkfifo(inbox / "pipe")  # reading it would block forever
    Path(os.fsdecode(os.fsencode(inbox) + b"/\xff\xfe.txt")).write_bytes(b"not UTF-8")


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_bad_entries_are_skipped_once_each_and_everything_else_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    make_bad_entries(inbox)
    (inbox / "good.txt").write_text("fine")
    for name in ("good.txt", "pipe"):
        old(inbox / name)
    config = FiledropConfig(function="fn", path="inbox", stable_for=0.1, rescan_interval=0.1)
    source, engine = FiledropSource(config), MemoryEngine()
    async with running(source, engine, tmp_path):
        await eventually(lambda: keys(engine) == {"good.txt"}, "the good file")
        # Several full walks later: still one warning per bad entry.
        await eventually(lambda: source.statistics().skipped_now == 5, "5 entries skipped")
        walks = source.statistics()
        (inbox / "later.txt").write_text("after the bad ones")
        await eventually(lambda: "later.txt" in keys(engine), "a file dropped later")
        await anyio.sleep(0.5)  # five more rescans, to count warnings after
    said = warnings(caplog)
    assert len(said) == 5, said
    assert sorted(said) == [
        "skipping \\xff\\xfe.txt: its name is not UTF-8 (S3 object keys are)",
        "skipping a: cannot follow the symlink: Too many levels of symbolic links",
        "skipping b: cannot follow the symlink: Too many levels of symbolic links",
        "skipping pipe: not a regular file",
        "skipping x: cannot follow the symlink: Too many levels of symbolic links",
    ]
    assert walks.skipped == source.statistics().skipped == 5
    assert keys(engine) == {"good.txt", "later.txt"}


async def test_a_skipped_entry_is_tried_again_once_it_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "x").symlink_to(inbox / "x")
    config = FiledropConfig(function="fn", path="inbox", stable_for=0.1, rescan_interval=0.1)
    source, engine = FiledropSource(config), MemoryEngine()
    async with running(source, engine, tmp_path):
        await eventually(lambda: source.statistics().skipped == 1, "the loop skipped")
        (inbox / "x").unlink()
        (inbox / "x").write_text("a real file now")
        await eventually(lambda: keys(engine) == {"x"}, "the repaired entry")
        assert source.statistics().skipped_now == 0


async def test_a_file_that_cannot_be_read_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # /proc/self/mem is a regular file whose reads fail (EIO at offset 0), for root too,
    # unlike a chmod 000 file: the watched directory here is the engine's own /proc entry.
    caplog.set_level(logging.WARNING)
    config = FiledropConfig(function="fn", path="/proc/self", suffix="mem", rescan_interval=0.2)
    source, engine = FiledropSource(config), MemoryEngine()
    async with running(source, engine, tmp_path):
        await eventually(
            lambda: "skipping mem: cannot read it: Input/output error" in warnings(caplog),
            "the EIO warning",
        )
        await anyio.sleep(0.5)  # more rescans: no second warning
    assert warnings(caplog).count("skipping mem: cannot read it: Input/output error") == 1
    assert engine.events == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file all the same")
async def test_a_file_without_read_permission_is_skipped_until_it_has_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "secret.txt").write_text("locked")
    (inbox / "secret.txt").chmod(0)
    old(inbox / "secret.txt")
    config = FiledropConfig(function="fn", path="inbox", stable_for=0.1, rescan_interval=0.1)
    source, engine = FiledropSource(config), MemoryEngine()
    async with running(source, engine, tmp_path):
        await eventually(lambda: source.statistics().skipped == 1, "the unreadable file")
        (inbox / "secret.txt").chmod(0o644)
        await eventually(lambda: keys(engine) == {"secret.txt"}, "the file once readable")
    assert warnings(caplog) == ["skipping secret.txt: cannot read it: Permission denied"]


async def test_checkpoints_of_deleted_files_are_pruned_by_the_next_full_walk(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    for name in ("keep.txt", "gone.txt", "sub/gone-too.txt"):
        (inbox / name).write_text(name)
        old(inbox / name)
    config = FiledropConfig(function="fn", path="inbox", rescan_interval=0.2)
    source, engine = FiledropSource(config), MemoryEngine()
    async with running(source, engine, tmp_path):
        await eventually(lambda: len(engine.events) == 3, "three files")
        assert set(engine.checkpoints) == {"keep.txt", "gone.txt", "sub/gone-too.txt"}
        (inbox / "gone.txt").unlink()
        (inbox / "sub" / "gone-too.txt").unlink()
        await eventually(lambda: set(engine.checkpoints) == {"keep.txt"}, "the pruning")
        assert source.statistics().pruned == 2
        assert source.statistics().processed == 1
    # A restart from the pruned checkpoints emits nothing again.
    again = MemoryEngine(checkpoints=dict(engine.checkpoints))
    source = FiledropSource(config)
    async with running(source, again, tmp_path):
        await eventually(lambda: source.statistics().processed == 1, "the checkpoints read")
        await anyio.sleep(0.5)  # two full walks, to see nothing comes
    assert again.events == []


async def test_a_directory_that_cannot_be_listed_loses_no_checkpoints(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The watched directory goes away for a while (an unmounted share, say): the walk
    # cannot list it, which is no evidence that the files in it are gone for good.
    caplog.set_level(logging.WARNING)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "f.txt").write_text("f")
    old(inbox / "f.txt")
    config = FiledropConfig(function="fn", path="inbox", rescan_interval=0.1)
    source, engine = FiledropSource(config), MemoryEngine()
    async with running(source, engine, tmp_path):
        await eventually(lambda: len(engine.events) == 1, "the file")
        os.rename(inbox, tmp_path / "away")
        await eventually(lambda: source.statistics().skipped == 1, "the walk to fail")
        await anyio.sleep(0.3)  # more full walks that cannot list it
        assert set(engine.checkpoints) == {"f.txt"}
        assert source.statistics().pruned == 0
        os.rename(tmp_path / "away", inbox)
        await anyio.sleep(0.3)  # walks that find it again
    assert len(engine.events) == 1
    assert set(engine.checkpoints) == {"f.txt"}
    assert warnings(caplog) == [
        f"skipping {inbox}: cannot list the directory (its files keep their checkpoints)"
    ]


async def test_files_deleted_as_soon_as_they_appear_never_stop_the_source(
    tmp_path: Path,
) -> None:
    # Files that vanish between being found and being read (the race cannot be scheduled
    # from outside, so make it often): no event for a file never read, no failure, and
    # later files are taken.
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = FiledropConfig(function="fn", path="inbox", stable_for=0)
    source, engine = FiledropSource(config), MemoryEngine()
    async with running(source, engine, tmp_path):
        await anyio.sleep(0.1)  # let the first walk finish
        for i in range(300):
            path = inbox / f"brief-{i}.txt"
            path.write_text("x" * (i * 500))
            path.unlink()
        (inbox / "last.txt").write_text("done")
        await eventually(lambda: "last.txt" in keys(engine), "the last file")
    assert all(key.startswith("brief-") or key == "last.txt" for key in keys(engine))
