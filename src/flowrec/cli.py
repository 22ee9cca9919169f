"""One entry point per stage, run by Snakemake (`script:`) or from the command line, calling one function.

A stage module declares its function and its arguments once:

    STAGE = Stage(
        run=evaluate,                       # run(**kwargs): plain paths, settings dicts, wildcards
        doc=__doc__,
        inputs={"predictions": "predictions parquet (docs/formats.md)", ...},
        outputs={"metrics": "metrics JSON"},
        params={"metrics": Param("metrics block", block="metrics")},
        wildcards={"dataset": "dataset name (labels the output)"},
    )
    if __name__ == "__main__":
        STAGE.main(globals().get("snakemake"))

Under Snakemake, inputs, outputs, params and wildcards are read from the rule by name and the log goes
to the rule's log file. From the command line (`python -m flowrec.stages.X --help`) every input and
output is an option `--name PATH`, every param an option `--name JSON` (or `--name @file.yaml`), and
`--config config.yaml` fills params from the config blocks they name; keys left out take the defaults
of config/schema.yaml when the stage builds its settings. `threads`, `nproc` and `log` reach `run` when
its signature asks for them.
"""

from __future__ import annotations

import argparse
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flowrec.logs import log_to


@dataclass(frozen=True)
class File:
    """An input or output path; `optional` ones may be absent (e.g. p_ui only for D3)."""

    help: str
    optional: bool = False
    multiple: bool = False  # a list of paths (Snakemake: the named input as a list; CLI: nargs="+")


@dataclass(frozen=True)
class Param:
    """A setting: `block` is where --config finds it (dotted path, `{wildcard}` filled in), if anywhere."""

    help: str
    block: str | None = None
    default: Any = field(default=None)


def _spec(value: str | File | Param, kind: type) -> Any:
    return kind(value) if isinstance(value, str) else value


def _plain(value: Any) -> Any:
    """Snakemake's Namespace/InputFiles/params -> plain dicts, lists and strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "items") and callable(value.items) and not isinstance(value, str | bytes):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _json_or_file(text: str) -> Any:
    """A param given on the command line: JSON/YAML text, or @path to a YAML/JSON file."""
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            return yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise SystemExit(f"{path}: not valid YAML/JSON ({err})") from err
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SystemExit(f"could not parse {text!r} as YAML/JSON ({err})") from err


def _lookup(config: Mapping, dotted: str, source: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise SystemExit(f"{source}: no key `{dotted}` (missing `{part}`)")
        node = node[part]
    return node


class Stage:
    """A stage's function and its named arguments; see the module docstring."""

    def __init__(
        self,
        run: Callable[..., Any],
        doc: str | None,
        inputs: Mapping[str, str | File] | None = None,
        outputs: Mapping[str, str | File] | None = None,
        params: Mapping[str, str | Param] | None = None,
        wildcards: Mapping[str, str] | None = None,
    ):
        self.run = run
        self.doc = (doc or "").strip()
        self.inputs = {k: _spec(v, File) for k, v in (inputs or {}).items()}
        self.outputs = {k: _spec(v, File) for k, v in (outputs or {}).items()}
        self.params = {k: _spec(v, Param) for k, v in (params or {}).items()}
        self.wildcards = dict(wildcards or {})
        self._accepts = set(inspect.signature(run).parameters)

    # --- command line ---
    def parser(self, prog: str | None = None) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(
            prog=prog, description=self.doc, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        for title, specs in (("inputs", self.inputs), ("outputs", self.outputs)):
            group = parser.add_argument_group(title)
            for name, spec in specs.items():
                group.add_argument(
                    f"--{name.replace('_', '-')}",
                    dest=name,
                    required=not spec.optional,
                    nargs="+" if spec.multiple else None,
                    metavar="PATH",
                    help=spec.help,
                )
        group = parser.add_argument_group("settings")
        for name, spec in self.params.items():
            where = f"; default: config block `{spec.block}` of --config" if spec.block else ""
            group.add_argument(
                f"--{name.replace('_', '-')}", dest=name, metavar="JSON|@FILE", help=f"{spec.help}{where}"
            )
        group.add_argument(
            "--config", metavar="FILE", help="config file (e.g. config.yaml) to read blocks from"
        )
        for name, help_text in self.wildcards.items():
            group.add_argument(f"--{name.replace('_', '-')}", dest=name, required=True, help=help_text)
        run_group = parser.add_argument_group("run")
        if "threads" in self._accepts:
            run_group.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
        if "nproc" in self._accepts:
            run_group.add_argument(
                "--nproc", type=int, default=1, help="processes, one per device (torchrun)"
            )
        run_group.add_argument("--log", metavar="FILE", help="also write the log to FILE")
        return parser

    def kwargs_from_argv(
        self, argv: list[str] | None = None, prog: str | None = None
    ) -> tuple[dict, str | None]:
        args = self.parser(prog).parse_args(argv)
        config = None
        if args.config:
            try:
                config = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as err:
                raise SystemExit(f"--config {args.config}: {err}") from err
        kwargs: dict[str, Any] = {}
        for name in (*self.inputs, *self.outputs, *self.wildcards):
            kwargs[name] = getattr(args, name)
        for name, spec in self.params.items():
            given = getattr(args, name)
            if given is not None:
                kwargs[name] = _json_or_file(given)
            elif spec.block and config is not None:
                block = spec.block.format(**{w: kwargs[w] for w in self.wildcards})
                kwargs[name] = _plain(_lookup(config, block, args.config))
            else:
                kwargs[name] = spec.default
        for name in ("threads", "nproc"):
            if name in self._accepts:
                kwargs[name] = getattr(args, name)
        return kwargs, args.log

    # --- Snakemake ---
    def kwargs_from_snakemake(self, smk) -> dict:
        kwargs: dict[str, Any] = {}
        for source, specs in ((smk.input, self.inputs), (smk.output, self.outputs)):
            for name, spec in specs.items():
                value = getattr(source, name, None)
                if value is None and not spec.optional:
                    raise ValueError(f"rule {smk.rule}: no input/output named {name!r}")
                kwargs[name] = (list(value) if spec.multiple else str(value)) if value is not None else None
        for name, spec in self.params.items():
            kwargs[name] = _plain(getattr(smk.params, name, spec.default))
        for name in self.wildcards:
            kwargs[name] = str(getattr(smk.wildcards, name))
        if "threads" in self._accepts:
            kwargs["threads"] = int(smk.threads)
        if "nproc" in self._accepts:
            resources = smk.resources
            nproc = int(getattr(resources, "nproc", 0) or 0) or int(getattr(resources, "gpu", 0) or 0)
            kwargs["nproc"] = max(nproc, 1)
        return kwargs

    def main(self, snakemake=None, argv: list[str] | None = None, prog: str | None = None) -> Any:
        """Run under Snakemake when its object is given, else from the command line."""
        if snakemake is not None:
            kwargs, log_path = (
                self.kwargs_from_snakemake(snakemake),
                (snakemake.log[0] if snakemake.log else None),
            )
        else:
            kwargs, log_path = self.kwargs_from_argv(argv, prog)
        log = log_to(log_path)
        shown = {k: v for k, v in kwargs.items() if k in self.params or k in self.wildcards}
        log.info("%s: %s", self.run.__module__, json.dumps(shown, default=str))
        try:
            return self.run(**kwargs)
        except Exception:
            # into the rule's log file too: under Snakemake, stderr is not where a user looks first
            log.exception("%s failed", self.run.__module__)
            raise
