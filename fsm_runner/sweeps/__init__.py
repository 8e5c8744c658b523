"""Sweeps: many targets x llms, each cell an isolated run, on a local or a Ray executor."""

#: The executors a sweep can run on, in the order the docs list them (here, so that the command line can
#: offer them without importing the sweep machinery).
EXECUTORS = ("local", "ray")
