"""When the loop slips a control in (`[judge] controls = K`, judging/controls.py says why).

One experiment in every block of K is a control, at a position drawn at random within the
block (seeded), so neither its number nor the rhythm of the night gives it away. A control
is not asked of the proposer, never shown to it and never observed by it: the proposer
cannot tell anything happened, and its history (what it learns from) holds only its own
experiments.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from overnight.store.records import Proposal

PROPOSER = "control"


@dataclass
class Control(Proposal):
    """The unchanged best, resubmitted blind. Made by the loop, never by a proposer; the
    pipeline takes the best's surface at the moment it runs."""


def make_control() -> Control:
    return Control(files={}, description="control", proposer=PROPOSER)


class ControlSchedule:
    def __init__(self, every: int, seed: int, done: int) -> None:
        """`every`: K (0: no controls); `done`: experiments already numbered, so the blocks
        go on across resumed nights."""
        self.every = every
        self.seed = seed
        self.count = max(0, done)
        self._lock = threading.Lock()

    def next_is_control(self) -> bool:
        """Whether the next experiment handed to a slot is a control."""
        if self.every < 2:
            return False
        with self._lock:
            block, pos = divmod(self.count, self.every)
            self.count += 1
        return pos == random.Random(f"{self.seed}:controls:{block}").randrange(self.every)
