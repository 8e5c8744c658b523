"""``import runner_env`` is the name existing training scripts use; it is fsm_runner's public API."""

from fsm_runner import *  # noqa: F403
from fsm_runner import __all__ as __all__  # noqa: F401
