"""The container image, read from the Dockerfile (no engine runs here): multi-stage, slim,
non-root, no build tools in the final stage, one image for every process."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|cc|clang|make|build-essential|python3-dev|libc6-dev)\b")
Instruction = tuple[str, str]


def instructions(text: str) -> list[Instruction]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return instructions((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def stages(dockerfile: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in dockerfile:
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def base_image(dockerfile: list[Instruction], stage: list[Instruction]) -> str:
    args = dict(a.split("=", 1) for k, a in dockerfile if k == "ARG" and "=" in a)
    image = stage[0][1].split()[0]
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)


def test_image_is_built_in_two_stages(stages: list[list[Instruction]]) -> None:
    assert len(stages) >= 2
    assert stages[0][0][1].endswith("AS builder")
    final_copies = [a for k, a in stages[-1] if k == "COPY"]
    assert any(a.startswith("--from=builder") for a in final_copies)


def test_both_stages_start_from_python_311_slim(
    dockerfile: list[Instruction], stages: list[list[Instruction]]
) -> None:
    for stage in stages:
        assert base_image(dockerfile, stage).startswith("python:3.11-slim")


def test_final_stage_runs_as_a_non_root_user(stages: list[list[Instruction]]) -> None:
    users = [a for k, a in stages[-1] if k == "USER"]

    assert users, "the final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid not in ("root", "0")
    assert uid.isdigit(), "a numeric uid lets Kubernetes verify runAsNonRoot"


def test_final_stage_has_no_build_tools(stages: list[list[Instruction]]) -> None:
    for keyword, args in stages[-1]:
        if keyword == "RUN":
            assert not BUILD_TOOLS.search(args), args
            assert "apt-get install" not in args
            assert "pip install" not in args
    builder_runs = " ".join(a for k, a in stages[0] if k == "RUN")
    assert "pip wheel" in builder_runs


def test_one_image_for_every_process(stages: list[list[Instruction]]) -> None:
    entrypoint = [a for k, a in stages[-1] if k == "ENTRYPOINT"]
    command = [a for k, a in stages[-1] if k == "CMD"]

    assert json.loads(entrypoint[-1]) == ["jitbroker"]
    assert json.loads(command[-1]) == ["serve"]


def test_chart_runs_the_images_user(stages: list[list[Instruction]]) -> None:
    uid = int([a for k, a in stages[-1] if k == "USER"][-1].split(":")[0])
    values = yaml.safe_load((ROOT / "charts/jitbroker/values.yaml").read_text())

    assert values["podSecurityContext"]["runAsUser"] == uid
