"""The ``medlabel`` command line (typer)."""
