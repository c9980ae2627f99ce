"""SQuAD-style exact match and token F1 as a local `evaluate` metric (no Hub download).

    metric = evaluate.load("path/to/workshop/metrics/squad_em_f1")
    metric.compute(predictions=["in 1905"], references=[["1905"]])  # {"exact_match": 0.0, "f1": 66.67}

Both answers are normalised first: lower case, punctuation removed, the articles a/an/the dropped, runs of
whitespace collapsed. Exact match asks whether the normalised strings are equal; F1 compares the bags of
tokens. A prediction scores its best against any of its references, and the corpus score is the mean, in %.
"""
import re
import string
from collections import Counter

import datasets
import evaluate

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    # Articles go after punctuation so that "(the" is caught too; split() also collapses the spaces they leave.
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def token_f1(prediction: str, reference: str) -> float:
    predicted, expected = normalize(prediction).split(), normalize(reference).split()
    if not predicted or not expected:
        # Nothing to overlap: only "both empty" is a match (e.g. an answer that was all articles).
        return float(predicted == expected)
    shared = sum((Counter(predicted) & Counter(expected)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(predicted), shared / len(expected)
    return 2 * precision * recall / (precision + recall)


class SquadEmF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="SQuAD-style exact match and token-overlap F1, best over each example's references.",
            citation="",
            inputs_description="predictions: list of str; references: list of lists of str (one list per "
                               "prediction). Returns exact_match and f1 in percent.",
            features=datasets.Features({
                "predictions": datasets.Value("string"),
                "references": datasets.Sequence(datasets.Value("string")),
            }),
        )

    def _compute(self, predictions, references):
        if len(predictions) == 0:
            raise ValueError("no predictions to score")
        em = f1 = 0.0
        for prediction, answers in zip(predictions, references):
            if not answers:
                raise ValueError("every prediction needs at least one reference answer")
            em += max(exact_match(prediction, answer) for answer in answers)
            f1 += max(token_f1(prediction, answer) for answer in answers)
        n = len(predictions)
        return {"exact_match": 100 * em / n, "f1": 100 * f1 / n}
