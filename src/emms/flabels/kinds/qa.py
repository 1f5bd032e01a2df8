"""Visual and text question answering.

VQA, mode ``"qa"`` (default): ``"question: <q> answer: <a>"``. Mode ``"answer"``: the answers form a
class vocabulary (each distinct answer embedded once, as the official README describes: "VQA has
the same pipeline as the categorization task"). The native target is the answer's class id.

Text QA: ``"question: <q> context: <c> answer: <a>"``; the context part is left out when there is
no ``context`` column, the cell is empty, or ``with_context=False``. Text QA has no native target.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from emms.errors import InputError
from emms.flabels.kinds._common import FLabelTexts, _is_missing, distinct, text_column

VQA_MODES = ("qa", "answer")


def vqa_target(frame: pd.DataFrame, class_names: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """Answer ids (N,) int64 into ``class_names`` (the answer vocabulary; default: sorted distinct answers)."""
    answers = text_column(frame, "answer")
    text_column(frame, "question")
    vocabulary = sorted(set(answers)) if class_names is None else class_names
    position = {a: i for i, a in enumerate(vocabulary)}
    for row, answer in enumerate(answers):
        if answer not in position:
            raise InputError(f"labels['answer']: row {row} has answer {answer!r}, which is not in class_names "
                             "(the answer vocabulary)")
    return np.array([position[a] for a in answers], dtype=np.int64), vocabulary


def vqa_texts(frame: pd.DataFrame, class_names: list[str] | None, *, mode: str = "qa") -> FLabelTexts:
    """VQA F-label texts in ``mode`` ``"qa"`` (question + answer) or ``"answer"`` (answer vocabulary)."""
    if mode not in VQA_MODES:
        raise InputError(f"mode: expected one of {list(VQA_MODES)}, got {mode!r}")
    ids, vocabulary = vqa_target(frame, class_names)
    if mode == "answer":
        return FLabelTexts(texts=list(vocabulary), index=ids)
    questions = text_column(frame, "question")
    answers = text_column(frame, "answer")
    texts, index = distinct([f"question: {q} answer: {a}" for q, a in zip(questions, answers)])
    return FLabelTexts(texts=texts, index=index)


def text_qa_texts(frame: pd.DataFrame, *, with_context: bool = True) -> FLabelTexts:
    """Question, optional context and answer written as one text per sample."""
    questions = text_column(frame, "question")
    answers = text_column(frame, "answer")
    contexts = [None] * len(frame)
    if with_context and "context" in frame.columns:
        contexts = [None if _is_missing(c) or not str(c).strip() else " ".join(str(c).split())
                    for c in frame["context"].tolist()]
    texts = [f"question: {q} context: {c} answer: {a}" if c else f"question: {q} answer: {a}"
             for q, c, a in zip(questions, contexts, answers)]
    distinct_texts, index = distinct(texts)
    return FLabelTexts(texts=distinct_texts, index=index)
