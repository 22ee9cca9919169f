"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1 started by the test.

The server (http.server, /v1/chat/completions) answers from a deterministic scripted responder, fails
the first N requests with HTTP 500 (retries), and records how many requests were in flight at once
(bounded concurrency). The `openai` package is an optional dependency: the test skips, saying so,
where it is not installed.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

openai = pytest.importorskip("openai", reason="the openai client is not installed (pip install openai)")

from flowrec.afl.agents import rec_request, user_request  # noqa: E402
from flowrec.afl.backends import BackendSettings, OpenAIBackend  # noqa: E402
from flowrec.afl.cache import CachedBackend  # noqa: E402


class _Server:
    def __init__(self, fail_first: int = 0, delay: float = 0.0, responder=None):
        self.fail_first, self.delay, self.responder = fail_first, delay, responder
        self.seen, self.in_flight, self.max_in_flight = 0, 0, 0
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.seen += 1
                    failing = server.seen <= server.fail_first
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.bodies.append(body)
                try:
                    time.sleep(server.delay)
                    if self.path != "/v1/chat/completions" or failing:
                        self._send(500 if failing else 404, {"error": {"message": "scripted failure"}})
                        return
                    self._send(200, (server.responder or _completion)(body))
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _completion(body: dict) -> dict:
    """Scripted answers: the recommender names the last candidate; the user likes titles with 'Heat';
    a prompt mentioning 'Gibberish' gets an answer that names nothing."""
    user = body["messages"][-1]["content"]
    if "Gibberish" in user:
        text = "I cannot decide."
    elif "Candidates:" in user:
        last = user.split("Candidates:\n")[1].split("\n\n")[0].splitlines()[-1].split(". ", 1)[1]
        text = f"Reason: it fits.\nItem: {last}"
    else:
        text = f"Reason: taste.\nDecision: {'Yes' if 'Heat' in user.split('Recommended')[1] else 'No'}"
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def _settings(url, **overrides):
    values = dict(
        kind="openai",
        model="scripted-model",
        base_url=url,
        api_key_env="FLOWREC_TEST_KEY",
        temperature=0.0,
        seed=7,
        max_tokens=64,
        reason_tokens=8,
        batch_size=4,
        concurrency=3,
        max_retries=3,
        backoff_s=0.01,
        timeout_s=10.0,
    )
    values.update(overrides)
    return BackendSettings(**values)


@pytest.fixture()
def server():
    s = _Server()
    yield s
    s.close()


def test_answers_parse_and_tokens_are_counted(server, monkeypatch):
    monkeypatch.setenv("FLOWREC_TEST_KEY", "secret")
    backend = OpenAIBackend(_settings(server.url))
    requests = [
        rec_request("movie", ["Alien"], ["Jaws", "Heat"], "Jaws", []),
        user_request("movie", ["Alien"], "Heat", "fits", 0.5, []),
        user_request("movie", ["Alien"], "Jaws", "fits", None, []),
        rec_request("movie", ["Gibberish"], ["Jaws", "Heat"], "Jaws", []),
    ]
    replies = backend(requests)
    assert [r.choice for r in replies] == ["Heat", "yes", "no", "Jaws"]
    assert [r.parsed for r in replies] == [True, True, True, False]  # the fallback: the model's suggestion
    assert backend.stats.unparsed == 1 and backend.stats.unparsed_examples == ["I cannot decide."]
    assert (backend.stats.prompt_tokens, backend.stats.completion_tokens) == (40, 20)
    sent = server.bodies[0]
    assert sent["model"] == "scripted-model" and sent["temperature"] == 0.0 and sent["seed"] == 7


def test_retries_with_backoff_then_succeeds(monkeypatch):
    monkeypatch.setenv("FLOWREC_TEST_KEY", "secret")
    server = _Server(fail_first=2)
    try:
        backend = OpenAIBackend(_settings(server.url, concurrency=1))
        [reply] = backend([rec_request("movie", ["Alien"], ["Jaws", "Heat"], None, [])])
        assert reply.choice == "Heat" and backend.stats.retries == 2 and server.seen == 3
        failing = _Server(fail_first=100)
        try:
            backend = OpenAIBackend(_settings(failing.url, max_retries=1))
            with pytest.raises(
                RuntimeError, match=rf"2 attempts at {failing.url}/? \(model scripted-model\) failed"
            ):
                backend([rec_request("movie", ["Alien"], ["Jaws"], None, [])])
        finally:
            failing.close()
    finally:
        server.close()


def test_concurrency_is_bounded_and_the_cache_saves_calls(monkeypatch, tmp_path):
    monkeypatch.setenv("FLOWREC_TEST_KEY", "secret")
    server = _Server(delay=0.5)  # long enough that the client overlaps requests even on a loaded machine
    try:
        backend = OpenAIBackend(_settings(server.url, concurrency=3))
        requests = [rec_request("movie", [f"H{i}"], ["Jaws", "Heat"], None, []) for i in range(12)]
        CachedBackend(backend, tmp_path)(requests)
        assert server.seen == 12 and 1 < server.max_in_flight <= 3
        again = CachedBackend(OpenAIBackend(_settings(server.url)), tmp_path)
        assert [r.choice for r in again(requests)] == ["Heat"] * 12
        assert server.seen == 12 and again.hits == 12
    finally:
        server.close()


def test_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("FLOWREC_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="FLOWREC_TEST_KEY"):
        OpenAIBackend(_settings("http://127.0.0.1:9/v1"))


def test_an_unreachable_endpoint_is_named_in_the_error(monkeypatch):
    monkeypatch.setenv("FLOWREC_TEST_KEY", "secret")
    closed = _Server()
    url = closed.url
    closed.close()  # nothing listens on its port now: every attempt is a connection error
    backend = OpenAIBackend(_settings(url, max_retries=1, backoff_s=0.0))
    with pytest.raises(
        RuntimeError, match=rf"afl backend: 2 attempts at {url} \(model scripted-model\) failed"
    ):
        backend([rec_request("movie", ["Alien"], ["Jaws"], None, [])])


def test_wrapped_answers_are_parsed_and_each_normalisation_counted(monkeypatch):
    monkeypatch.setenv("FLOWREC_TEST_KEY", "secret")
    answers = iter(
        ["Item: **Princess Bride, The**", "Sure! Item: Heat (1995). Thanks", 'Item: "Heat (1995)"']
    )
    server = _Server(responder=lambda body: _answer(body, next(answers)))
    try:
        backend = OpenAIBackend(_settings(server.url, concurrency=1))
        candidates = ["Princess Bride, The (1987)", "Heat (1995)"]
        replies = backend([rec_request("movie", ["Alien"], candidates, None, []) for _ in range(3)])
    finally:
        server.close()
    assert [r.choice for r in replies] == ["Princess Bride, The (1987)", "Heat (1995)", "Heat (1995)"]
    assert all(r.parsed for r in replies) and backend.stats.unparsed == 0
    counts = backend.stats.normalised
    assert (counts["markdown"], counts["no_year"], counts["trailing_text"], counts["quotes"]) == (1, 1, 1, 1)
    assert counts["article"] == 0 and backend.stats.as_dict()["normalised"] == counts


def _answer(body: dict, text: str) -> dict:
    out = _completion(body)
    out["choices"][0]["message"]["content"] = text
    return out
