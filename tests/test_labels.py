"""Task kinds -> F-label texts and native targets; bad labels of every kind are rejected clearly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emms.errors import InputError
from emms.flabels import (NATIVE_TARGET_KINDS, TASK_COLUMNS, FLabelTexts, clean_class_name, f_label_texts,
                         native_target)
from emms.metrics.registry import TARGET_KINDS


def test_task_columns_are_the_agreed_interface():
    assert TASK_COLUMNS == {
        "classification": ("label",), "multilabel": ("labels",), "regression": ("target",),
        "captioning": ("caption",), "vqa": ("question", "answer"), "text_qa": ("question", "answer"),
        "referring": ("expression", "x1", "y1", "x2", "y2", "width", "height"),
        "detection": ("objects", "width", "height")}
    assert set(NATIVE_TARGET_KINDS) == set(TASK_COLUMNS)
    assert {k for k in NATIVE_TARGET_KINDS.values() if k} <= set(TARGET_KINDS)


# ----------------------------------------------------------------------------- classification
def test_class_name_cleanup_and_templates():
    assert clean_class_name("apartment_building/outdoor") == "apartment building outdoor"
    assert clean_class_name(" AM_General_Hummer_SUV_2000 ") == "AM General Hummer SUV 2000"
    names = ["apartment_building/outdoor", "cat", "dog"]
    flt = f_label_texts("classification", pd.DataFrame({"label": [2, 0, 2]}), names)
    assert flt.texts == ["apartment building outdoor", "cat", "dog"]
    np.testing.assert_array_equal(flt.index, [2, 0, 2])
    raw = f_label_texts("classification", pd.DataFrame({"label": ["cat"]}), names, clean_names=False)
    assert raw.texts[0] == "apartment_building/outdoor"
    two = f_label_texts("classification", pd.DataFrame({"label": ["dog", "cat"]}), names,
                        template=["a photo of a {}.", "{}"])
    assert two.combine == "mean" and two.index.shape == (2, 2)
    assert [two.texts[i] for i in two.index[0]] == ["a photo of a dog.", "dog"]


def test_classification_target_by_name_or_id():
    names = ["cat", "dog", "bird"]
    np.testing.assert_array_equal(native_target("classification", pd.DataFrame({"label": ["bird", "cat"]}), names), [2, 0])
    np.testing.assert_array_equal(native_target("classification", np.array([1, 1, 0]), names), [1, 1, 0])
    np.testing.assert_array_equal(native_target("classification", pd.DataFrame({"label": ["b", "a", "b"]})), [1, 0, 1])


@pytest.mark.parametrize("labels, names, match", [
    (pd.DataFrame({"label": [0, 3]}), ["a", "b", "c"], r"row 1 has class id 3, outside 0..2"),
    (pd.DataFrame({"label": ["cat", "cow"]}), ["cat", "dog"], r"row 1 has unknown class 'cow'"),
    (pd.DataFrame({"label": ["cat", None]}), None, r"row 1 is missing"),
    (pd.DataFrame({"class": ["cat"]}), None, r"needs column\(s\) \['label'\]"),
    (pd.DataFrame({"label": ["cat"]}), ["cat", "cat"], r"class_names: 'cat' appears twice"),
])
def test_bad_classification_labels(labels, names, match):
    with pytest.raises(InputError, match=match):
        f_label_texts("classification", labels, names)


def test_bad_template():
    with pytest.raises(InputError, match="template: expected exactly one"):
        f_label_texts("classification", pd.DataFrame({"label": ["a", "b"]}), template="a photo")


# ----------------------------------------------------------------------------- multilabel
def test_multilabel_cells_and_mean_rule():
    labels = pd.DataFrame({"labels": ["cat|dog", ["dog"], '["bird", "cat"]', "dog|dog"]})
    flt = f_label_texts("multilabel", labels)
    assert flt.texts == ["bird", "cat", "dog"] and flt.combine == "mean"
    target = native_target("multilabel", labels)
    np.testing.assert_array_equal(target, [[0, 1, 1], [0, 0, 1], [1, 1, 0], [0, 0, 1]])
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    np.testing.assert_allclose(flt.expand(emb), [[1.0, 1.5], [2.0, 2.0], [0.5, 0.5], [2.0, 2.0]])


@pytest.mark.parametrize("cell, names, match", [
    ("", None, r"row 0 has no positive class"),
    ("cat|cow", ["cat", "dog"], r"unknown class 'cow'"),
    ([5], ["cat", "dog"], r"class id 5, outside 0..1"),
    (3.5, None, r"expected a list"),
])
def test_bad_multilabel_labels(cell, names, match):
    with pytest.raises(InputError, match=match):
        f_label_texts("multilabel", pd.DataFrame({"labels": [cell]}), names)


# ----------------------------------------------------------------------------- regression
def test_regression_verbalised_and_native():
    labels = pd.DataFrame({"target_age": [31.24, 40.0, 31.2], "target_height_m": [1.8, 1.75, 1.8]})
    flt = f_label_texts("regression", labels)
    assert flt.texts == ["age 31.2, height m 1.8", "age 40, height m 1.75"]
    np.testing.assert_array_equal(flt.index, [0, 1, 0])   # 31.24 and 31.2 round to one text
    np.testing.assert_array_equal(native_target("regression", labels), labels.to_numpy())
    assert f_label_texts("regression", pd.DataFrame({"target": [2.5]})).texts == ["value 2.5"]
    with pytest.raises(InputError, match=r"labels\['target'\]: row 1 is .*expected a finite number"):
        native_target("regression", pd.DataFrame({"target": [1.0, np.nan]}))
    with pytest.raises(InputError, match="needs column"):
        native_target("regression", pd.DataFrame({"y": [1.0]}))


# ----------------------------------------------------------------------------- captioning
def test_captioning_layouts_and_errors():
    labels = pd.DataFrame({"image": ["a", "b", "a"], "caption": ["a dog", "a cat", "a  brown dog "]})
    pairs = f_label_texts("captioning", labels)
    assert pairs.texts == ["a dog", "a cat", "a brown dog"] and pairs.n_samples == 3
    per_image = f_label_texts("captioning", labels, layout="per_image")
    np.testing.assert_array_equal(per_image.index, [[0, 2], [1, -1]])
    np.testing.assert_array_equal(per_image.rows, [0, 1])
    with pytest.raises(InputError, match=r"caption'\]: row 1 is missing or blank"):
        f_label_texts("captioning", pd.DataFrame({"caption": ["x", "  "]}))
    with pytest.raises(InputError, match="groups captions by column 'image', which is missing"):
        f_label_texts("captioning", pd.DataFrame({"caption": ["x"]}), layout="per_image")
    with pytest.raises(InputError, match="layout: expected one of"):
        f_label_texts("captioning", labels, layout="mean")
    with pytest.raises(InputError, match="no native target"):
        native_target("captioning", labels)


# ----------------------------------------------------------------------------- vqa / text qa
def test_vqa_modes_and_target():
    labels = pd.DataFrame({"question": ["what is it?", "is it red?"], "answer": ["a bag", "yes"]})
    assert f_label_texts("vqa", labels).texts == ["question: what is it? answer: a bag", "question: is it red? answer: yes"]
    vocab = f_label_texts("vqa", labels, mode="answer")
    assert vocab.texts == ["a bag", "yes"]
    np.testing.assert_array_equal(native_target("vqa", labels), [0, 1])
    np.testing.assert_array_equal(native_target("vqa", labels, ["no", "yes", "a bag"]), [2, 1])
    with pytest.raises(InputError, match=r"answer'\]: row 1 is missing"):
        f_label_texts("vqa", pd.DataFrame({"question": ["q1", "q2"], "answer": ["a", None]}))
    with pytest.raises(InputError, match="not in class_names"):
        native_target("vqa", labels, ["no", "yes"])
    with pytest.raises(InputError, match="needs column"):
        f_label_texts("vqa", pd.DataFrame({"question": ["q"]}))


def test_text_qa_context_optional():
    labels = pd.DataFrame({"question": ["who?", "when?"], "answer": ["Twain", "1876"], "context": ["Twain wrote it.", None]})
    flt = f_label_texts("text_qa", labels)
    assert flt.texts == ["question: who? context: Twain wrote it. answer: Twain", "question: when? answer: 1876"]
    assert f_label_texts("text_qa", labels, with_context=False).texts[0] == "question: who? answer: Twain"
    with pytest.raises(InputError, match=r"answer'\]: row 0 is missing or blank"):
        f_label_texts("text_qa", pd.DataFrame({"question": ["who?"], "answer": [""]}))
    with pytest.raises(InputError, match="free text"):
        native_target("text_qa", labels)


# ----------------------------------------------------------------------------- referring / detection
REFER = dict(expression=["the left bag"], x1=[10], y1=[0], x2=[30], y2=[50], width=[100], height=[50])


def test_referring_box_text_and_target():
    flt = f_label_texts("referring", pd.DataFrame(REFER))
    assert flt.texts == ["the left bag at [0.10, 0.00, 0.30, 1.00]"]
    np.testing.assert_allclose(native_target("referring", pd.DataFrame(REFER)), [[0.1, 0.0, 0.3, 1.0]])


@pytest.mark.parametrize("change, match", [
    ({"x2": [5]}, r"needs x2 > x1 and y2 > y1"),
    ({"y2": [60]}, r"outside the 100 x 50 image"),
    ({"width": [0]}, r"labels\['width'\]: row 0 is 0; expected a positive image size"),
    ({"x1": [None]}, r"labels\['x1'\]: row 0 .*expected a finite number"),
    ({"expression": [""]}, r"expression'\]: row 0 is missing or blank"),
])
def test_bad_referring_labels(change, match):
    with pytest.raises(InputError, match=match):
        f_label_texts("referring", pd.DataFrame({**REFER, **change}))


def test_detection_reduction_and_presence_target():
    labels = pd.DataFrame({"objects": ['[[0, 0, 50, 50, "bag"], [50, 0, 100, 100, "shoe_left"]]', [], [[0, 0, 10, 10, 1]]],
                           "width": [100, 100, 100], "height": [100, 100, 100]})
    flt = f_label_texts("detection", labels, ["bag", "shoe_left"])
    assert flt.texts == ["bag at [0.00, 0.00, 0.50, 0.50]", "shoe left at [0.50, 0.00, 1.00, 1.00]", "no objects",
                         "shoe left at [0.00, 0.00, 0.10, 0.10]"]
    np.testing.assert_array_equal(flt.index, [[0, 1], [2, -1], [3, -1]])
    np.testing.assert_array_equal(native_target("detection", labels, ["bag", "shoe_left"]), [[1, 1], [0, 0], [0, 1]])
    plain = f_label_texts("detection", labels, ["bag", "shoe_left"], with_boxes=False)
    assert plain.texts == ["bag", "shoe left", "no objects"]


@pytest.mark.parametrize("objects, names, match", [
    ('[[0, 0, 10]]', None, r"object 0: expected \[x1, y1, x2, y2, class\]"),
    ('[[20, 0, 10, 10, "bag"]]', None, r"needs x2 > x1"),
    ('[[0, 0, 10, 10, 0]]', None, r"class id 0 needs class_names"),
    ('[[0, 0, 10, 10, "hat"]]', ["bag"], r"unknown class 'hat'"),
    ('[[0, 0, "a", 10, "bag"]]', None, r"is not four numbers"),
    ('[[0, 0, 10', None, r"not valid JSON"),
])
def test_bad_detection_labels(objects, names, match):
    with pytest.raises(InputError, match=match):
        f_label_texts("detection", pd.DataFrame({"objects": [objects], "width": [50], "height": [50]}), names)


# ----------------------------------------------------------------------------- generic
def test_unknown_task_and_option():
    with pytest.raises(InputError, match="task: expected one of"):
        f_label_texts("segmentation", pd.DataFrame({"label": [1]}))
    with pytest.raises(InputError, match=r"options: \['layout'\] not accepted for task 'vqa'"):
        f_label_texts("vqa", pd.DataFrame({"question": ["q"], "answer": ["a"]}), layout="pairs")
    with pytest.raises(InputError, match="labels: expected a pandas DataFrame"):
        f_label_texts("vqa", [["q", "a"]])


def test_inputs_are_not_modified():
    labels = pd.DataFrame({"labels": ["a|b", "b"]})
    before = labels.copy()
    f_label_texts("multilabel", labels)
    native_target("multilabel", labels)
    pd.testing.assert_frame_equal(labels, before)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=4), min_size=1, max_size=8), st.integers(1, 4))
def test_expand_is_the_mean_of_each_samples_texts(groups, width):
    from emms.flabels.kinds._common import padded_index

    rng = np.random.default_rng(len(groups))
    emb = rng.normal(size=(6, width)).astype(np.float32)
    flt = FLabelTexts(texts=[str(i) for i in range(6)], index=padded_index(groups), combine="mean")
    out = flt.expand(emb)
    assert out.dtype == np.float32 and out.shape == (len(groups), width)
    for row, group in enumerate(groups):
        np.testing.assert_allclose(out[row], emb[group].mean(axis=0), rtol=1e-5, atol=1e-6)
