"""Every example pipeline in the repository is a valid config (as `streamfn validate` sees it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamfn.config import load_config
from streamfn.plugins import Registry

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*/streamfn.toml"))


def test_there_are_examples() -> None:
    assert {path.parent.name for path in EXAMPLES} >= {"quickstart", "compose"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.parent.name)
def test_example_config_is_valid(path: Path) -> None:
    config = load_config(path, Registry.discover())
    assert config.functions and config.event_sources
    for name in config.functions:
        assert config.code_dir(name).is_dir(), f"{path}: code directory of {name} is missing"
