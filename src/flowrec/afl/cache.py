"""Content-addressed cache of LLM calls (docs/method.md section 9): a rerun never pays twice.

Key = sha256 of the request (system and user messages, the answer field and its options) and the
backend's identity (model, sampling settings, seed). Value = the reply, one JSON file per key under
`folder/ab/<key>.json`, written atomically, so concurrent rules and an interrupted run leave only
complete entries. Temperature 0 and a fixed seed make a cached answer the answer a new call would give.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from flowrec.afl.agents import Reply, Request
from flowrec.afl.backends import LLMBackend
from flowrec.io import write_json


def call_key(request: Request, identity: dict) -> str:
    payload = json.dumps({"request": asdict(request), "backend": identity}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class CachedBackend:
    """Wraps a backend: cached requests are answered from `folder`, the rest go to the backend `chunk`
    at a time, each chunk stored as soon as it is answered (an interrupted run keeps what it paid for).
    `hits` and `misses` count requests."""

    def __init__(self, backend: LLMBackend, folder: str | Path, chunk: int = 8):
        if chunk < 1:
            raise ValueError(f"cache chunk must be at least 1, got {chunk}")
        self.chunk = chunk
        self.backend = backend
        self.folder = Path(folder)
        self.identity = backend.identity
        self.stats = backend.stats
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def __call__(self, requests: list[Request]) -> list[Reply]:
        keys = [call_key(r, self.identity) for r in requests]
        replies: list[Reply | None] = []
        for key in keys:
            path = self._path(key)
            replies.append(Reply(**json.loads(path.read_text(encoding="utf-8"))) if path.exists() else None)
        todo = [i for i, r in enumerate(replies) if r is None]
        self.hits += len(requests) - len(todo)
        self.misses += len(todo)
        for lo in range(0, len(todo), self.chunk):
            part = todo[lo : lo + self.chunk]
            fresh = self.backend([requests[i] for i in part])
            for i, reply in zip(part, fresh, strict=True):
                write_json(asdict(reply), self._path(keys[i]))
                replies[i] = reply
        return replies  # type: ignore[return-value]
