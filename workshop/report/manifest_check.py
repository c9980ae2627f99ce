"""A manifest.json checked once, where fill_tables reads it: its sections and settings of the wrong type (a hand
edit, another tool's file) are left out with a note, so one bad manifest cannot stop every table."""


# The manifest's sections that lessons read as mappings
MAPPINGS = ("settings", "speed", "peak_memory", "preflight", "model_states", "startup", "provenance", "versions",
            "oom_memory", "gpu_memory_limit", "training_window")


def _setting_types():
    import typing

    from workshop.config import RunConfig

    types = {}
    for name, hint in typing.get_type_hints(RunConfig).items():
        allowed = typing.get_args(hint) or (hint,)  # Optional[X] is Union[X, None]
        types[name] = tuple((int, float) if kind is float else kind for kind in allowed)
    return types


SETTING_TYPES = _setting_types()


def check_manifest(manifest):
    """(manifest with wrongly typed sections and settings left out, [what was left out and why])."""
    if not isinstance(manifest, dict):
        return manifest, []
    manifest, problems = dict(manifest), []
    for key in MAPPINGS:
        if manifest.get(key) is not None and not isinstance(manifest[key], dict):
            problems.append(f"`{key}` is {type(manifest[key]).__name__} {str(manifest[key])[:40]!r}, not a mapping")
            manifest[key] = None
    settings = manifest.get("settings") or {}
    for name, value in list(settings.items()):
        allowed = SETTING_TYPES.get(name)
        if allowed and not isinstance(value, allowed) or allowed and isinstance(value, bool) and bool not in allowed:
            problems.append(f"setting `{name}` is {type(value).__name__} {str(value)[:40]!r}")
            settings = {key: kept for key, kept in settings.items() if key != name}
    if settings is not (manifest.get("settings") or {}):
        manifest["settings"] = settings
    return manifest, problems
