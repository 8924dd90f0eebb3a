"""A signed-request fuzzer for the gateway (issue 17): hypothesis strategies over every routed
action (tests/fuzz/requests.py) and `run_fuzz(endpoint, n, seed)`, which sends them and counts
the answers. `python -m tests.fuzz --endpoint URL -n N --seed S` is the soak entry."""
from tests.fuzz.requests import FuzzReport, run_fuzz

__all__ = ["FuzzReport", "run_fuzz"]
