"""The target's own quick tests (the pipeline's `tests` stage): tasks, grader, solver and HTTP shapes."""

from __future__ import annotations

import threading
import unittest
from http.server import ThreadingHTTPServer

import benchlib
import server
import tasks


class TaskTests(unittest.TestCase):
    def test_tasks_are_deterministic_and_smoke_is_a_prefix_of_full(self) -> None:
        self.assertEqual(tasks.make_tasks(8), tasks.make_tasks(64)[:8])
        self.assertEqual({t.kind for t in tasks.make_tasks(8)}, set(tasks.KINDS))

    def test_grader_ignores_case_quotes_and_trailing_period(self) -> None:
        self.assertEqual(tasks.grade(" 'Olleh'. ", "olleh"), 1.0)
        self.assertEqual(tasks.grade("41", "42"), 0.0)

    def test_exact_model_solves_every_task_and_sloppy_misses_some(self) -> None:
        all_tasks = tasks.make_tasks(64)
        self.assertTrue(all(server.answer("exact", t.prompt) == t.expected for t in all_tasks))
        sloppy = sum(tasks.grade(server.answer("sloppy", t.prompt), t.expected) for t in all_tasks)
        self.assertTrue(0 < sloppy < len(all_tasks), sloppy)


class QuietHandler(server.Handler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class HttpTests(unittest.TestCase):
    def setUp(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), QuietHandler)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def tearDown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def test_chat_completion_has_the_openai_shape(self) -> None:
        text = benchlib.chat(self.base + "/v1", "exact", "What is 17 + 25?")
        self.assertEqual(text, "42")
        models = benchlib.http_json(self.base + "/v1/models")
        self.assertIn("exact", [m["id"] for m in models["data"]])

    def test_bad_request_is_a_400_with_an_error_object(self) -> None:
        with self.assertRaisesRegex(RuntimeError, "HTTP 400.*messages"):
            benchlib.http_json(self.base + "/v1/chat/completions", {"model": "exact"})


if __name__ == "__main__":
    unittest.main(verbosity=2)
