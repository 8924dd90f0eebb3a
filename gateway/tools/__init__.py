"""Operator tools: `python -m gateway.tools <command>` (see `--help`)."""
