"""The reliability suite: faults, fuzzing and a soak against a real sidecar process (see README.md here).

Each scenario module runs as a script (`.venv/bin/python -m bench.reliability.<scenario> --help`) and
exposes `run(options) -> Report`, which tests/reliability calls with small sizes.
"""
