"""GPU benchmarks and the one-command GPU session, each run from the repository root as `python -m benchmarks.<name>`."""
