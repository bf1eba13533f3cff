"""The open-loop load profile shared by the locustfile and the runner: a base rate, then spikes.

    before  BASE requests/s for BEFORE s
    spike   PEAK requests/s for SPIKE s      } WAVES times, with GAP s at BASE between them
    after   BASE requests/s for AFTER s, then the load stops

Arrivals do not wait for answers (an open loop): the rate is what the clients offer, whatever the
server's latency, so a queue that builds up shows as backlog and latency instead of fewer requests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

DEFAULTS = {"base": 5.0, "peak": 25.0, "before": 5.0, "spike": 10.0, "after": 5.0, "waves": 1, "gap": 8.0,
            "users": 100}


@dataclass
class Phase:
    start: float
    end: float
    rate: float
    name: str  # before, spike1, gap1, spike2, ..., after


@dataclass
class Profile:
    base: float
    peak: float
    before: float
    spike: float
    after: float
    waves: int
    gap: float
    users: int

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> "Profile":
        values = {}
        for key, default in DEFAULTS.items():
            raw = environ.get(f"LOADTEST_{key.upper()}")
            values[key] = type(default)(raw) if raw not in (None, "") else default
        return cls(**values)

    def environ(self) -> dict[str, str]:
        return {f"LOADTEST_{key.upper()}": str(getattr(self, key)) for key in DEFAULTS}

    def phases(self) -> list[Phase]:
        phases = [Phase(0.0, self.before, self.base, "before")]
        for wave in range(1, self.waves + 1):
            start = phases[-1].end
            phases.append(Phase(start, start + self.spike, self.peak, f"spike{wave}"))
            if wave < self.waves:
                phases.append(Phase(start + self.spike, start + self.spike + self.gap, self.base, f"gap{wave}"))
        phases.append(Phase(phases[-1].end, phases[-1].end + self.after, self.base, "after"))
        return phases

    def duration(self) -> float:
        return self.phases()[-1].end

    def time_of(self, count: float) -> float | None:
        """When the `count`-th arrival is due (counted from 0, fractions allowed); None if after the end."""
        for phase in self.phases():
            arrivals = phase.rate * (phase.end - phase.start)
            if count < arrivals:
                return phase.start + count / phase.rate
            count -= arrivals
        return None
