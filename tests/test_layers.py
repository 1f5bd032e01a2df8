"""Layer-wise features (issue 22): one forward pass for many layers, per-layer cache, pooling, choices.

Models are real: packaged backbones with their offline weights, the packaged MiniLM, and tiny
Hugging Face models built here from a config (seeded) and saved with ``save_pretrained``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import emms
from _tiny_models import minilm_dir, save_tiny_bert, save_tiny_vit
from emms.data import load_dataset
from emms.errors import EmmsWarning, InputError
from emms.compute.extract import SOURCE_PROBS, extract_features, extract_layer_features, layer_key
from emms.models import load_extractor, parse_spec
from emms.models.layers import LAYER_SEPARATOR, parse_layers
from emms.compute.store import Store

DIGITS = (load_digits().images[:20] * 16).clip(0, 255).astype(np.uint8)  # (20, 8, 8) gray uint8
TEXTS = ["a dog runs in the park", "stock markets fell sharply today", "the puppy plays with a ball",
         "an airplane takes off", "hi"]




class LayerCounter:
    """Wraps a real layered extractor; records the layer lists and rows of its ``extract_layers`` calls."""

    def __init__(self, inner, fail_after: int | None = None):
        self.inner, self.calls, self.fail_after = inner, [], fail_after
        self.identity, self.modality, self.layer_names = inner.identity, inner.modality, inner.layer_names

    def extract(self, inputs, batch_size=64, progress=None):
        return self.extract_layers(inputs, [-1], batch_size, progress)[0]

    def extract_layers(self, inputs, layers, batch_size=64, progress=None):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("killed")
        self.calls.append((tuple(layers), len(inputs)))
        return self.inner.extract_layers(inputs, layers, batch_size, progress)


def _forward_count(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


# one pass, all layers ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mnv2_imagenet", "vgg16bn_craft", "ocrvgg_easyocr", "onet_mtcnn"])
def test_builtin_all_layers_in_one_pass_equal_single_layer_extractions(name):
    extractor = load_extractor(f"builtin:{name}?image_size=32")
    n = len(extractor.layer_names)
    assert n >= 5 and extractor.layer_names[-1] == "output"
    calls = _forward_count(extractor.module)
    together = extractor.extract_layers(DIGITS, range(n), batch_size=8)
    assert calls[0] == 3  # 20 inputs in batches of 8: one forward pass per batch for every layer
    assert np.array_equal(together[-1], extractor.extract(DIGITS, batch_size=8))
    widths = [f.shape[1] for f in together]
    assert widths[-1] == extractor.spec.feature_dim and len(set(widths)) > 1
    for k in range(n):
        single = load_extractor(f"builtin:{name}?image_size=32&layer={k}")
        assert single.layer_names == extractor.layer_names[:k + 1]
        assert np.array_equal(single.extract(DIGITS, batch_size=8), together[k])
        assert (k == n - 1) == (single.identity == extractor.identity)  # the last layer is the model's own feature
    assert not np.allclose(together[0][:, :8], together[1][:, :8])


def test_builtin_layers_with_source_probs_from_the_same_pass():
    extractor = load_extractor("builtin:onet_mtcnn")
    features, probs = extractor.extract_with_source_probs(DIGITS, batch_size=8)
    calls = _forward_count(extractor.module)
    first, last, layer_probs = extractor.extract_layers_with_source_probs(DIGITS, [0, -1], batch_size=8)
    assert calls[0] == 3
    assert np.array_equal(last, features) and np.array_equal(layer_probs, probs) and first.shape == (20, 32)
    fixed = load_extractor("builtin:onet_mtcnn?layer=1")
    fixed_features, fixed_probs = fixed.extract_with_source_probs(DIGITS, batch_size=8)
    assert fixed_features.shape == (20, 64) and np.array_equal(fixed_probs, probs)  # the head reads the model's output


def test_timm_feature_info_stages_in_one_pass_equal_single_layer_extractions():
    pytest.importorskip("timm")  # runs in .venv-timm: .venv-timm/bin/python -m pytest tests/test_layers.py -k timm
    extractor = load_extractor("timm:resnet18?pretrained=false&image_size=32")
    assert extractor.layer_names == ("act1", "layer1", "layer2", "layer3", "layer4", "output")
    calls = _forward_count(extractor.module)
    together = extractor.extract_layers(DIGITS, range(6), batch_size=8)
    assert calls[0] == 3 and [f.shape[1] for f in together] == [64, 64, 128, 256, 512, 512]
    assert np.array_equal(together[-1], extractor.extract(DIGITS, batch_size=8))
    np.testing.assert_allclose(together[4], together[5], rtol=1e-5, atol=1e-6)  # resnet's output: layer4, averaged
    for k in range(5):
        single = load_extractor(f"timm:resnet18?pretrained=false&image_size=32&layer={k}")
        assert f"|layer={extractor.layer_names[k]}|" in single.identity
        assert np.array_equal(single.extract(DIGITS, batch_size=8), together[k])


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), num_hidden_layers=3)


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    return save_tiny_vit(tmp_path_factory.mktemp("tiny_vit"))


@pytest.mark.parametrize("pooling", ["mean", "cls", "mean_nospecial"])
def test_hf_text_hidden_states_in_one_pass_equal_single_layer_extractions(tiny_bert, pooling):
    extractor = load_extractor(f"hf:{tiny_bert}?pooling={pooling}")
    assert extractor.layer_names == tuple(f"hidden_states.{k}" for k in range(4))
    calls = _forward_count(extractor.module)
    together = extractor.extract_layers(TEXTS, range(4), batch_size=2)
    assert calls[0] == 3
    assert np.array_equal(together[-1], extractor.extract(TEXTS, batch_size=2))
    for k in range(4):
        single = load_extractor(f"hf:{tiny_bert}?layer={k}&pooling={pooling}")
        assert len(single.layer_names) == k + 1
        np.testing.assert_array_equal(single.extract(TEXTS, batch_size=2), together[k])


def test_hf_vision_hidden_states_pool_with_mean_when_the_model_pools_itself(tiny_vit):
    extractor = load_extractor(f"hf:{tiny_vit}")
    assert extractor.pooling == "pooler" and extractor.layer_pooling == "mean"
    together = extractor.extract_layers(DIGITS[:6], [0, 1, 2], batch_size=4)
    for k in range(3):
        np.testing.assert_array_equal(load_extractor(f"hf:{tiny_vit}", layer=k).extract(DIGITS[:6], batch_size=4),
                                      together[k])
    with pytest.raises(InputError, match="mean_nospecial"):
        load_extractor(f"hf:{tiny_vit}?pooling=mean_nospecial")


# pooling -----------------------------------------------------------------------------------------

def test_mean_nospecial_leaves_out_cls_sep_and_padding(tiny_bert):
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_bert)
    model = transformers.AutoModel.from_pretrained(tiny_bert).eval()
    tokens = tokenizer(TEXTS, padding=True, return_tensors="pt", return_special_tokens_mask=True)
    with torch.no_grad():
        hidden = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                       token_type_ids=tokens["token_type_ids"], output_hidden_states=True).hidden_states
    keep = (tokens["attention_mask"].bool() & ~tokens["special_tokens_mask"].bool()).unsqueeze(-1).float()
    expected = [((h * keep).sum(1) / keep.sum(1)).numpy() for h in hidden]
    extractor = load_extractor(f"hf:{tiny_bert}?pooling=mean_nospecial")
    got = extractor.extract_layers(TEXTS, range(4), batch_size=5)
    for k in range(4):
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-6)
    alone = np.concatenate([extractor.extract([t]) for t in TEXTS])
    np.testing.assert_allclose(alone, got[-1], rtol=1e-5, atol=1e-6)  # independent of the batch's padding
    mean = load_extractor(f"hf:{tiny_bert}?pooling=mean").extract(TEXTS)
    cls = load_extractor(f"hf:{tiny_bert}?pooling=cls").extract(TEXTS)
    np.testing.assert_allclose(cls, hidden[-1][:, 0].numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(mean, got[-1], atol=1e-3) and not np.allclose(cls, got[-1], atol=1e-3)
    identities = {load_extractor(f"hf:{tiny_bert}?pooling={p}").identity for p in ("mean", "cls", "mean_nospecial")}
    assert len(identities) == 3


def test_sentence_transformers_layers_and_pooling():
    directory = minilm_dir()
    st = load_extractor(f"st:{directory}")
    hf = load_extractor(f"hf:{directory}")
    assert st.layer_names == hf.layer_names and len(st.layer_names) == 7
    layers = st.extract_layers(TEXTS, range(7), batch_size=3)
    np.testing.assert_allclose(layers[-1], st.extract(TEXTS), atol=2e-6)  # the last layer is encode()
    hf_layers = hf.extract_layers(TEXTS, [1, 3], batch_size=3)
    for got, raw in zip((layers[1], layers[3]), hf_layers):  # the model's own mean pooling, then its normalisation
        np.testing.assert_allclose(got, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=2e-6)
    np.testing.assert_array_equal(load_extractor(f"st:{directory}?layer=3").extract(TEXTS, batch_size=3), layers[3])
    nospecial = load_extractor(f"st:{directory}?pooling=mean_nospecial")
    raw = load_extractor(f"hf:{directory}?pooling=mean_nospecial").extract(TEXTS)
    np.testing.assert_allclose(nospecial.extract(TEXTS), raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=2e-6)
    assert nospecial.identity != st.identity
    with pytest.raises(InputError, match="pooling"):
        load_extractor(f"st:{directory}?pooling=pooler")


# spec options and layer choices ----------------------------------------------------------------------

def test_spec_options_layer_and_pooling():
    spec = parse_spec("hf:some/model?layer=-2&pooling=mean_nospecial")
    assert spec.options == {"layer": -2, "pooling": "mean_nospecial"}
    assert parse_spec("builtin:onet_mtcnn?layer=2").options == {"layer": 2}
    with pytest.raises(InputError, match="option 'layer' expects an integer"):
        parse_spec("hf:x?layer=last")
    with pytest.raises(InputError, match="option 'layer' is not known for file"):
        parse_spec("file:x.npy?layer=1")
    with pytest.raises(InputError, match="onet_mtcnn has 5 layer"):
        load_extractor("builtin:onet_mtcnn?layer=-6")
    with pytest.raises(InputError, match="pooling choices are for token models"):
        load_extractor("builtin:onet_mtcnn?pooling=cls")
    assert load_extractor("builtin:onet_mtcnn?layer=-2").layer_names[-1] == "features.prelu4"


@pytest.mark.parametrize("value, expected", [("last", "last"), (" BEST ", "best"), ("mean", "mean"), ("all", "all"),
                                             ("3", (3,)), ("0,-1,0", (0, -1)), (-2, (-2,)), ([1, 2], (1, 2)),
                                             (None, "best")])
def test_parse_layers(value, expected):
    assert parse_layers(value) == expected


@pytest.mark.parametrize("value", ["", "top", "1,a", "1.5", True, [], [1.0], object()])
def test_parse_layers_rejects_bad_values(value):
    with pytest.raises(InputError, match="^layers: "):
        parse_layers(value)


# the per-layer cache ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def images():
    return load_dataset("builtin:fashion-mnist", max_samples=40, seed=0)


def test_more_layers_later_reuse_the_cached_ones(tmp_path, images):
    store = Store(tmp_path)
    first = LayerCounter(load_extractor("builtin:onet_mtcnn"))
    got = extract_layer_features(first, images, [0, 2], store, batch_size=8)
    assert list(got) == ["features.prelu1", "features.prelu3"] and first.calls == [((0, 2), 40)]
    again = LayerCounter(load_extractor("builtin:onet_mtcnn"))
    more = extract_layer_features(again, images, [-1, 0, 2, 3], store, batch_size=8)
    assert again.calls == [((4, 3), 40)]  # only the two layers not in the store, together
    assert np.array_equal(more["features.prelu1"], got["features.prelu1"])
    assert np.array_equal(more["output"], extract_features(load_extractor("builtin:onet_mtcnn"), images, batch_size=8))
    last_missing = LayerCounter(load_extractor("builtin:onet_mtcnn"))
    everything = extract_layer_features(last_missing, images, range(5), store, batch_size=8)
    assert last_missing.calls == [((1,), 40)] and len(everything) == 5
    cached = LayerCounter(load_extractor("builtin:onet_mtcnn"))
    assert all(np.array_equal(a, b) for a, b in zip(
        extract_layer_features(cached, images, range(5), store, batch_size=8).values(), everything.values()))
    assert cached.calls == []
    kinds = {(e["kind"], e["meta"].get("layer")) for e in store.entries()}
    assert kinds == {("layer-features", name) for name in cached.layer_names}
    fresh = extract_layer_features(load_extractor("builtin:onet_mtcnn"), images, range(5), batch_size=8)
    for name in fresh:
        assert np.array_equal(fresh[name], everything[name])


def test_layer_entries_and_source_probs_share_one_pass(tmp_path, images):
    store = Store(tmp_path)
    extractor = load_extractor("builtin:onet_mtcnn")
    calls = _forward_count(extractor.module)
    got = extract_layer_features(extractor, images, [1, -1], store, batch_size=8, with_source_probs=True)
    assert calls[0] == 5 and list(got) == ["features.prelu2", "output", SOURCE_PROBS]
    probs = extractor.source_probs(images.inputs, batch_size=8)
    assert np.array_equal(got[SOURCE_PROBS], probs)
    assert store.get(layer_key(extractor, images, SOURCE_PROBS)) is not None
    with pytest.raises(InputError, match="no source head"):
        extract_layer_features(load_extractor("builtin:ocrvgg_easyocr"), images, [0], store, with_source_probs=True)


def test_interrupted_layer_extraction_resumes_from_its_finished_chunks(tmp_path, images):
    store = Store(tmp_path)
    dying = LayerCounter(load_extractor("builtin:onet_mtcnn"), fail_after=2)
    with pytest.raises(RuntimeError, match="killed"):
        extract_layer_features(dying, images, [0, 3], store, batch_size=4, chunk_rows=12)
    assert [rows for _, rows in dying.calls] == [12, 12]
    assert {e["kind"] for e in store.entries()} == {"partial"}
    resumed = LayerCounter(load_extractor("builtin:onet_mtcnn"))
    got = extract_layer_features(resumed, images, [0, 3], store, batch_size=4, chunk_rows=12)
    assert [rows for _, rows in resumed.calls] == [12, 4]  # rows 24..40 only
    reference = extract_layer_features(load_extractor("builtin:onet_mtcnn"), images, [0, 3], batch_size=4)
    for name in reference:
        np.testing.assert_array_equal(got[name], reference[name])
    assert {e["kind"] for e in store.entries()} == {"layer-features"}


def test_corrupt_layer_entry_is_recomputed_alone(tmp_path, images):
    store = Store(tmp_path)
    extractor = load_extractor("builtin:onet_mtcnn")
    first = extract_layer_features(extractor, images, [0, 1], store, batch_size=8)
    data_file = store.entry_path(layer_key(extractor, images, "features.prelu2")) / "data.npy"
    data_file.write_bytes(data_file.read_bytes()[:-16])
    counter = LayerCounter(load_extractor("builtin:onet_mtcnn"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = extract_layer_features(counter, images, [0, 1], store, batch_size=8)
    assert any(issubclass(w.category, EmmsWarning) and "corrupt" in str(w.message) for w in caught)
    assert counter.calls == [((1,), 40)]
    assert np.array_equal(again["features.prelu2"], first["features.prelu2"])


def test_extractor_without_layers_has_one_output_layer(tmp_path, images):
    feats = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    np.save(tmp_path / "f.npy", feats)
    extractor = load_extractor(f"file:{tmp_path / 'f.npy'}")
    got = extract_layer_features(extractor, images, [-1], Store(tmp_path / "cache"))
    assert list(got) == ["output"] and np.array_equal(got["output"], feats)
    with pytest.raises(InputError, match="has 1 layer"):
        extract_layer_features(extractor, images, [1])


# rank(layers=...) ------------------------------------------------------------------------------------

MODELS = ["builtin:onet_mtcnn", "builtin:ocrvgg_easyocr?image_size=32"]


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    cache = tmp_path_factory.mktemp("rank_cache")
    return {layers: emms.rank("builtin:digits", MODELS, metrics=["logme", "leep"], max_samples=150, cache=cache,
                              layers=layers, resamples=2)
            for layers in ("last", "all", "best", "mean", "1")}


def test_rank_best_keeps_each_models_best_layer_and_says_which(ranked):
    everything = ranked["all"].table
    assert set(everything["model"]) == {f"{m}{LAYER_SEPARATOR}{k}" for m in MODELS for k in range(5)}
    best = ranked["best"]
    chosen = {(c["model"], c["metric"]): c["layer"] for c in best.meta["layer_chosen"]}
    for row in best.table[best.table["metric"] == "logme"].itertuples():
        per_layer = everything[everything["model"].str.startswith(row.model + LAYER_SEPARATOR)
                               & (everything["metric"] == "logme")]
        top = per_layer.loc[per_layer["score"].idxmax()]
        assert row.score == top.score and top.model.endswith(f"{LAYER_SEPARATOR}{chosen[(row.model, 'logme')]}")
    assert len(best.meta["layer_scores"]) == 5 + 5 + 5  # logme on 2 x 5 layers, LEEP on O-Net's 5
    assert chosen[("builtin:onet_mtcnn", "leep")] == 4  # LEEP reads the source head: a tie, kept at the output
    assert set(best.resampled["model"]) == set(MODELS)
    last = ranked["last"].table.set_index(["model", "metric"])["score"]
    output = everything.set_index(["model", "metric"])["score"]
    assert last[(MODELS[0], "logme")] == output[(MODELS[0] + f"{LAYER_SEPARATOR}4", "logme")]


def test_rank_mean_and_one_index(ranked):
    mean = ranked["mean"].table
    everything = ranked["all"].table
    for model in MODELS:  # CNN stages differ in width: the mean of the per-layer scores
        per_layer = everything[everything["model"].str.startswith(model + LAYER_SEPARATOR)
                               & (everything["metric"] == "logme")]["score"]
        got = mean[(mean["model"] == model) & (mean["metric"] == "logme")]["score"].item()
        assert got == pytest.approx(per_layer.mean(), rel=1e-12)
    one = ranked["1"].table.set_index(["model", "metric"])["score"]
    output = everything.set_index(["model", "metric"])["score"]
    assert one[(MODELS[1], "logme")] == output[(MODELS[1] + f"{LAYER_SEPARATOR}1", "logme")]


def test_rank_mean_of_same_width_hidden_states_scores_their_average(tiny_bert, tmp_path):
    result = emms.rank("builtin:text-topics", [f"hf:{tiny_bert}"], metrics=["logme"], max_samples=60,
                       cache=tmp_path, layers="mean", resamples=0)
    data = load_dataset("builtin:text-topics", max_samples=60, seed=0)
    layers = load_extractor(f"hf:{tiny_bert}").extract_layers(data.inputs, range(4))
    average = (np.sum([f.astype(np.float64) for f in layers], axis=0) / 4).astype(np.float32)
    expected = emms.score(average, data.labels["label"].to_numpy(), "logme")
    assert result.table["score"].item() == pytest.approx(expected, rel=1e-9)
    assert result.meta["layer_chosen"] == [{"model": f"hf:{tiny_bert}", "metric": "logme", "layer": "mean"}]


def test_rank_layer_errors():
    with pytest.raises(InputError, match="^layers: "):
        emms.rank("builtin:digits", MODELS, metrics=["logme"], layers="deepest")
    with pytest.raises(InputError, match="ground truth compares models"):
        emms.rank("builtin:digits", MODELS, metrics=["logme"], layers="all", truth={m: 1.0 for m in MODELS})
    with pytest.raises(InputError, match="onet_mtcnn has 5 layer"):
        emms.rank("builtin:digits", MODELS, metrics=["logme"], layers="7", max_samples=30, resamples=0)


def test_cli_rank_layers(tmp_path):
    from typer.testing import CliRunner

    from emms.cli import app

    runner = CliRunner()
    base = ["rank", "--data", "builtin:digits", "--models", ",".join(MODELS), "--metrics", "logme",
            "--max-samples", "60", "--cache", str(tmp_path)]
    good = runner.invoke(app, [*base, "--layers", "best"])
    assert good.exit_code == 0, good.output
    assert "best layer" in good.stdout
    bad = runner.invoke(app, [*base, "--layers", "top"])
    assert bad.exit_code == 2 and "layers:" in bad.stderr and "Traceback" not in bad.output
    spec = runner.invoke(app, [*base[:4], "builtin:onet_mtcnn?layer=9", *base[5:]])
    assert spec.exit_code == 2 and "has 5 layer" in spec.stderr


@pytest.mark.parametrize("layers", ["best", "all"])
def test_the_size_prior_scores_every_layer_entry_with_its_models_count(layers, tmp_path):
    ranking = emms.rank("builtin:digits", ["builtin:onet_mtcnn"], task="classification", metrics=["params"],
                        max_samples=40, layers=layers, resamples=0, cache=tmp_path)
    count = ranking.meta["n_params"]["builtin:onet_mtcnn"]
    assert count > 1e5 and (ranking.table["score"] == count).all() and len(ranking.table) >= 1


def test_source_probabilities_are_added_to_layers_cached_without_them(tmp_path):
    data = load_dataset("builtin:digits", max_samples=20)
    extractor, store = load_extractor("builtin:onet_mtcnn"), Store(tmp_path)
    layers = extract_layer_features(extractor, data, [-1, -2], store, 8)
    both = extract_layer_features(extractor, data, [-1, -2], store, 8, with_source_probs=True)
    np.testing.assert_allclose(both[SOURCE_PROBS], extractor.source_probs(data.inputs, 8), rtol=1e-5, atol=1e-6)
    assert all(np.array_equal(both[name], features) for name, features in layers.items())
