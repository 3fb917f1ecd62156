"""docker-compose.yml cannot run here (no Docker engine), so check what can be checked:
every llmtel service runs a command our CLI accepts, with settings our Settings knows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from llmtel.cli import build_parser
from llmtel.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def llmtel_services() -> dict[str, dict[str, Any]]:
    return {
        name: spec
        for name, spec in compose()["services"].items()
        if spec.get("image") == "llmtel:local"
    }


def test_every_role_of_the_distributed_stack_is_present() -> None:
    commands = {spec["command"][0] for spec in llmtel_services().values()}
    assert commands >= {"migrate", "ingest", "streams", "sink", "api"}


@pytest.mark.parametrize("service", sorted(llmtel_services()))
def test_service_command_parses_and_settings_exist(service: str) -> None:
    spec = llmtel_services()[service]
    build_parser().parse_args(spec["command"])  # SystemExit on an unknown command/option
    fields = {f"LLMTEL_{name.upper()}" for name in Settings.model_fields}
    unknown = {k for k in spec.get("environment", {}) if k.startswith("LLMTEL_")} - fields
    assert unknown == set()


def test_files_the_stack_mounts_exist() -> None:
    for spec in compose()["services"].values():
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    assert (ROOT / "deploy" / "Dockerfile").exists()
