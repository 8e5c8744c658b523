"""The benchmark's task set and grader, shared by rollout, evaluate and the self-test.

Tasks are deterministic for a seed, and the first n tasks are the same whatever the total, so the smoke set
is a prefix of the full set.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

KINDS = ("add", "sub", "mul", "reverse")
OPS = {"add": "+", "sub": "-", "mul": "*"}


@dataclass(frozen=True)
class Task:
    task_id: str
    kind: str
    prompt: str
    expected: str


def make_tasks(n: int, seed: int = 7) -> list[Task]:
    rng = random.Random(seed)
    tasks = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        if kind == "reverse":
            word = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9)))
            prompt, expected = f"Reverse the string '{word}'.", word[::-1]
        else:
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            value = a + b if kind == "add" else a - b if kind == "sub" else a * b
            prompt, expected = f"What is {a} {OPS[kind]} {b}?", str(value)
        tasks.append(Task(task_id=f"t{i:03d}", kind=kind, prompt=prompt, expected=expected))
    return tasks


def normalize(text: str) -> str:
    return text.strip().rstrip(".").strip().strip("'\"").strip().lower()


def grade(completion: str, expected: str) -> float:
    """1.0 for a correct answer (ignoring case, quotes, a trailing period), else 0.0."""
    return 1.0 if normalize(completion) == normalize(expected) else 0.0
