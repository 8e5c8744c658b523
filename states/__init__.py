"""One module per pipeline phase; the engine finds them through :data:`states.registry.PHASES`."""
