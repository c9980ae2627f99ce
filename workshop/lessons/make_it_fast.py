"""Lesson 4, make it fast (notebooks/04, slurm/fast.slurm): the speed table (workshop/speed.py's figures in the
manifest). The handout has no such table, so it has one layout: one row per run. Its benchmark
tables and figures are in make_it_fast_figures.py."""

from workshop.report.engine import Table
from workshop.report.speed_cells import speed_row as make_it_fast

TABLES = (Table("make_it_fast", "Make it fast: speed of the steady training steps (workshop/speed.py)", make_it_fast),)
