"""Tables as text: markdown (title, table, quiz answers, notes), csv (one block per table) or json."""

import json
import math

def _display(value):
    if isinstance(value, float):
        if not math.isfinite(value) or value == int(value):
            return str(int(value)) if math.isfinite(value) else str(value)
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    # a pipe would split a Markdown cell, a line break the row (a run id may hold either)
    return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _json_safe(value):
    # NaN / inf losses are data (a diverged run), but not valid JSON numbers: spell them.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "as_json"):  # a steady figure: its median, interval, steps and display (report/spread.py)
        return value.as_json()
    return value


def render(tables, fmt):
    parts = []
    for key, df in tables.items():
        if fmt == "markdown":
            shown = df.apply(lambda column: column.map(_display))
            parts.append(f"## {df.attrs['title']}\n\n{shown.to_markdown(index=False, disable_numparse=True)}\n")
            if df.attrs.get("answers"):
                parts.append("Answers:\n" + "\n".join(f"- {answer}" for answer in df.attrs["answers"]) + "\n")
            if df.attrs["notes"]:
                parts.append("Notes:\n" + "\n".join(f"- {note}" for note in df.attrs["notes"]) + "\n")
        elif fmt == "csv":
            parts.append(f"# {key}\n{df.to_csv(index=False, na_rep='nan')}")  # a diverged loss is data, not blank
    if fmt == "json":
        return json.dumps({key: {"title": df.attrs["title"], "notes": df.attrs["notes"],
                                 "answers": df.attrs.get("answers", []),
                                 "rows": [{k: _json_safe(v) for k, v in row.items()}
                                          for row in df.to_dict("records")]}
                           for key, df in tables.items()}, indent=1)
    return "\n".join(parts)

