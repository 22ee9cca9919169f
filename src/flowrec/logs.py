"""Logging set-up shared by the stage entries: one log file per rule, also echoed to stderr."""

import logging
import sys
import warnings
from pathlib import Path


def log_to(path: str | Path | None, level: int = logging.INFO) -> logging.Logger:
    """Send the `flowrec` logger (and Python warnings) to `path` and to stderr; return the logger."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    return logging.getLogger("flowrec")
