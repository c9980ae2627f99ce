"""Which model a `--model` name means, without importing torch or transformers: the command line is checked
before either loads (workshop.config), and workshop.model builds what these names resolve to."""
import os
import re

from workshop.errors import WorkshopError
from workshop.shapes import BLOOM_SHAPES as SHORT_SHAPES, FAMILIES

# Hub id -> shape of the published checkpoint, so random-weight runs need no download.
BLOOM_SHAPES = {f"bigscience/{name}": shape for name, shape in SHORT_SHAPES.items()}
TINY = "bloom-tiny"
LAPTOP = "bloom-laptop"  # --profile laptop: ~100M parameters, embedded tokenizer, seeded random weights
TINY_FAMILIES = {f"{family}-tiny": family for family in FAMILIES}
FAMILY_IDS = {spec["hub_id"]: family for family, spec in FAMILIES.items()}
LEGACY_HUB_ID = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")
BLOOM_LIKE = re.compile(r"(bloom.*|\d[\d.]*[a-z]?\d*)", re.IGNORECASE)  # bloom-650m, 650m, 7b: a size, not an id


def known_names() -> str:
    return ", ".join([TINY, LAPTOP, *(k.removeprefix("bigscience/") for k in BLOOM_SHAPES), *TINY_FAMILIES,
                      *(f"{family} ({spec['hub_id']})" for family, spec in FAMILIES.items())])


def resolve_model(name: str) -> str:
    """Map `560m`, `bloom-560m` or `bigscience/bloom-560m` to the Hub id; `tiny` to `bloom-tiny`; a family name
    (`llama`) to its published member's Hub id; `llama-tiny` stays; a Hub id (`org/name`, or one of the Hub's
    oldest without an organisation, `gpt2`) or local folder stays."""
    if name in TINY_FAMILIES or name in FAMILY_IDS or name == LAPTOP or os.path.isdir(name):
        return name
    if name in FAMILIES:
        return FAMILIES[name]["hub_id"]
    short = name.removeprefix("bigscience/").removeprefix("bloom-")
    if short == "tiny":
        return TINY
    hub_id = f"bigscience/bloom-{short}"
    if hub_id in BLOOM_SHAPES:
        return hub_id
    if name.count("/") == 1 and not name.startswith(("bigscience/bloom-", "/", ".")):
        return name  # any other Hub id: the cache or the Hub decides at load time
    if LEGACY_HUB_ID.fullmatch(name) and not BLOOM_LIKE.fullmatch(name):
        return name  # the Hub's oldest ids have no organisation (gpt2, distilgpt2); a misspelt size is refused
    raise WorkshopError(f"unknown model {name!r}; choose one of {known_names()}, a Hub id (org/name) "
                        "or a local checkpoint folder")
