"""Open-loop visitors: requests arrive at the rate of loadtest/phases.py, whatever the latency.

Each of LOADTEST_USERS users takes every USERS-th arrival of the profile from a random start, and
sends it when it is due rather than when its previous request was answered, so a slow server faces
the same rate as a fast one (as long as a user's previous request is done by then). The profile comes from the environment
(LOADTEST_BASE, _PEAK, _BEFORE, _SPIKE, _AFTER, _WAVES, _GAP, _USERS), so the locust CLI and UI
run it as well: `locust -f loadtest/locustfile.py --host http://127.0.0.1:8080`. With
LOADTEST_REQUESTS=PATH every request is also written there (wall-clock start, latency in ms, ok),
after a first line `start <epoch>` when the shape starts: the runner computes p95 per phase from it.
"""

import os
import random
import sys
import time

from locust import FastHttpUser, LoadTestShape, events, task

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from phases import Profile  # noqa: E402

PROFILE = Profile.from_environ()
LOG = open(os.environ["LOADTEST_REQUESTS"], "w", buffering=1) if os.environ.get("LOADTEST_REQUESTS") else None


class OpenLoop(LoadTestShape):
    """All users at once, for the profile's duration; the users pace themselves by its rate."""

    def tick(self):
        if self.get_run_time() >= PROFILE.duration():
            return None
        return PROFILE.users, PROFILE.users * 10


@events.test_start.add_listener
def started(environment, **kwargs) -> None:
    if LOG is not None:
        LOG.write(f"start {time.time() - environment.shape_class.get_run_time():.3f}\n")


@events.request.add_listener
def record(start_time, response_time, exception, **kwargs) -> None:
    if LOG is not None:
        LOG.write(f"{start_time:.3f} {response_time:.1f} {int(exception is None)}\n")


class Visitor(FastHttpUser):
    """Arrival number `count`, `count + USERS`, ... of the profile: together the users send exactly its rate."""

    def on_start(self) -> None:
        self.count = random.uniform(0, PROFILE.users)
        time.sleep(self.wait_time())  # gevent's: locust patched it

    def wait_time(self) -> float:
        now = self.environment.shape_class.get_run_time()
        due = PROFILE.time_of(self.count)
        self.count += PROFILE.users
        return max(0.0, (due if due is not None else PROFILE.duration() + 1) - now)

    @task
    def index(self) -> None:
        self.client.get("/")
