"""compose.yaml and the Dockerfile are correct by construction: Docker does not run on the
development machines, so these checks are what stands between a typo and a broken demo.

They read compose.yaml (PyYAML), the Dockerfile, the Makefile and the demo's streamfn.toml,
and check that the pieces agree with each other: images are pinned, ports bind loopback
only, start order waits on health, clients use a listener Kafka advertises, the image
installs exactly what ``make`` installs, and the files the services run exist.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
MAKEFILE = ROOT / "Makefile"


# -- small parsers ----------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict) and isinstance(document.get("services"), dict)
    return document


def services() -> dict[str, dict[str, Any]]:
    return load_compose()["services"]  # type: ignore[no-any-return]


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment, from either the mapping or the ``KEY=VALUE`` list form."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(item.split("=", 1) for item in raw)
    return {key: str(value) for key, value in raw.items()}


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """``{service: condition}``; the short list form means ``service_started``."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return {name: "service_started" for name in raw}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, rest = (pending + line).strip().partition(" ")
        instructions.append((keyword.upper(), " ".join(rest.split())))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


class Makefile:
    """Just enough of make: variable assignments and rules with their recipes."""

    def __init__(self, text: str) -> None:
        self.variables: dict[str, str] = {}
        self.recipes: dict[str, list[str]] = {}
        target: str | None = None
        for line in text.splitlines():
            if line.startswith("\t") and target is not None:
                self.recipes[target].append(line.strip().lstrip("@-"))
                continue
            target = None
            if not line.strip() or line.startswith("#"):
                continue
            assignment = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(?::=|\?=|=)\s*(.*)$", line)
            if assignment:
                self.variables[assignment[1]] = assignment[2].strip()
                continue
            rule = re.match(r"^([^:=\s][^:=]*?)\s*:(?!=)", line)
            if rule and not rule[1].startswith("."):
                target = self.expand(rule[1])
                self.recipes[target] = []

    def expand(self, text: str) -> str:
        """Expand ``$(NAME)``; a variable computed by ``$(shell ...)`` stays ``$(NAME)``."""

        def value(match: re.Match[str]) -> str:
            raw = self.variables.get(match[1])
            if raw is None or "$(shell" in raw:
                return match[0]
            return self.expand(raw)

        return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value, text)

    def install_commands(self, target: str) -> list[str]:
        """The recipe of ``target``, expanded, without its bookkeeping ``touch``."""
        assert target in self.recipes, f"Makefile has no rule for {target!r}"
        recipe = [self.expand(line) for line in self.recipes[target]]
        return [" ".join(line.split()) for line in recipe if not line.startswith("touch ")]


def makefile() -> Makefile:
    return Makefile(MAKEFILE.read_text())


def demo_config() -> tuple[Path, dict[str, Any]]:
    """The streamfn.toml the streamfn service runs, as a path in the repository."""
    command = argv(services()["streamfn"].get("command"))
    assert command[:1] == ["run"], f"streamfn service must run `streamfn run CONFIG`: {command}"
    assert len(command) == 2, f"the command must name the config file: {command}"
    path = ROOT / command[1]
    assert path.is_file(), f"{command[1]} does not exist"
    return path, tomllib.loads(path.read_text())


def kafka_sources(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [s for s in config.get("event_sources", []) if s.get("type") == "kafka"]


# -- compose.yaml -----------------------------------------------------------------------------


def test_the_demo_services_exist() -> None:
    assert {"kafka", "streamfn", "producer"} <= services().keys()


def test_every_dependency_names_a_service() -> None:
    names = services().keys()
    for name, service in services().items():
        for dependency, condition in depends_on(service).items():
            assert dependency in names, f"{name} depends on unknown service {dependency!r}"
            assert condition in {
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            }, f"{name}: unknown condition {condition!r}"
            if condition == "service_healthy":
                assert "healthcheck" in services()[dependency], (
                    f"{name} waits for {dependency} to be healthy, which has no healthcheck"
                )


def test_every_published_port_binds_loopback_only() -> None:
    for name, service in services().items():
        for port in service.get("ports", []):
            if isinstance(port, Mapping):
                assert port.get("host_ip") == "127.0.0.1", f"{name}: {port}"
            else:
                parts = str(port).split(":")
                assert len(parts) == 3 and parts[0] == "127.0.0.1", (
                    f"{name}: port {port!r} must be published as 127.0.0.1:HOST:CONTAINER"
                )


def test_kafka_is_a_pinned_official_image_in_kraft_mode() -> None:
    kafka = services()["kafka"]
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", kafka["image"]), kafka["image"]

    env = environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 1 and voters[0].startswith(f"{node_id}@"), voters
    assert "CLUSTER_ID" in env
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"

    listeners = listener_map(env["KAFKA_LISTENERS"])
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners, "the controller listener must be one of KAFKA_LISTENERS"
    assert voters[0].endswith(f":{listeners[controller].rpartition(':')[2]}"), (
        "the quorum voter must point at the controller listener's port"
    )
    advertised = listener_map(env["KAFKA_ADVERTISED_LISTENERS"])
    assert controller not in advertised
    for name in (*listeners, *advertised):
        assert name in protocols, f"listener {name} has no security protocol"
    assert advertised.keys() <= listeners.keys()
    assert env.get("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT") in advertised


def listener_map(value: str) -> dict[str, str]:
    """``"A://host:1,B://:2"`` -> ``{"A": "host:1", "B": ":2"}``."""
    return dict(item.split("://", 1) for item in value.split(","))


def test_kafka_healthcheck_asks_the_broker() -> None:
    check = services()["kafka"]["healthcheck"]
    assert {"test", "interval", "retries"} <= check.keys()
    command = " ".join(argv(check["test"]))
    assert re.search(r"/opt/kafka/bin/kafka-(topics|broker-api-versions)\.sh", command)
    assert "--bootstrap-server" in command


def test_clients_use_a_listener_kafka_advertises() -> None:
    advertised = set(
        listener_map(environment(services()["kafka"])["KAFKA_ADVERTISED_LISTENERS"]).values()
    )
    _, config = demo_config()
    for source in kafka_sources(config):
        for server in source["bootstrap_servers"].split(","):
            assert server in advertised, f"streamfn.toml bootstrap {server} is not advertised"
    producer_bootstrap = environment(services()["producer"]).get("BOOTSTRAP_SERVERS")
    assert producer_bootstrap in advertised
    topics = services().get("topics")
    if topics is not None:
        command = argv(topics.get("command"))
        assert command[command.index("--bootstrap-server") + 1] in advertised


def test_streamfn_builds_this_repository_and_waits_for_a_healthy_kafka() -> None:
    streamfn = services()["streamfn"]
    build = streamfn["build"]
    context = build if isinstance(build, str) else build.get("context")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert context == "."
    assert (ROOT / dockerfile).resolve() == DOCKERFILE
    assert depends_on(streamfn)["kafka"] == "service_healthy"
    assert {"test", "interval", "retries"} <= streamfn["healthcheck"].keys()


def test_producer_waits_for_kafka_and_streamfn_and_runs_the_demo_script() -> None:
    producer = services()["producer"]
    dependencies = depends_on(producer)
    assert dependencies["kafka"] == "service_healthy"
    assert "streamfn" in dependencies
    command = argv(producer.get("entrypoint")) + argv(producer.get("command"))
    scripts = [part for part in command if part.endswith(".py")]
    assert scripts, f"producer runs no script: {command}"
    for script in scripts:
        assert (ROOT / script).is_file(), f"{script} does not exist"
    assert any(Path(part).name.startswith("python") for part in command)


def test_the_topics_job_creates_the_topic_streamfn_reads() -> None:
    topics = services().get("topics")
    if topics is None:
        pytest.skip("no topics job: the demo relies on broker-side topic creation")
    command = argv(topics.get("command"))
    created = command[command.index("--topic") + 1]
    _, config = demo_config()
    assert {source["topic"] for source in kafka_sources(config)} == {created}
    assert depends_on(services()["streamfn"]).get("topics") == "service_completed_successfully"


def test_the_demo_config_has_a_kafka_source_for_a_defined_function() -> None:
    path, config = demo_config()
    sources = kafka_sources(config)
    assert sources, "the compose demo's streamfn.toml needs a kafka event source"
    for source in sources:
        assert {"bootstrap_servers", "topic", "function"} <= source.keys()
        function = config["functions"][source["function"].split(":")[0]]
        module, _, attribute = function["handler"].partition(":")
        code = path.parent / function.get("code", ".")
        handler_file = code / (module.replace(".", "/") + ".py")
        assert handler_file.is_file(), f"{handler_file} does not exist"
        assert re.search(rf"^(async )?def {attribute}\(", handler_file.read_text(), re.M)


def test_streamfn_keeps_its_state_and_failures_on_a_volume() -> None:
    streamfn = services()["streamfn"]
    mounts = [str(v).split(":")[1] for v in streamfn.get("volumes", [])]
    _, config = demo_config()
    state_dir = config.get("service", {}).get("state_dir", ".streamfn")
    paths = [state_dir] + [
        s["on_failure"].removeprefix("dir:")
        for s in config["event_sources"]
        if str(s.get("on_failure", "")).startswith("dir:")
    ]
    for path in paths:
        assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts), (
            f"{path} is not on a volume of the streamfn service (mounts: {mounts})"
        )
    assert state_dir in " ".join(argv(streamfn["healthcheck"]["test"])), (
        "the healthcheck should look at the state directory the config names"
    )


# -- Dockerfile and Makefile ------------------------------------------------------------------


def test_the_image_installs_exactly_what_make_installs() -> None:
    make = makefile()
    stamp = make.expand("$(STAMP)")
    expected = make.install_commands(stamp)
    assert any("-m venv" in line for line in expected), expected
    assert any("pip install" in line and "-e" in line for line in expected), expected

    installed: list[str] = []
    for keyword, arguments in dockerfile_instructions():
        if keyword != "RUN":
            continue
        for command in (part.strip() for part in arguments.split("&&")):
            words = shlex.split(command)
            if words[:1] == ["make"]:
                for target in words[1:]:
                    assert target in make.recipes, f"Dockerfile runs unknown make target {target}"
                    installed += make.install_commands(target)
            elif "pip install" in command or "-m venv" in command:
                installed.append(command)

    assert len(installed) == len(expected), f"Dockerfile installs {installed}, make {expected}"
    for ours, theirs in zip(installed, expected, strict=True):
        # $(PYTHON) is found by make at run time; in the image it is some python3.
        pattern = re.escape(theirs).replace(re.escape("$(PYTHON)"), r"(?:\S*/)?python3?(?:\.\d+)?")
        assert ours == theirs or re.fullmatch(pattern, ours), (
            f"Dockerfile runs {ours!r}, Makefile {theirs!r}"
        )


def test_the_image_runs_streamfn_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    base = next(arguments for keyword, arguments in instructions if keyword == "FROM")
    assert re.fullmatch(r"python:3\.11-slim(?:-\w+)?", base), base
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}

    entrypoint = [eval_json(a) for k, a in instructions if k == "ENTRYPOINT"][-1]
    assert entrypoint[0].endswith(".venv/bin/streamfn")
    cmd = [eval_json(a) for k, a in instructions if k == "CMD"][-1]
    assert cmd[0] == "run" and (ROOT / cmd[1]).is_file()


def eval_json(arguments: str) -> list[str]:
    value = yaml.safe_load(arguments)  # the exec form is a JSON array
    assert isinstance(value, list), f"use the exec form: {arguments}"
    return [str(part) for part in value]


def test_the_build_context_leaves_out_the_host_virtualenv() -> None:
    # A copied .venv (with its install stamp) would make `make` skip the install.
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git"} <= ignored


def test_virtualenv_paths_match_the_workdir_and_the_makefile() -> None:
    # compose.yaml and ENTRYPOINT call programs in the image's virtualenv by absolute path;
    # that is WORKDIR plus the Makefile's $(BIN).
    instructions = dockerfile_instructions()
    workdir = [a for k, a in instructions if k == "WORKDIR"][-1]
    bin_dir = f"{workdir}/{makefile().expand('$(BIN)')}/"
    paths = [eval_json(a)[0] for k, a in instructions if k == "ENTRYPOINT"]
    for service in services().values():
        if "build" in service:
            paths += argv(service.get("entrypoint"))
            paths += argv(service.get("healthcheck", {}).get("test"))
    venv_paths = [p for p in paths if "/.venv/" in p or p.startswith(".venv/")]
    assert venv_paths, "expected the image's programs to be called from its virtualenv"
    for path in venv_paths:
        assert path.startswith(bin_dir), f"{path} is not under {bin_dir}"
