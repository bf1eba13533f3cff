"""Broodlord, the emperor's side: zergs spawned on a vassal's SOS, and kept honest while they boot.

    SOS             a vassal's SOS bytes that arrive together ask for that many zergs (`NAME:zerg`, the
                    [zerg] section of its file): as many start at once as are not already booting, up
                    to --emperor-broodlord per vassal. One 30 at a time (a uWSGI vassal) is one zerg
                    at a time. Works for every monitor: the zerg is named after the vassal's own file,
                    whatever found it (uWSGI issue #2166). While the last failed boot is throttled
                    (the blacklist), SOS is ignored; so it is while a file named NAME:zerg exists
                    (`--ini NAME:zerg` would read it in place of the [zerg] section).
    boot            a zerg that was accepting is never blacklisted, whenever and however it dies; one
                    that fails to boot (cannot start, exits non-zero, or is not accepting within
                    --emperor-broodlord-boot-timeout and is killed) is, so a broken [zerg] section is
                    retried with a growing delay instead of once per SOS.

The vassal's side (when to call for help, and for how many) is zergserve/elastic.py.
"""

from __future__ import annotations

import os
import time
from typing import Any

from zergserve.emperor.vassal import RUNNING, Vassal
from zergserve.log import logger, printable


class Broodlord:
    def __init__(self, emperor: Any) -> None:
        self.emperor = emperor
        self.cfg = emperor.cfg

    def sos(self, vassal: Vassal, wanted: int) -> None:
        """Answer a call for `wanted` zergs from `vassal`."""
        limit = self.cfg.emperor_broodlord
        if not limit or vassal.zerg or vassal.status != RUNNING:
            return
        emperor = self.emperor
        name = vassal.name + ":zerg"
        if emperor.throttle.backoff(name):
            return
        zergs = [v for v in emperor.vassals.values() if v.zerg and v.name == name]
        if any(z.status != RUNNING and not z.accepting for z in zergs):
            return  # one that never accepted is on its way out: its exit says whether the next one waits
        zergs = [z for z in zergs if z.status == RUNNING]
        booting = sum(1 for z in zergs if not z.accepting)
        count = min(wanted - booting, limit - len(zergs))
        if count <= 0:
            return
        if os.path.lexists(vassal.monitor.path_of(name)):  # `--ini FILE:zerg` would read it, not [zerg]
            if emperor.refused.get(name) != "ambiguous":
                emperor.refused[name] = "ambiguous"
                logger.error("[emperor] no zerg for vassal %s: a file named %s exists, and would be read in "
                             "place of the [zerg] section", vassal.label, printable(name))
            return
        emperor.refused.pop(name, None)
        logger.info("[emperor] vassal %s sent SOS for %d zerg(s): spawning %d, %d of %d", vassal.label, wanted,
                    count, len(zergs) + count, limit)
        for _ in range(count):
            zerg = emperor.add(vassal.file, vassal.monitor, vassal.last_mod, zerg=True)
            if zerg is None:
                return
            zerg.sos_at = time.monotonic()

    def accepting(self, zerg: Vassal) -> None:
        """A zerg's first worker is ready: its [zerg] section boots, and the reinforcement is timed."""
        self.emperor.throttle.forgive(zerg.name)
        if zerg.sos_at and not zerg.reinforced_in:
            zerg.reinforced_in = time.monotonic() - zerg.sos_at
            logger.info("[emperor] zerg %s serving %.2fs after the SOS", zerg.label, zerg.reinforced_in)

    def exited(self, zerg: Vassal, code: int) -> None:
        if not zerg.accepting and code != 0 and not zerg.boot_failed:
            self.boot_failed(zerg, f"exit {code}")

    def boot_failed(self, zerg: Vassal, why: str) -> None:
        """A zerg that never accepted: throttle the next ones (not for a late reinforcement that
        booted fine and found no load: that one was accepting)."""
        zerg.boot_failed = True
        if self.cfg.emperor_no_blacklist:
            return
        throttle = self.emperor.throttle
        throttle.failed(zerg.name)
        entry = throttle.blacklist[zerg.name]
        entry.throttle_ms = max(entry.throttle_ms, self.cfg.emperor_throttle)  # SOS comes every cycle: no retry at once
        logger.error("[emperor] zerg %s failed to boot (%s): next reinforcement in %.1fs at the earliest",
                     zerg.label, why, entry.throttle_ms / 1000)

    def check_boots(self) -> None:
        """Kill a zerg that is not accepting within the boot timeout: the emperor counts booting zergs
        against what a vassal asks for, so a stuck one would hold back reinforcements for good."""
        limit = self.cfg.emperor_broodlord_boot_timeout
        if not limit:
            return
        now = time.monotonic()
        for vassal in self.emperor.vassals.values():
            if vassal.zerg and vassal.status == RUNNING and not vassal.accepting and now - vassal.ran_at > limit:
                logger.error("[emperor] zerg %s (pid %d) not accepting %gs after its spawn: killing it",
                             vassal.label, vassal.pid, limit)
                vassal.set_stopping()
                vassal.kill()
                self.boot_failed(vassal, "boot timeout")
