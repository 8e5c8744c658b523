"""A tiny OpenAI-compatible chat-completions server with a deterministic "model".

The request's `model` picks the behaviour:
  exact   answers every task correctly (also the fallback for unknown names, e.g. "deepseek-v3.2")
  sloppy  wrong on a fixed ~quarter of the prompts (chosen by a hash of the prompt)
  blank   answers with an empty string
  error   fails every completion with HTTP 500
It listens on 127.0.0.1, port --port: the run's $AIDER_FSM_PORT under the runner, a free port when run by
hand. It writes its pid file at once and runtime_env.json once it listens.
With --ready-delay, GET /health answers 503 until the delay has passed (a slow model load).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import benchlib

MODELS = ("exact", "sloppy", "blank", "error")
ARITH = re.compile(r"What is (-?\d+) ([-+*]) (-?\d+)\?")
REVERSE = re.compile(r"Reverse the string '([^']*)'")


def solve(prompt: str) -> str:
    if m := ARITH.search(prompt):
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        return str(a + b if op == "+" else a - b if op == "-" else a * b)
    if m := REVERSE.search(prompt):
        return m.group(1)[::-1]
    return "I don't know."


def answer(model: str, prompt: str) -> str:
    if model == "blank":
        return ""
    correct = solve(prompt)
    if model == "sloppy" and zlib.crc32(prompt.encode()) % 4 == 0:
        return str(int(correct) + 1) if correct.lstrip("-").isdigit() else correct[::-1] + "x"
    return correct


def prompt_text(messages: Any) -> str:
    """The last user message's text; content may be a string or a list of parts."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise ValueError("'messages' has no user message")
    content = users[-1].get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise ValueError("user message 'content' must be a string or a list of text parts")
    return content


class Handler(BaseHTTPRequestHandler):
    server_version = "arith-bench/1"
    default_model = "exact"
    ready_at = 0.0
    counter = 0

    def send_json(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def send_error_json(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self.send_json(status, {"error": {"message": message, "type": kind}})

    def do_GET(self) -> None:
        if self.path == "/health":
            if time.monotonic() < self.ready_at:
                self.send_json(503, {"status": "starting"})
            else:
                self.send_json(200, {"status": "ok", "model": self.default_model})
        elif self.path == "/v1/models":
            data = [{"id": m, "object": "model", "owned_by": "arith-bench"} for m in MODELS]
            self.send_json(200, {"object": "list", "data": data})
        else:
            self.send_error_json(404, f"no route GET {self.path}")

    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            self.send_error_json(404, f"no route POST {self.path}")
            return
        if time.monotonic() < self.ready_at:
            self.send_error_json(503, "model is still loading", "server_error")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            request = json.loads(self.rfile.read(length) or b"null")
            if not isinstance(request, dict):
                raise ValueError("request body must be a JSON object")
            prompt = prompt_text(request.get("messages"))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            self.send_error_json(400, str(exc))
            return
        model = str(request.get("model") or self.default_model)
        if model == "error":
            self.send_error_json(500, "model 'error' always fails", "server_error")
            return
        text = answer(model, prompt)
        Handler.counter += 1
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        self.send_json(
            200,
            {
                "id": f"chatcmpl-{os.getpid()}-{Handler.counter}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                ],
                "usage": usage,
            },
        )

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{benchlib.now_iso()} {self.command} {self.path} {format % args}\n")


def remove_if_ours(path: Path, pid: int) -> None:
    """Remove a file that names this process; leave one a newer server has rewritten."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return
    if str(pid) == text.strip() or f'"pid": {pid}' in text:
        path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--port",
        type=benchlib.port_number,
        default=benchlib.run_port(),
        help="default $AIDER_FSM_PORT; 0 (by hand) picks a free port",
    )
    parser.add_argument("--model", default=os.environ.get("ARITH_BENCH_DEFAULT_MODEL") or "exact")
    parser.add_argument("--ready-delay", type=float, default=0.0, help="seconds before /health says ok")
    parser.add_argument("--pid-file", default=".aider_fsm/server.pid")
    parser.add_argument("--runtime-env", default=str(benchlib.runtime_env_path()))
    args = parser.parse_args(argv)

    pid = os.getpid()
    pid_file, env_file = benchlib.repo_path(args.pid_file), benchlib.repo_path(args.runtime_env)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{pid}\n", encoding="utf-8")

    Handler.default_model = args.model
    Handler.ready_at = time.monotonic() + args.ready_delay
    try:
        httpd = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    except OSError as exc:
        remove_if_ours(pid_file, pid)
        raise benchlib.BenchError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}") from None
    httpd.daemon_threads = True
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    benchlib.write_json(
        env_file,
        {
            "inference": {"base_url": f"{base}/v1", "model": args.model},
            "service": {"base_url": base, "health_url": f"{base}/health", "pid": pid},
            "started_at": benchlib.now_iso(),
        },
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"arith-bench serving {base} (pid {pid}, model {args.model})", file=sys.stderr, flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        remove_if_ours(pid_file, pid)
        remove_if_ours(env_file, pid)
    return 0


if __name__ == "__main__":
    benchlib.cli(main)
