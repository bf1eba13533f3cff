"""Who may start now: each failing vassal's own back-off, and the global budget that protects the host.

Per vassal (uWSGI's blacklist, research/uwsgi-internals.md §3.8): a vassal that dies before it is
loyal is failing. Its first respawn is at once, each later one waits --emperor-throttle ms longer,
up to --emperor-max-throttle (then the wait halves, as uWSGI's). Loyalty (byte 17) forgives it.

Global (uWSGI computes one and never applies it): at most --emperor-spawn-burst vassals start at
once; a vassal counts as starting until it says it started (byte 1, sent once its app is loaded),
dies, or --emperor-throttle ms pass (a program that never says so). Failing vassals come last: they
may hold only half of those slots, and together start at most once per --emperor-throttle ms after
a burst of --emperor-spawn-burst (a token bucket), so that fifty crash-looping vassals can neither
starve a new or a healthy vassal of its start nor fork-bomb the host.
"""

from __future__ import annotations

import time

from zergserve.log import logger, printable


class BlacklistEntry:
    """A failing vassal: how long its next start must wait. A new entry waits nothing (uWSGI's is
    1 ms), so the first respawn is at once; each later death adds a step."""

    def __init__(self) -> None:
        self.throttle_ms = 0
        self.attempt = 0
        self.first_attempt = self.last_attempt = time.time()  # the stats' timestamps
        self.attempted_at = time.monotonic()

    def due(self) -> float:
        """When (time.monotonic()) the vassal may start again."""
        return self.attempted_at + self.throttle_ms / 1000


class Throttle:
    def __init__(self, burst: int, step_ms: int, max_ms: int) -> None:
        self.burst = burst
        self.step_ms = step_ms
        self.max_ms = max_ms
        self.blacklist: dict[str, BlacklistEntry] = {}
        self.tokens = float(burst)  # starts of failing vassals
        self.tokens_at = time.monotonic()
        self.waiting = False  # a new or healthy vassal was refused since the last one allowed (logged once)

    # --- per vassal --------------------------------------------------------------------------

    def failing(self, name: str) -> bool:
        return name in self.blacklist

    def backoff(self, name: str) -> float:
        """Seconds before `name` may start again on its own schedule (0: now)."""
        entry = self.blacklist.get(name)
        return max(0.0, entry.due() - time.monotonic()) if entry is not None else 0.0

    def failed(self, name: str) -> None:
        """`name` died before it was loyal, or could not start."""
        entry = self.blacklist.get(name)
        if entry is None:
            self.blacklist[name] = BlacklistEntry()
            return
        entry.last_attempt, entry.attempted_at = time.time(), time.monotonic()
        if entry.throttle_ms < self.max_ms:
            entry.throttle_ms = min(entry.throttle_ms + self.step_ms, self.max_ms)
        else:
            logger.error("[emperor] maximum throttle level for vassal %s reached", printable(name))
            entry.throttle_ms //= 2
        entry.attempt += 1
        if entry.attempt == 2:
            logger.error("[emperor] unloyal bad behaving vassal found: %s throttling it...", printable(name))

    def forgive(self, name: str) -> None:
        self.blacklist.pop(name, None)

    def clear(self) -> None:
        self.blacklist.clear()

    # --- global ------------------------------------------------------------------------------

    def allow(self, failing: bool, starting: int, failing_starting: int, slot_in: float) -> float:
        """0 if a vassal may start now (and it is charged for it), else the seconds after which to
        ask again; `starting` vassals are starting now, `failing_starting` of them failing ones,
        and the first of them stops counting in `slot_in` s. A slot that frees sooner (a vassal
        says it started, or dies) is worth asking again too."""
        wait = 0.0
        if starting >= self.burst:
            wait = slot_in
        elif failing:
            now = time.monotonic()
            rate = 1000.0 / self.step_ms
            self.tokens = min(float(self.burst), self.tokens + (now - self.tokens_at) * rate)
            self.tokens_at = now
            if failing_starting >= max(1, self.burst // 2):
                wait = slot_in
            elif self.tokens < 1.0:
                wait = (1.0 - self.tokens) / rate
            else:
                self.tokens -= 1.0
        if failing:
            return wait
        if wait and not self.waiting:  # a new or healthy vassal delayed: worth a line, once
            self.waiting = True
            logger.info("[emperor] global spawn throttle: waiting before the next vassal")
        elif not wait:
            self.waiting = False
        return wait
