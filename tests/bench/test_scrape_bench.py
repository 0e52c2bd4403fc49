"""``spikebridge bench scrape`` runs end to end (a smoke run; the figures are not judged here)."""

from __future__ import annotations

import json

import pytest

from bridge.bench.scrape import collection_cost, main

pytestmark = pytest.mark.integration


def test_a_short_run_scrapes_only_in_the_scraped_phases(capsys) -> None:
    assert main(["--duration", "0.6", "--rounds", "1", "--rate", "10", "--endpoints", "2",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    quiet, scraped = sorted(result["phases"], key=lambda p: p["scraped"])
    assert quiet["scrapes"] == 0
    assert scraped["scrapes"] >= 3
    assert result["no_scrapes"]["n"] > 100 and result["scraped"]["n"] > 100
    assert result["exposition_bytes"] > 1000
    assert result["holds"] == (result["p99_ratio"] <= result["target_ratio"])


def test_collection_cost_grows_with_the_endpoints() -> None:
    _, small = collection_cost(1, repeats=3)
    _, large = collection_cost(8, repeats=3)
    assert large > small


def test_bad_arguments_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--rate", "0"])
    assert exc.value.code == 2
