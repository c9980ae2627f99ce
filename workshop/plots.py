"""The notebooks' figures and helpers under their old names: each lesson's figures live in its module
(workshop/lessons/), the helpers that start runs and show tables in workshop/notebook.py."""

from workshop.lessons.baseline import cpu_memory_timeline, gpu_memory_timeline, loss_curves  # noqa: F401
from workshop.lessons.deepspeed_multi_gpu_figures import memory_per_gpu, scaling_throughput, zero_tradeoff  # noqa: F401
from workshop.lessons.deepspeed_single_gpu_figures import zero_memory_timelines, zero_peak_bars  # noqa: F401
from workshop.lessons.make_it_fast_figures import bench_results, speed_ladder  # noqa: F401
from workshop.notebook import ensure_configs, ensure_run, show_table  # noqa: F401
from workshop.report.figures import as_runs  # noqa: F401
