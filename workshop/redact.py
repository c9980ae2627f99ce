"""Hugging Face tokens never reach a log, a manifest or an error line: `redact(data)` replaces them.

Torch-free, so the argument parser's error line (`unrecognized arguments: --hub-token hf_...`, printed before
anything heavy is imported) uses it too."""
import os
import re

TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
TOKEN_FLAG = re.compile(r"(--hub[-_]token[= ])\S+")
# A token pasted anywhere else (a positional argument, another flag's value): Hugging Face's user access tokens
# are hf_ and 34 letters and digits.
TOKEN_SHAPE = re.compile(r"\bhf_[A-Za-z0-9]{20,}")


def redact(data):
    """data with every Hugging Face token (from the environment, a --hub-token value, or token-shaped) replaced."""
    if isinstance(data, dict):
        return {key: redact(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        words = [redact(value) for value in data]
        for i, word in enumerate(words[:-1]):  # `--hub-token VALUE` as two argv words
            if isinstance(word, str) and re.fullmatch(r"--hub[-_]token", word):
                words[i + 1] = "<redacted>"
        return words
    if isinstance(data, str):
        for variable in TOKEN_VARIABLES:
            secret = os.environ.get(variable)
            if secret:
                data = data.replace(secret, "<redacted>")
        return TOKEN_SHAPE.sub("<redacted>", TOKEN_FLAG.sub(r"\1<redacted>", data))
    return data
