"""Readers for the two loggers' files in a run folder: gpu_memory.csv (nvidia-smi) and cpu_memory.log (psrecord).

Like every reader in workshop.logparse, each takes a path, never raises on bad input, and returns
`Parsed(DataFrame, bad_lines)` or `Missing(cell, detail)`.
"""

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from workshop.logparse import Missing, Parsed, line_spans, read_text


GPU_COLUMNS = {  # nvidia-smi --query-gpu header -> our column
    "timestamp": "timestamp",
    "index": "index",
    "name": "name",
    "memory.used [MiB]": "memory_used_mib",
    "memory.total [MiB]": "memory_total_mib",
    "utilization.gpu [%]": "util_pct",
    "power.draw [W]": "power_w",
    "temperature.gpu": "temp_c",
}


def _no_rows(path, bad):
    """The marker for a log with a header and no sample that could be read."""
    if bad:
        return Missing(f"damaged ({Path(path).name}: no readable rows)", f"{path}: lines {line_spans(bad)} unreadable")
    return Missing(f"empty ({Path(path).name}: header only)", f"{path} has a header but no samples yet")


def _lines_from_header(path):
    """(lines, index of the first non-blank line), or Missing if the file can't be read or is empty."""
    text = read_text(path)
    if isinstance(text, Missing):
        return text
    lines = text.split("\n")  # not splitlines(): it also splits on \r, \x0c, ...
    return lines, next(i for i, line in enumerate(lines) if line.strip())


def read_gpu_csv(path):
    """gpu_memory.csv (nvidia-smi --format=csv): Parsed(DataFrame, bad_lines), or Missing.

    Columns: timestamp, index, name, memory_used_mib, memory_total_mib, util_pct, power_w, temp_c (the last three
    are NaN for older 5-column logs); [N/A] and [Not Supported] become NaN. Rows of several GPUs interleave.
    """
    found = _lines_from_header(path)
    if isinstance(found, Missing):
        return found
    lines, first = found
    header = lines[first].strip()
    if header.startswith("# no GPU"):
        reason = header.partition(":")[2].strip() or "no reason given"
        return Missing("n/a (no GPU)", f"{Path(path).name} says no GPU was monitored: {reason}")
    names = [GPU_COLUMNS.get(h.strip()) for h in header.split(",")]
    if "memory_used_mib" not in names or "index" not in names:
        return Missing(f"damaged ({Path(path).name} header)", f"{path}: line {first + 1} is not an nvidia-smi header")

    # Plain Python per line, numpy arrays, one DataFrame at the end: fill_tables reads a thousand of these a second.
    position = {name: i for i, name in enumerate(names) if name}
    numeric = [name for name in GPU_COLUMNS.values() if name in _GPU_NUMBERS]
    times, indices, gpu_names, numbers, bad = [], [], [], [], []
    for number, line in enumerate(lines[first + 1:], start=first + 2):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        index = fields[position["index"]] if len(fields) == len(names) else ""
        if not (index.isascii() and index.isdigit()):
            bad.append(number)
            continue
        values = [_gpu_value(fields[position[n]], n) if n in position else math.nan for n in numeric]
        if None in values:  # a value that cannot be read as what its column holds: the line is bad, not a number
            bad.append(number)
            continue
        indices.append(int(index))
        times.append(fields[position["timestamp"]] if "timestamp" in position else "")
        gpu_names.append(fields[position["name"]] if "name" in position else None)
        numbers.append(values)
    if not indices:
        return _no_rows(path, bad)

    df = pd.DataFrame(np.array(numbers), columns=numeric)
    df.insert(0, "timestamp", _timestamps(times))
    df.insert(1, "index", np.array(indices))
    df.insert(2, "name", gpu_names)
    return Parsed(df, bad)


def _timestamps(texts):
    """nvidia-smi's '2026/11/24 10:01:02.123' as datetime64; numpy reads the usual case at once, pandas (slower)
    takes over when a timestamp is malformed, turning just that one into NaT."""
    try:
        return np.array([text.replace("/", "-", 2) for text in texts], dtype="datetime64[ms]")
    except ValueError:
        return pd.to_datetime(pd.Series(texts), format="%Y/%m/%d %H:%M:%S.%f", errors="coerce").to_numpy()


_GPU_NUMBERS = {"memory_used_mib", "memory_total_mib", "util_pct", "power_w", "temp_c"}
_VALUE = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z%]*)")
_MIB_PER = {"": 1, "MiB": 1, "KiB": 1 / 1024, "GiB": 1024, "TiB": 1024 ** 2}  # memory columns: a unit converts
_UNITS = {"util_pct": {"", "%"}, "power_w": {"", "W"}, "temp_c": {"", "C"}}


def _gpu_value(field, column):
    """'20104 MiB' -> 20104.0, '20 GiB' in a MiB column -> 20480.0; '[N/A]', '[Not Supported]' -> NaN (no
    value); None for a field that is not what its column holds: a foreign unit, a negative, nan or inf, text.
    Under --format=csv,nounits there is no unit."""
    if field.startswith("[") and field.endswith("]"):
        return math.nan
    found = _VALUE.fullmatch(field)
    if not found:
        return None
    value, unit = float(found.group(1)), found.group(2)
    if column.startswith("memory_"):
        scale = _MIB_PER.get(unit)
        value = value * scale if scale is not None else None
    elif unit not in _UNITS[column]:
        value = None
    if value is None or not math.isfinite(value) or (value < 0 and column != "temp_c"):
        return None
    return value


PSRECORD_COLUMNS = ["elapsed_s", "cpu_pct", "real_mib", "virtual_mib"]


def read_psrecord(path):
    """psrecord's --log file: Parsed(DataFrame[elapsed_s, cpu_pct, real_mib, virtual_mib], bad_lines), or Missing.

    Reads the default plain format ("# Elapsed time   CPU (%)   Real (MB)   Virtual (MB)", then whitespace-
    separated numbers) and --log-format csv ("elapsed_time,nproc,cpu,mem_real,mem_virtual"). psrecord's "MB" are
    MiB (bytes / 1024**2). --include-io adds columns that are ignored here.
    """
    found = _lines_from_header(path)
    if isinstance(found, Missing):
        return found
    lines, first = found
    header = lines[first].strip()
    if header.startswith("#") and "Elapsed" in header:
        split, pick = str.split, [0, 1, 2, 3]
    elif header.startswith("elapsed_time,"):
        split, pick = (lambda line: line.split(",")), [0, 2, 3, 4]  # skip nproc
    else:
        return Missing(f"damaged ({Path(path).name} header)", f"{path}: line {first + 1} is not a psrecord header")

    rows, bad = [], []
    width = len(split(header.lstrip("#"))) if header.startswith("elapsed_time,") else None
    for number, line in enumerate(lines[first + 1:], start=first + 2):
        if not line.strip():
            continue
        fields = split(line)
        try:
            if len(fields) < 4 or (width and len(fields) != width):
                raise ValueError
            row = [float(fields[i]) for i in pick]
            # float() reads 'inf', 'nan' and negatives, none of which psrecord writes: a damaged line
            if not all(math.isfinite(value) and value >= 0 for value in row):
                raise ValueError
            rows.append(row)
        except ValueError:
            bad.append(number)
    if not rows:
        return _no_rows(path, bad)
    return Parsed(pd.DataFrame(rows, columns=PSRECORD_COLUMNS), bad)
