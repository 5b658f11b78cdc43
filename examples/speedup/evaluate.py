"""The trusted evaluator of the speedup study. Locked: a proposal cannot change it, and a
run that writes to it is rejected (or, in the sandbox, fails to write at all).

Why each step is here — every one closes a known way to game a speed metric:
1. Fresh random inputs on every evaluation (seeded from os.urandom): nothing to memorize,
   no reference outputs to read.
2. The candidate runs in a fresh child process and THIS process holds the clock: patching
   time.perf_counter or exiting early in the candidate changes nothing.
3. Every answer is checked against the reference below, first on a correctness batch
   (with edge cases), then on the timed batch too. One wrong answer fails the evaluation
   (exit 1: a crash, never a keep). Fast and wrong is not fast.
4. Only the standard library may be imported: "pure Python" is part of the task.
5. The metric is printed last, on stdout (overnight reads a trusted command's stdout
   only), and only once nothing the candidate started is alive: this process adopts every
   orphan of the candidate (Linux: a child subreaper) and kills them all before printing,
   so no daemon of the candidate can append a better number after it.

Prints `seconds: <wall time of the timed batch>` (the metric) and `pairs: <count>`.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

CHECK_PAIRS = 40
TIMED_PAIRS = 60

CHILD = r"""
import json, sys
before = set(sys.modules)
from editdist import distance
print("ready", flush=True)
for line in sys.stdin:
    pairs = json.loads(line)
    print(json.dumps([distance(a, b) for a, b in pairs]), flush=True)
foreign = sorted(
    {name.partition(".")[0] for name in list(sys.modules) if name not in before}
    - set(sys.stdlib_module_names) - {"editdist"}
)
if foreign:
    sys.exit("only the standard library may be imported, found: " + ", ".join(foreign))
"""


def reference(a: str, b: str) -> int:
    """The textbook two-row dynamic programme: slow, obviously right."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def random_pairs(rng: random.Random, count: int) -> list[list[str]]:
    pairs = []
    for _ in range(count):
        alphabet = rng.choice(["ACGT", "abcdefghijklmnopqrstuvwxyz", "ab", "αβγδ€😀x"])
        a = "".join(rng.choice(alphabet) for _ in range(rng.randint(20, 90)))
        # Related strings (a few edits apart) as well as unrelated ones.
        if rng.random() < 0.5:
            b = list(a)
            for _ in range(rng.randint(0, 12)):
                k = rng.randrange(len(b) + 1)
                op = rng.choice("ids")
                if op == "i":
                    b.insert(k, rng.choice(alphabet))
                elif b and k < len(b):
                    if op == "d":
                        del b[k]
                    else:
                        b[k] = rng.choice(alphabet)
            b = "".join(b)
        else:
            b = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 90)))
        pairs.append([a, b])
    return pairs


EDGE_CASES = [
    ["", ""], ["", "abc"], ["abc", ""], ["a", "a"], ["a", "b"], ["ab", "ba"], ["abc", "abc"],
    ["kitten", "sitting"], ["x" * 70, "y" * 70], ["ab" * 40, "ba" * 40],
]  # fmt: skip


def ask(child: subprocess.Popen, pairs: list[list[str]]) -> tuple[list[int], float]:
    start = time.perf_counter()
    child.stdin.write(json.dumps(pairs) + "\n")
    child.stdin.flush()
    line = child.stdout.readline()
    elapsed = time.perf_counter() - start
    if not line:
        sys.exit("the candidate process died (see its error above)")
    return json.loads(line), elapsed


def check(pairs: list[list[str]], answers: list[int], what: str) -> None:
    if not isinstance(answers, list) or len(answers) != len(pairs):
        sys.exit(f"{what}: expected {len(pairs)} answers, got {answers!r:.200}")
    for (a, b), got in zip(pairs, answers, strict=True):
        want = reference(a, b)
        if got != want or type(got) is not int:
            sys.exit(f"{what}: distance({a!r}, {b!r}) returned {got!r}, expected {want}")


def adopt_orphans() -> None:
    """Become a child subreaper: what the candidate forks stays our descendant (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def kill_descendants() -> None:
    """Kill whatever the candidate left running; orphans were adopted by this process."""
    for _ in range(1000):
        kids = []
        for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else []:
            try:
                with open(f"/proc/self/task/{tid}/children") as fh:
                    kids += [int(k) for k in fh.read().split()]
            except OSError:
                pass
        if not kids:
            return
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass


def main() -> None:
    adopt_orphans()
    rng = random.Random(int.from_bytes(os.urandom(8), "big"))
    check_set = EDGE_CASES + random_pairs(rng, CHECK_PAIRS)
    timed_set = random_pairs(rng, TIMED_PAIRS)
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, encoding="utf-8")  # fmt: skip
    if child.stdout.readline().strip() != "ready":
        sys.exit("editdist.py failed to import (see its error above)")
    answers, _ = ask(child, check_set)
    check(check_set, answers, "correctness check")
    answers, seconds = ask(child, timed_set)
    check(timed_set, answers, "timed batch")
    child.stdin.close()
    if child.wait() != 0:
        sys.exit(f"the candidate process exited with code {child.returncode}")
    kill_descendants()
    print(f"pairs: {len(timed_set)}")
    print(f"seconds: {seconds:.6f}")


if __name__ == "__main__":
    main()
