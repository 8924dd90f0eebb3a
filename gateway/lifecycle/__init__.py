"""Lifecycle: configurations (rules.py) and the worker that applies them (worker.py; `python -m
gateway.lifecycle`). The API actions are in gateway/api/lifecycle.py."""
