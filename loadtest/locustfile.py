"""Users that fetch / as fast as the server answers, under a shape that ramps up, holds and falls to zero.

The shape comes from the environment so the runner (and the test suite) can make it short:
LOADTEST_PEAK users, LOADTEST_RAMP, LOADTEST_HOLD and LOADTEST_FALL seconds.
"""

import os

from locust import FastHttpUser, LoadTestShape, constant, task

PEAK = int(os.environ.get("LOADTEST_PEAK", "60"))
RAMP = float(os.environ.get("LOADTEST_RAMP", "10"))
HOLD = float(os.environ.get("LOADTEST_HOLD", "20"))
FALL = float(os.environ.get("LOADTEST_FALL", "5"))


class Visitor(FastHttpUser):
    wait_time = constant(0)

    @task
    def index(self) -> None:
        self.client.get("/")


class RampHoldFall(LoadTestShape):
    """0 → PEAK users over RAMP s, PEAK for HOLD s, down to 0 over FALL s, then stop."""

    def tick(self):
        t = self.get_run_time()
        if t < RAMP:
            users = max(1, int(PEAK * t / RAMP))
        elif t < RAMP + HOLD:
            users = PEAK
        elif t < RAMP + HOLD + FALL:
            users = max(0, int(PEAK * (1 - (t - RAMP - HOLD) / FALL)))
        else:
            return None
        return users, max(1, PEAK // 5)
