"""What the Ray executor sends to the nodes once per study: the start tree.

Every candidate is the start tree with only surface files changed (the guard makes sure of
it), so the tree travels once, as a tar in Ray's object store, and each task carries only
its surface files. The manifest (locked path -> digest) is what a node checks a run's copy
against afterwards: any non-surface file changed or deleted is a locked-file violation.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from overnight.errors import OvernightError
from overnight.executors.ray.worker import data_digest, file_digest
from overnight.git.workspace import git
from overnight.isolation.integrity import ProtectedFiles


@dataclass
class Tree:
    key: str  # sha256 of the tar: names the node's cached copy
    data: bytes
    manifest: dict[str, str]  # locked path -> digest
    surface: list[str]  # surface files present in the tree (replaced or removed per run)


def identity(root: Path, commit: str, surface: Iterable[str]) -> tuple[str, list[str]]:
    """A hash of everything but the surface at `commit` (candidates that share it share a
    tree), and the surface files `commit` has."""
    out = git("ls-tree", "-r", "-z", "--full-tree", commit, cwd=root)
    wanted = set(surface)
    rest, present = [], []
    for entry in filter(None, out.split("\0")):
        path = entry.split("\t", 1)[1]
        if path in wanted:
            present.append(path)
        else:
            rest.append(entry)  # mode, object id and path: any change shows
    return hashlib.sha256("\0".join(sorted(rest)).encode()).hexdigest(), sorted(present)


def build(root: Path, commit: str, surface: Iterable[str], protected: ProtectedFiles) -> Tree:
    """`git archive` of `commit` plus the untracked `protect` files, and their manifest."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=root, capture_output=True
    )
    if archive.returncode != 0:
        err = archive.stderr.decode(errors="replace").strip()
        raise OvernightError(f"git archive {commit[:12]} failed: {err}")
    wanted = set(surface)
    manifest: dict[str, str] = {}
    in_tree: list[str] = []
    buf = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(archive.stdout), mode="r:") as src,
        tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst,
    ):
        for member in src:
            fh = src.extractfile(member) if member.isfile() else None
            data = fh.read() if fh is not None else None
            if member.name in wanted:
                in_tree.append(member.name)
            elif data is not None:
                manifest[member.name] = data_digest(data)
            elif member.issym():
                manifest[member.name] = "link:" + member.linkname
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
        for rel in protected.files:
            path = protected.root / rel
            dst.add(path, arcname=rel, recursive=False)
            manifest[rel] = file_digest(path) or ""
    data = buf.getvalue()
    return Tree(hashlib.sha256(data).hexdigest(), data, manifest, sorted(in_tree))
