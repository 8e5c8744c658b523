"""``python -m fsm_runner``: the same command line as the ``fsm-runner`` script."""

from __future__ import annotations

from fsm_runner.cli import main

raise SystemExit(main())
