"""safefs: what the controller opens, writes or deletes under a folder a run could have
rearranged never goes through a link, and never blocks on a FIFO."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from overnight.isolation import safefs


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    (root / "real" / "f.txt").write_text("inside")
    (outside / "secret.txt").write_text("outside")
    return root, outside


def test_reading_refuses_links_anywhere_on_the_way(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    assert safefs.read_text(root, "real/f.txt") == "inside"
    (root / "leaf.txt").symlink_to(outside / "secret.txt")
    (root / "dir").symlink_to(outside)
    for rel in ("leaf.txt", "dir/secret.txt", "../outside/secret.txt", "/etc/passwd"):
        with pytest.raises(OSError):
            safefs.read_bytes(root, rel)
    assert safefs.size(root, "leaf.txt") == 0 and safefs.size(root, "real/f.txt") == 6


def test_reading_a_fifo_fails_instead_of_blocking(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    os.mkfifo(root / "pipe")
    with pytest.raises(OSError):
        safefs.read_bytes(root, "pipe")


def test_writing_replaces_a_linked_folder_instead_of_writing_through_it(
    tree: tuple[Path, Path],
) -> None:
    root, outside = tree
    os.rename(root / "real", root / "moved")
    (root / "real").symlink_to(outside)  # the swap a run can make
    assert safefs.inside(root, "real/f.txt") is None
    safefs.write_inside(root, "real/f.txt", b"restored", 0o644)
    assert (root / "real").is_dir() and not (root / "real").is_symlink()
    assert (root / "real" / "f.txt").read_text() == "restored"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    src = outside / "secret.txt"
    (root / "copy").symlink_to(outside)
    safefs.copy_inside(src, root, "copy/secret.txt")
    assert not (root / "copy").is_symlink() and (root / "copy" / "secret.txt").read_text()


def test_unlinking_removes_the_link_not_its_target(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (root / "dir").symlink_to(outside)
    safefs.unlink_inside(root, "dir/secret.txt")  # through a link: refused, nothing done
    assert (outside / "secret.txt").exists()
    safefs.unlink_inside(root, "dir")
    assert not (root / "dir").exists() and (outside / "secret.txt").exists()


def test_an_unreadable_folder_is_still_removed(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    locked = root / "locked" / "deep"
    locked.mkdir(parents=True)
    (locked / "x").write_text("x")
    os.chmod(root / "locked", 0)
    try:
        safefs.remove(root / "locked")
    finally:
        if (root / "locked").exists():
            os.chmod(root / "locked", 0o700)
    assert not (root / "locked").exists()


def test_walking_lists_regular_files_only(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (root / "real" / "link.jsonl").symlink_to(outside / "secret.txt")
    (root / "real" / "sub").symlink_to(outside)
    assert [p.relative_to(root).as_posix() for p in safefs.walk_files(root)] == ["real/f.txt"]
    (root.parent / "alias").symlink_to(root)
    assert list(safefs.walk_files(root.parent / "alias")) == []


def test_a_log_is_created_fresh_whatever_was_there(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (root / "run.stdout").symlink_to(outside / "secret.txt")
    fd = safefs.create_log(root / "run.stdout")
    os.write(fd, b"log")
    os.close(fd)
    assert (outside / "secret.txt").read_text() == "outside"
    assert (root / "run.stdout").read_text() == "log" and not (root / "run.stdout").is_symlink()
