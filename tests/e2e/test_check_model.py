"""`overnight check-model` against a fake llama.cpp server acting like a small model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_repo, run_cli, score_config
from support.fake_llm import FakeLLM

pytest.importorskip("openai")

SCORE = "X = 10  # the knob\nprint(f'score: {X}')\n"


def test_check_model_reports_context_speed_formats_and_settings(tmp_path: Path) -> None:
    replies = [
        "OK",
        " ".join(str(n) for n in range(1, 61)),
        "I think X should be smaller.",  # search_replace: prose ...
        "Yes, smaller X.",  # ... and prose again after the repair turn
        "DESCRIPTION: X to 5\nscore.py\n```python\nX = 5  # the knob\nprint(f'score: {X}')\n```\n",
        json.dumps({"lesson": "", "hypothesis": "smaller X", "description": "X to 3",
                    "edits": [{"knob": "X", "value": 3}]}),  # fmt: skip
    ]
    with FakeLLM(replies, flavor="llama.cpp", n_ctx=4096) as server:
        toml = score_config(proposer="llm") + (
            f'provider = "openai"\nmodel = "small"\nbase_url = "{server.openai_url}"\n'
        )
        repo = make_repo(tmp_path / "repo", {"score.py": SCORE, "overnight.toml": toml})
        out = run_cli(repo, "check-model")
        assert out.returncode == 0, out.stderr + out.stdout
        as_json = run_cli(repo, "check-model", "--json", "--formats", "json")
    text = out.stdout
    assert "model small: context 4096 tokens (llama.cpp GET /props)" in text
    assert "output tokens/s" in text
    assert "search_replace  NOT usable: unusable search_replace reply: the reply contains no " \
        "SEARCH/REPLACE block (found prose only, 1 line) (after a repair turn)" in text
    assert "whole_file      usable edit" in text and "json            usable edit" in text
    assert 'formats = ["whole_file", "json"]' in text
    assert "context_tokens" not in text  # the server reports it
    assert 'timeout = "1m"' in text
    report = json.loads(as_json.stdout)
    assert [f["format"] for f in report["formats"]] == ["json"]
    # Nothing was written: no study state.
    assert not (repo / ".overnight" / "t" / "ledger.sqlite").exists()


def test_check_model_usage_errors(tmp_path: Path) -> None:
    toml = score_config(proposer="llm") + 'provider = "openai"\napi_key_env = "OVN_UNSET_KEY"\n'
    repo = make_repo(tmp_path / "repo", {"score.py": SCORE, "overnight.toml": toml})
    out = run_cli(repo, "check-model")
    assert out.returncode == 2 and "OVN_UNSET_KEY" in out.stderr and "Traceback" not in out.stderr
    out = run_cli(repo, "check-model", "--formats", "diff")
    assert out.returncode == 2 and "--formats: expected names from" in out.stderr
