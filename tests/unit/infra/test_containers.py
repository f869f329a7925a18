"""What can be checked of the container files without a Docker engine (none runs here)."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_compose_file_parses_and_describes_the_whole_stack():
    services = compose()["services"]

    assert {"moto", "bootstrap", "bedrock", "mailsink", "preprocess", "submit", "poll", "postprocess", "notify"} <= set(services)


def test_every_compose_command_runs_a_module_that_exists():
    for name, service in compose()["services"].items():
        command = service["command"]
        assert command[:2] == ["python", "-m"], f"{name} must run `python -m <module>`"
        assert importlib.util.find_spec(command[2]) is not None, f"{name} runs {command[2]}, which does not exist"


def test_every_service_uses_the_one_image():
    images = {service.get("image") for service in compose()["services"].values()}

    assert images == {"quarry:local"}


def test_the_dockerfile_installs_from_the_projects_own_pins_and_runs_as_non_root():
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert "COPY pyproject.toml" in dockerfile and re.search(r"pip install '\.\[local\]'", dockerfile)
    assert re.search(r"^USER (?!root)\S+", dockerfile, re.MULTILINE)
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)


def test_the_compose_file_is_valid_to_docker_compose_itself():
    if shutil.which("docker") is None:
        pytest.skip("the docker client is not installed")
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker client has no compose plugin here")
    result = subprocess.run(["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
