"""AFL's two tables (docs/method.md section 9): HR@1 per row and recommendation model, and user
simulation precision/recall/F1 per row and ratio; CSV and Markdown."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from flowrec.io import write_text

ROW_NAMES = {
    "base": "Base Model",
    "agent": "Rec Agent",
    "afl": "AFL",
    "afl_norec": "AFL w/o rec model",
    "afl_noreward": "AFL w/o reward model",
    "afl_none": "AFL w/o both",
    "reward_model": "Reward Model",
    "user_agent": "User Agent",
}


def recommendation_table(files: list[str]) -> pd.DataFrame:
    """Rows = variants, columns = recommendation models; files are recommend/{model}/{variant}.json."""
    records = []
    for path in files:
        summary = json.loads(Path(path).read_text(encoding="utf-8"))
        model = Path(path).parent.name
        records.append(
            {
                "row": ROW_NAMES[summary["variant"]],
                "model": model,
                "HR@1": summary["HR@1"],
                "seconds": summary["seconds"],
                "calls": summary.get("calls", {}).get("calls", 0),
            }
        )
    frame = pd.DataFrame(records)
    order = [ROW_NAMES[v] for v in ROW_NAMES if ROW_NAMES[v] in set(frame["row"])]
    table = frame.pivot(index="row", columns="model", values="HR@1").reindex(order)
    return table.rename_axis(index="HR@1", columns=None).reset_index()


def simulation_table(files: list[str]) -> pd.DataFrame:
    """Rows = simulation variants, columns = P/R/F1 at each ratio."""
    rows = []
    for path in files:
        summary = json.loads(Path(path).read_text(encoding="utf-8"))
        row = {"user simulation": ROW_NAMES[summary["variant"]]}
        for ratio, values in summary["ratios"].items():
            for name, value in values.items():
                row[f"{ratio} {name[0].upper()}" if name != "f1" else f"{ratio} F1"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def write_tables(recommend: list[str], simulate: list[str], csv: str, md: str) -> None:
    users = json.loads(Path(recommend[0]).read_text(encoding="utf-8"))["users"]
    rec, sim = recommendation_table(recommend), simulation_table(simulate)
    seconds = {
        f"{Path(p).parent.name}/{Path(p).stem}": json.loads(Path(p).read_text())["seconds"]
        for p in recommend + simulate
    }
    combined = pd.concat([rec.assign(table="recommendation"), sim.assign(table="user simulation")])
    from flowrec.io import atomic_path

    with atomic_path(csv) as tmp:
        combined.to_csv(tmp, index=False)
    timing = "\n".join(f"- {name}: {s:.1f} s" for name, s in seconds.items())
    write_text(
        f"## AFL: recommendation (HR@1, {users} users)\n\n{rec.to_markdown(index=False, floatfmt='.4f')}\n\n"
        f'## AFL: user simulation (precision / recall / F1 of "yes")\n\n'
        f"{sim.to_markdown(index=False, floatfmt='.4f')}\n\n## Wall time per output\n\n{timing}\n",
        md,
    )
