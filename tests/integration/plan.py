"""The jobs a dry run plans, with their params: `python -m tests.integration.plan CONFIG... [--target T]`
prints one JSON object per job (rule, wildcards, params, named inputs, resources).

`snakemake -n` prints no params of a `script:` rule, so this builds the DAG through Snakemake's API,
as `snakemake -n --forceall` would, in its own process (Snakemake keeps global state), and reads each
planned job's params as the job would receive them.
"""

import argparse
import json
import sys
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.settings.types import (
    ConfigSettings,
    DAGSettings,
    OutputSettings,
    ResourceSettings,
    StorageSettings,
)


def _plain(value):
    """JSON-able copy of a params value (Snakemake hands lists and dicts of its own kinds)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("configfiles", nargs="*")
    parser.add_argument("--target", action="append", default=[])
    args = parser.parse_args(argv)
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=[Path(p) for p in args.configfiles]),
            storage_settings=StorageSettings(),
            snakefile=Path("Snakefile"),
        )
        dag_api = workflow_api.dag(dag_settings=DAGSettings(targets=set(args.target), forceall=True))
        workflow = dag_api.workflow_api._workflow
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
        workflow._build_dag()
        for job in workflow.dag.jobs:
            params = {name: _plain(job.params[name]) for name in job.params.keys()}
            resources = {name: _plain(job.resources[name]) for name in job.resources.keys()}
            inputs = {name: _plain(job.input[name]) for name in job.input.keys()}
            record = {"rule": job.rule.name, "wildcards": dict(job.wildcards_dict), "params": params}
            record["input"] = inputs
            print(json.dumps({**record, "resources": resources}))


if __name__ == "__main__":
    main(sys.argv[1:])
