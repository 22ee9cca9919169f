"""Logging set-up shared by the stage entries: one log file per rule, also echoed to stderr."""

import logging
import sys
import warnings
from pathlib import Path

# A stage that starts torchrun passes its log file on in this variable, so that the worker processes'
# lines (progress every N steps, summaries) reach the rule's log too, not only the job's stderr.
LOG_FILE_ENV = "FLOWREC_LOG_FILE"


def log_to(path: str | Path | None, level: int = logging.INFO, append: bool = False) -> logging.Logger:
    """Send the `flowrec` logger (and Python warnings) to `path` and to stderr; return the logger.

    `append` keeps what the file holds (a torchrun worker writing into its stage's log)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="a" if append else "w"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    return logging.getLogger("flowrec")


def current_log_file() -> str | None:
    """The file the root logger writes to (set by log_to), if any."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.baseFilename
    return None
