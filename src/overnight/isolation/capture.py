"""A run's stdout and stderr, read through pipes and stored with a cap.

The run never holds the log files themselves: it writes to pipes, and one thread of the
controller copies what arrives into the files. That keeps what is stored bounded however
much a run prints (the first quarter of the cap and the last three quarters are kept, the
cut marked with how many bytes were left out and why), and it keeps the order of the lines
honest: a file can be reopened through /proc and written at any offset, past the
evaluator's last line; a pipe cannot.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import selectors
import threading
from dataclasses import dataclass, field
from pathlib import Path

from overnight.isolation import safefs

# What is kept of each stream of each command: enough for any sane training log, and a
# run that prints without end cannot fill the disk or the controller's memory.
LOG_CAP = 32 * 1024 * 1024
_CHUNK = 1 << 16
HEAD_BYTES = 4 * 1024  # of a failed command's output, shown in its record
TAIL_BYTES = 12 * 1024
_PIPE_SIZE = 1 << 20  # fewer wake-ups for chatty runs (Linux only; best effort)


def human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"


@dataclass
class _Stream:
    fd: int
    path: Path
    out: int  # the log file, written by us only
    head: int
    tail_cap: int
    total: int = 0
    tail: collections.deque[bytes] = field(default_factory=collections.deque)
    tail_len: int = 0

    def feed(self, data: bytes) -> None:
        room = self.head - self.total
        self.total += len(data)
        if room > 0:
            with contextlib.suppress(OSError):  # a full disk: keep draining, never block it
                os.write(self.out, data[:room])
            data = data[room:]
        if data:
            self.tail.append(data)
            self.tail_len += len(data)
            while self.tail and self.tail_len - len(self.tail[0]) >= self.tail_cap:
                self.tail_len -= len(self.tail.popleft())

    def finish(self, cap: int) -> int:
        """Write the kept tail; the number of bytes that were not kept."""
        tail = b"".join(self.tail)[-self.tail_cap :] if self.tail else b""
        cut = self.total - min(self.total, self.head) - len(tail)
        with contextlib.suppress(OSError):
            self._write_tail(tail, cut, cap)
        os.close(self.out)
        return max(0, cut)

    def _write_tail(self, tail: bytes, cut: int, cap: int) -> None:
        if cut > 0:
            os.write(self.out, (f"\n... [overnight: {cut} bytes of {self.path.name} not kept: "
                                f"logs keep the first {human(self.head)} and the last "
                                f"{human(self.tail_cap)} of each stream (cap "
                                f"{human(cap)})] ...\n").encode())  # fmt: skip
        if tail:
            os.write(self.out, tail)


class Capture:
    """Pipes for a command's stdout and stderr, drained into `paths` by one thread."""

    def __init__(self, stdout_path: Path, stderr_path: Path, cap: int = LOG_CAP) -> None:
        self.cap = cap
        self.cut: dict[str, int] = {}
        self._streams: list[_Stream] = []
        self.child_fds: list[int] = []
        for path in (stdout_path, stderr_path):
            path.parent.mkdir(parents=True, exist_ok=True)
            out = safefs.create_log(path)
            r, w = os.pipe()
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_SIZE)
            os.set_inheritable(r, False)
            self._streams.append(_Stream(r, path, out, cap // 4, cap - cap // 4))
            self.child_fds.append(w)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="overnight-logs", daemon=True)

    def start(self) -> None:
        """Call once the child holds its ends of the pipes."""
        for w in self.child_fds:
            os.close(w)
        self.child_fds = []
        self._thread.start()

    def _pump(self) -> None:
        sel = selectors.DefaultSelector()
        for s in self._streams:
            sel.register(s.fd, selectors.EVENT_READ, s)
        open_streams = len(self._streams)
        while open_streams:
            events = sel.select(timeout=0.1)
            if not events and self._stop.is_set():
                break  # a process we could not kill still holds a pipe: stop waiting
            for key, _ in events:
                stream: _Stream = key.data
                try:
                    data = os.read(stream.fd, _CHUNK)
                except OSError:
                    data = b""
                if data:
                    stream.feed(data)
                else:
                    sel.unregister(stream.fd)
                    open_streams -= 1
        sel.close()

    def close(self, timeout: float = 5.0) -> dict[str, int]:
        """Wait for the end of both streams (every writer gone; at most `timeout` once the
        run's processes are dead), write the kept tails; bytes not kept per stream name."""
        for w in self.child_fds:  # never started (the command did not start)
            os.close(w)
        self.child_fds = []
        if self._thread.is_alive() or self._thread.ident is not None:
            self._thread.join(timeout)
            self._stop.set()
            self._thread.join()
        for s in self._streams:
            cut = s.finish(self.cap)
            if cut:
                self.cut[s.path.name] = cut
            os.close(s.fd)
        self._streams = []
        return self.cut


# -- reading logs back for display (never through a link) ------------------------------------


def _size(path: Path) -> int:
    return safefs.size(path.parent, path.name)


def tail_text(path: Path, max_bytes: int) -> str:
    """The last `max_bytes` of a file as text ("" when it does not exist or is a link)."""
    path = Path(path)
    size = _size(path)
    data = _read_range([(path, size)], max(0, size - max_bytes), size)
    if size > max_bytes:
        # Starting mid-character would show a replacement glyph: skip continuation bytes.
        data = data.lstrip(bytes(range(0x80, 0xC0)))
    return data.decode("utf-8", "replace")


def output_tail(
    stdout_path: Path, stderr_path: Path, head: int = HEAD_BYTES, tail: int = TAIL_BYTES
) -> str:
    """Head and tail of stdout followed by stderr, bounded, with the cut marked."""
    out_size, err_size = _size(stdout_path), _size(stderr_path)
    label = b"\n[stderr]\n" if out_size else b"[stderr]\n"
    # The combined text, described as segments so that huge logs are never read whole.
    segments: list[tuple[Path | bytes, int]] = [(stdout_path, out_size)]
    if err_size:
        segments += [(label, len(label)), (stderr_path, err_size)]
    total = sum(size for _, size in segments)
    if total <= head + tail:
        return _read_range(segments, 0, total).decode("utf-8", "replace")
    return (
        _read_range(segments, 0, head).decode("utf-8", "replace")
        + f"\n... [{total - head - tail} bytes omitted] ...\n"
        + _read_range(segments, total - tail, total).decode("utf-8", "replace")
    )


def _read_range(segments: list[tuple[Path | bytes, int]], start: int, end: int) -> bytes:
    parts = []
    offset = 0
    for seg, size in segments:
        lo, hi = max(start, offset) - offset, min(end, offset + size) - offset
        offset += size
        if lo >= hi:
            continue
        if isinstance(seg, bytes):
            parts.append(seg[lo:hi])
            continue
        with contextlib.suppress(OSError):  # gone, or replaced by a link: never followed
            parts.append(safefs.read_bytes(seg.parent, seg.name, hi - lo, offset=lo))
    return b"".join(parts)
