"""Where a run's wall time goes: disjoint phases that add up to the whole.

The loop calls `lap(phase)` at the end of each piece of work, which charges the time since the
previous lap to that phase, so the phases never nest or overlap and together cover every moment
between two reads. On the CPU the clock is `perf_counter`. On CUDA each lap records an event on the
current stream instead (no host sync), and the events are read only by `read()`, at log steps:
the time between two events on the device's timeline includes any wait for the host, so a step
starved of data shows as data time, as it should.
"""

import time

import torch

PHASES = ("data", "forward", "backward", "optimizer", "stability", "evaluation", "checkpoint", "logging")


class PhaseTimer:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.interval = dict.fromkeys(PHASES, 0.0)  # ms per phase since the last read
        self.total = dict.fromkeys(PHASES, 0.0)  # ms per phase over the whole run (this process)
        self._pending: list[tuple[str, torch.cuda.Event]] = []
        self.restart()

    def restart(self) -> None:
        """Start counting from now (the time before is nobody's: the run had not started)."""
        if self.cuda:
            self._last = torch.cuda.Event(enable_timing=True)
            self._last.record()
            self._pending = []
        else:
            self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        """Charge the time since the previous lap to `phase`."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._pending.append((phase, event))
            return
        now = time.perf_counter()
        self.interval[phase] += 1000 * (now - self._last)
        self._last = now

    def read(self) -> dict[str, float]:
        """Milliseconds per phase since the previous read; they are added to `total`. On CUDA this
        waits for the last event: call it where the loop syncs anyway (log steps)."""
        if self._pending:
            self._pending[-1][1].synchronize()
            for phase, event in self._pending:
                self.interval[phase] += self._last.elapsed_time(event)
                self._last = event
            self._pending = []
        spent, self.interval = self.interval, dict.fromkeys(PHASES, 0.0)
        for phase, ms in spent.items():
            self.total[phase] += ms
        return spent


def shares(spent: dict[str, float]) -> str:
    """`data 2% forward 31% ...`: each phase's share of the time, the phases that took any."""
    whole = sum(spent.values()) or 1.0
    return " ".join(f"{phase} {100 * ms / whole:.0f}%" for phase, ms in spent.items() if ms >= 0.005 * whole)
