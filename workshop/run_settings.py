"""What a finished run folder says about itself, read without torch: answer_quality, export and merge refuse a wrong
run folder with an `error:` line within a second (generate reads these too)."""
import json
from pathlib import Path

from workshop.errors import WorkshopError


def read_settings(run_dir: Path) -> dict:
    path = run_dir / "manifest.json"
    try:
        settings = json.loads(path.read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise WorkshopError(f"cannot read the run's settings from {path} ({type(err).__name__}: {err})") from err
    needed = ("model", "init", "data", "subset_size", "seed", "eval_fraction", "max_length", "output_dir")
    lacking = [key for key in needed if key not in settings]
    if lacking:
        raise WorkshopError(f"{path} settings lack {', '.join(lacking)}")
    return settings


def saved_model(settings: dict, model_dir=None) -> Path:
    """The run's fine-tuned model folder (<output_dir>/final unless given), checked to hold a model or a LoRA adapter
    (a --peft run's, which workshop.peft_model.load_run_model puts on its rebuilt base)."""
    model_dir = Path(model_dir or Path(settings["output_dir"]) / "final")
    if not any((model_dir / name).is_file() for name in ("config.json", "adapter_config.json")):
        raise WorkshopError(f"no saved model in {model_dir} (training saves <output_dir>/final; a relative "
                            "output_dir is relative to where training ran): pass --model-dir")
    return model_dir
