"""The reading commands use the config as last validated only while overnight.toml is
byte-for-byte the file that was validated; any edit is validated again."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import make_repo, run_cli, score_config

from overnight.store.config_cache import CACHE_FILE, cached_config
from overnight.store.study import Study


def ran(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path / "repo", {
        "score.py": "X = 10\nprint(f'score: {X}')\n",
        "overnight.toml": score_config(proposer="tune"),
    })  # fmt: skip
    assert run_cli(repo, "run", "-n", "0", "--plain").returncode == 0
    return repo


def test_the_cache_serves_an_unchanged_file_and_no_other(tmp_path: Path) -> None:
    repo = ran(tmp_path)
    config = repo / "overnight.toml"
    Study.open(config)  # a full validation writes the cache
    cache = repo / ".overnight" / "t" / CACHE_FILE
    assert cache.exists()
    view = cached_config(config, repo)
    assert view is not None
    assert (view.metric.name, view.metric.goal, view.study.name) == ("score", "minimize", "t")
    assert view.constraints == [] and view.holdout.command == "" and view.path == config
    config.write_text(config.read_text() + "\n")  # any byte changed: validate again
    assert cached_config(config, repo) is None
    cache.write_text(json.dumps({"key": "other"}))
    assert cached_config(config, repo) is None


def test_status_follows_edits_of_the_config(tmp_path: Path) -> None:
    repo = ran(tmp_path)
    assert json.loads(run_cli(repo, "status", "--json").stdout)["metric"]["goal"] == "minimize"
    config = repo / "overnight.toml"
    config.write_text(config.read_text().replace('goal = "minimize"', 'goal = "maximize"'))
    assert json.loads(run_cli(repo, "status", "--json").stdout)["metric"]["goal"] == "maximize"
    config.write_text(config.read_text().replace('goal = "maximize"', 'goal = "up"'))
    out = run_cli(repo, "status")
    assert out.returncode == 2 and "[metric].goal" in out.stderr  # never the stale copy
