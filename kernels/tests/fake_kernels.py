"""A stand-in for a Triton kernel or autotuner, for tests that check what a launcher launches, not what it computes."""

from __future__ import annotations


class RecordingKernel:
    """`kernel[grid](*args, **kwargs)` records the keyword arguments (and its name into `log`) and computes nothing."""

    def __init__(self, name: str = "kernel", log: list | None = None):
        self.name, self.log = name, log
        self.launches: list[dict] = []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append(kwargs)
            if self.log is not None:
                self.log.append(self.name)
        return launch
