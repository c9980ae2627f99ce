"""Steady-state figures with their spread (workshop/report/spread.py) on run folders with known step series."""

import json
import random

import pytest

from workshop.logparse import Missing
from workshop.report import spread
from workshop.report.spread import Spread, median_interval, read_steps, steady


def write_steps(folder, seconds, tokens=None, extra_lines=()):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"step": i + 1, "seconds": s, **({"tokens": tokens[i]} if tokens else {})})
             for i, s in enumerate(seconds)]
    (folder / "steps.jsonl").write_text("\n".join([*lines, *extra_lines]) + "\n")
    return folder


def test_the_interval_is_the_order_statistics_every_table_gives():
    # The distribution-free 95% interval of a median: the 6th and 15th of 20 ordered values, the 40th and 61st of
    # 100 (Conover, Practical Nonparametric Statistics, table A3 / the normal approximation n/2 -+ 1.96 sqrt(n)/2).
    values = [0.1 + i / 1000 for i in range(20)]
    random.Random(0).shuffle(values)
    middle, low, high = median_interval(values)
    ordered = sorted(values)
    assert (low, high) == (ordered[5], ordered[14]) and middle == pytest.approx((ordered[9] + ordered[10]) / 2)
    hundred = sorted(random.Random(1).random() for _ in range(100))
    assert median_interval(hundred)[1:] == (hundred[39], hundred[60])


def test_warmup_steps_are_left_out_of_the_steady_state(tmp_path):
    # Two slow warm-up steps (an allocator growing, a compile) then 18 steady ones: of 20 steps the first 2 are
    # warm-up, so the median is the steady steps' own, as if the warm-up never happened.
    assert spread.warmup_of(20) == 2
    steady_seconds = [0.1 + i / 1000 for i in range(18)]
    with_warmup = steady(read_steps(write_steps(tmp_path / "a", [9.0, 4.0, *steady_seconds])))
    alone = median_interval(steady_seconds)
    assert isinstance(with_warmup, Spread) and with_warmup.steps == 18
    assert (with_warmup.value, with_warmup.low, with_warmup.high) == alone
    assert with_warmup.separated_from(Spread(0.2, 0.19, 0.21, 20))
    assert not with_warmup.separated_from(Spread(alone[0], alone[0], alone[0], 20))


def test_more_steps_narrow_the_interval(tmp_path):
    rng = random.Random(2)
    short = steady(read_steps(write_steps(tmp_path / "s", [rng.gauss(0.1, 0.01) for _ in range(12)])))
    long = steady(read_steps(write_steps(tmp_path / "l", [rng.gauss(0.1, 0.01) for _ in range(400)])))
    assert (long.high - long.low) < (short.high - short.low) / 2


def test_a_run_too_short_for_a_steady_state_says_so(tmp_path):
    cell = steady(read_steps(write_steps(tmp_path / "r", [1.0, 0.5, 0.1, 0.1, 0.1])))
    assert isinstance(cell, Missing) and cell.cell == "n/a (too short for a steady state)"
    assert "5 timed steps" in cell.detail and "--max-steps" in cell.detail
    enough = spread.MIN_WARMUP + spread.MIN_STEADY
    assert isinstance(steady(read_steps(write_steps(tmp_path / "e", [0.1] * enough))), Spread)


def test_rates_come_from_each_steps_own_count(tmp_path):
    seconds = [2.0, 2.0] + [0.5] * 9 + [0.25] * 9  # 20 steps: 2 of warm-up, then 9 at each speed
    tokens = [1000] * 20
    rate = steady(read_steps(write_steps(tmp_path / "t", seconds, tokens)), per="tokens", unit="tokens/s")
    assert rate.value == pytest.approx((2000 + 4000) / 2) and rate.unit == "tokens/s"
    assert "tokens/s" in str(rate) and rate.as_json()["steps"] == 18
    no_counts = steady(read_steps(write_steps(tmp_path / "n", seconds)), per="tokens")
    assert isinstance(no_counts, Missing) and "tokens" in no_counts.cell


def test_an_epochs_partial_last_step_is_left_out_of_the_samples_rate(tmp_path):
    """step_times.py counts no samples on an epoch's last step when the epoch is no whole number of steps (that step
    holds fewer rows): the rate comes from the whole steps, instead of the run having no rate at all."""
    lines = [json.dumps({"step": n, "seconds": 0.1 if n % 6 else 0.03, **({"samples": 16} if n % 6 else {})})
             for n in range(1, 25)]  # 4 epochs of 6 steps, each ending in a short partial one
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "steps.jsonl").write_text("\n".join(lines) + "\n")
    rate = steady(read_steps(folder), per="samples", unit="samples/s")
    assert isinstance(rate, Spread) and rate.value == pytest.approx(160.0) and rate.steps == 17  # 21 kept, 4 partial
    few = tmp_path / "f"  # whole steps too few for a steady rate: said, with how many there were
    few.mkdir()
    (few / "steps.jsonl").write_text("\n".join(lines[:6] + [json.dumps({"step": n, "seconds": 0.1})
                                                            for n in range(7, 13)]) + "\n")
    short = steady(read_steps(few), per="samples")
    assert isinstance(short, Missing) and short.cell == "n/a (no samples per step)" and "3 of the 10" in short.detail


def test_missing_and_damaged_step_files(tmp_path):
    absent = read_steps(tmp_path)
    assert isinstance(absent, Missing) and "steps.jsonl" in absent.detail
    half_written = write_steps(tmp_path / "k", [0.1] * 12, extra_lines=['{"step": 13, "sec'])
    assert len(read_steps(half_written)) == 12
    empty = write_steps(tmp_path / "z", [], extra_lines=["not json"])
    assert isinstance(read_steps(empty), Missing) and "1 unreadable" in read_steps(empty).detail


def test_the_display_shows_the_median_and_its_interval():
    cell = Spread(0.1183, 0.1142, 0.1221, 40)
    assert str(cell) == "0.118 s (0.114–0.122)"
    assert str(Spread(12345.6, 12001.0, 12999.0, 40, "tokens/s")) == "12,346 tokens/s (12,001–12,999)"
