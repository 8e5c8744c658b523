"""Sweeps: many targets x llms, each cell an isolated run, on a local or a Ray executor."""
