"""admit(): whatever a proposer returns, the loop gets a Proposal it can record: well-formed,
encodable, and within the caps, with a reason that names the cap it broke."""

from __future__ import annotations

import sqlite3

from overnight.proposers.admit import admit, admit_files
from overnight.store.records import Proposal

BEST = {"train.py": "x = 1\n" * 100}


def test_not_a_proposal_becomes_an_invalid_one() -> None:
    for bad in (None, {"files": {}}, "edit"):
        p = admit(bad, BEST, 1 << 20, "plugin")
        assert p.invalid_reason and "not a Proposal" in p.invalid_reason
        assert p.files == {} and p.proposer == "plugin"


def test_files_must_map_paths_to_text() -> None:
    p = admit(Proposal(files={"train.py": b"bytes"}, description="d"), BEST, 1 << 20)  # type: ignore[dict-item]
    assert p.files == {} and "paths to text" in (p.invalid_reason or "")


def test_lone_surrogates_become_replacement_characters_and_can_be_stored() -> None:
    p = admit(Proposal(files={"train.py": "x = 1  # \udcff\n"}, description="a \ud800 b",
                       rationale="ok \U0001f600", meta={"k\udfff": ["\ud83d"]}), BEST, 1 << 20)
    assert p.description == "a \ufffd b" and p.rationale == "ok \U0001f600"
    assert p.files == {"train.py": "x = 1  # \ufffd\n"}
    assert p.meta == {"k\ufffd": ["\ufffd"]}
    db = sqlite3.connect(":memory:")
    db.execute("create table t (a text)")
    db.execute("insert into t values (?)", (p.description + p.files["train.py"],))


def test_the_surface_is_capped_relative_to_the_best() -> None:
    big = "#" * (2 << 20)
    p = admit(Proposal(files={"train.py": big}, description="huge"), BEST, 1 << 20)
    assert p.files == {} and "over the cap of 1 MiB" in (p.invalid_reason or "")
    # A surface that is already large may grow to four times its size.
    large = {"train.py": "#" * (1 << 20)}
    grown = admit(Proposal(files={"train.py": big}, description="ok"), large, 1 << 20)
    assert grown.invalid_reason is None and grown.files == {"train.py": big}


def test_texts_are_cut_with_the_cap_named() -> None:
    p = admit(Proposal(files={}, description="d" * 5000, response="r" * (5 << 20)), BEST, 1)
    assert len(p.description) == 500 and "over the cap of 500" in p.description
    assert p.response is not None and len(p.response) == 4 << 20


def test_rebased_files_are_admitted_too() -> None:
    assert admit_files({"train.py": "a\udcff"}) == {"train.py": "a\ufffd"}
    assert admit_files(["train.py"]) is None and admit_files({"t": 1}) is None
