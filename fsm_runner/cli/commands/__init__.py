"""One module per ``fsm-runner`` command; each has ``command(args) -> exit code``."""
