"""Text encoders and F-label embedding: real forward passes, no network.

Hugging Face code paths run on tiny models built here from a config (BERT, GPT-2, CLIP) and saved
with save_pretrained; the offline set runs the packaged models.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from emms.flabels import (ENCODER_SETS, HFTextEncoder, OnnxTextEncoder, TableEncoder, embed_f_labels, embed_texts,
                            encoder_names, load_encoder, load_f_labels, save_f_labels)
from emms.flabels.encoders.onnx import packaged_paraphrase_onnx
from emms.flabels.encoders.sentence import packaged_minilm_path
from emms.errors import InputError, ResourceError
from emms.compute.store import Store

SHORT, LONG = "a dog", "a very long sentence about aircraft that flew over the sea at dawn"


# ----------------------------------------------------------------------------- tiny HF models
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import (BertConfig, BertModel, BertTokenizerFast, CLIPConfig, CLIPModel, GPT2Config,
                              GPT2Model, GPT2TokenizerFast)

    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    bert_tok = BertTokenizerFast(tokenizer_file=os.path.join(packaged_minilm_path(), "tokenizer.json"))

    bert = BertModel(BertConfig(vocab_size=bert_tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    bert.save_pretrained(root / "bert")
    bert_tok.save_pretrained(root / "bert")

    bpe = ByteLevelBPETokenizer()
    corpus = [SHORT, LONG, "a cat sat on the mat", "question: what is it? answer: a shirt"] * 5
    bpe.train_from_iterator(corpus, vocab_size=300, special_tokens=["<|endoftext|>"])
    gpt_tok = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                unk_token="<|endoftext|>")
    gpt = GPT2Model(GPT2Config(vocab_size=len(gpt_tok), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                               eos_token_id=gpt_tok.eos_token_id, bos_token_id=gpt_tok.eos_token_id))
    gpt.save_pretrained(root / "gpt2")
    gpt_tok.save_pretrained(root / "gpt2")

    # CLIP: the BERT tokenizer appends [SEP]; the text tower pools at the first eos = [SEP].
    clip = CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=bert_tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=40, eos_token_id=bert_tok.sep_token_id,
                         pad_token_id=bert_tok.pad_token_id, bos_token_id=bert_tok.cls_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16),
        projection_dim=24))
    clip.save_pretrained(root / "clip")
    bert_tok.save_pretrained(root / "clip")
    return {"bert": (root / "bert", bert.eval()), "gpt2": (root / "gpt2", gpt.eval()), "clip": (root / "clip", clip.eval()),
            "tok": bert_tok}


@pytest.mark.parametrize("kind", ["bert", "gpt2", "clip"])
def test_hf_embedding_does_not_depend_on_batch_padding(tiny_models, kind):
    path, _ = tiny_models[kind]
    enc = load_encoder(f"hf:{path}")
    assert enc.kind == {"bert": "mean", "gpt2": "gpt2", "clip": "clip"}[kind]
    alone = enc.encode([SHORT])
    padded = enc.encode([SHORT, LONG], batch_size=2)
    assert padded.shape == (2, enc.dim) and padded.dtype == np.float32
    np.testing.assert_allclose(padded[0], alone[0], atol=1e-5)
    assert not np.allclose(padded[0], padded[1], atol=1e-3)


def test_bert_masked_mean_matches_manual_and_differs_from_unmasked(tiny_models):
    import torch

    path, model = tiny_models["bert"]
    enc = HFTextEncoder(str(path))
    tokens = tiny_models["tok"]([SHORT, LONG], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**tokens).last_hidden_state.numpy()
    mask = tokens["attention_mask"].numpy()
    n_real = mask[0].sum()
    expected = hidden[0, :n_real].mean(axis=0)
    got = enc.encode([SHORT, LONG])[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # The official code's mean over all positions (padding included) gives a different vector.
    assert not np.allclose(got, hidden[0].mean(axis=0), atol=1e-3)


def test_gpt2_pads_with_eos(tiny_models):
    path, _ = tiny_models["gpt2"]
    enc = load_encoder(f"hf-gpt2:{path}")
    assert enc.tokenizer.pad_token == enc.tokenizer.eos_token == "<|endoftext|>"
    assert enc.dim == 32


def test_clip_text_tower_equals_get_text_features(tiny_models):
    import torch

    path, model = tiny_models["clip"]
    enc = load_encoder(f"hf:{path}")
    assert enc.dim == 24
    tokens = tiny_models["tok"]([SHORT, LONG], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    expected = (out if isinstance(out, torch.Tensor) else out.pooler_output).numpy()
    np.testing.assert_allclose(enc.encode([SHORT, LONG]), expected, atol=1e-5)


def test_identity_is_content_addressed(tiny_models, tmp_path):
    import shutil

    path, _ = tiny_models["bert"]
    a = load_encoder(f"hf:{path}").identity
    copy = tmp_path / "bert"
    shutil.copytree(path, copy)
    assert load_encoder(f"hf:{copy}").identity == a          # same weights elsewhere: same identity
    (copy / "config.json").write_text((copy / "config.json").read_text().replace('"hidden_act"', '"hidden_act" ', 1))
    assert load_encoder(f"hf:{copy}").identity != a          # changed file: new identity


# ----------------------------------------------------------------------------- offline set
@pytest.fixture(scope="module")
def onnx_encoder():
    return load_encoder("paraphrase-minilm-l3")


def test_offline_set_has_three_packaged_families():
    assert encoder_names("offline") == list(ENCODER_SETS["offline"]) and len(ENCODER_SETS["offline"]) == 3
    assert encoder_names("offline,e5-small,st:x") == ["minilm-l6", "paraphrase-minilm-l3", "e5-small", "st:x"]


@pytest.mark.parametrize("name", ["minilm-l6", "paraphrase-minilm-l3", "e5-small"])
def test_offline_encoders_embed_meaningfully(name):
    enc = load_encoder(name)
    emb = enc.encode(["dog", "puppy", "airplane"], batch_size=2)
    assert emb.shape == (3, enc.dim) and enc.dim == 384 and np.all(np.isfinite(emb))
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > unit[0] @ unit[2] + 0.05      # dog is closer to puppy than to airplane


def test_onnx_masked_mean_equals_models_own_pooled_output(onnx_encoder):
    model, tokenizer = packaged_paraphrase_onnx()
    pooled = OnnxTextEncoder(model, tokenizer, output="461")    # the graph's own mean-pooling output
    texts = [SHORT, LONG, "cat"]
    np.testing.assert_allclose(onnx_encoder.encode(texts), pooled.encode(texts), atol=1e-5)
    np.testing.assert_allclose(onnx_encoder.encode([SHORT])[0], onnx_encoder.encode(texts)[0], atol=1e-5)


def test_progress_reports_every_text(onnx_encoder):
    seen = []
    onnx_encoder.encode(["a", "b", "c", "d", "e"], batch_size=2, progress=seen.append)
    assert seen == [2, 2, 1]


def test_table_encoder(tmp_path):
    path = tmp_path / "table.npz"
    np.savez(path, texts=np.array(["cat", "dog"]), embeddings=np.array([[1.0, 0.0], [0.0, 1.0]]))
    enc = load_encoder(f"table:{path}")
    np.testing.assert_array_equal(enc.encode(["dog", "cat", "dog"]), [[0, 1], [1, 0], [0, 1]])
    with pytest.raises(InputError, match="not in the embedding table.*'bird'"):
        enc.encode(["bird"])
    bad = tmp_path / "bad.npz"
    np.savez(bad, texts=np.array(["cat"]), embeddings=np.ones((2, 2)))
    with pytest.raises(InputError, match="'embeddings' must be numeric of shape"):
        TableEncoder(bad)


# ----------------------------------------------------------------------------- caching
class CountingEncoder:
    """Wraps a real encoder and counts the texts it is asked to encode."""

    def __init__(self, inner):
        self.inner, self.identity, self.calls, self.texts = inner, inner.identity, 0, 0

    @property
    def dim(self):
        return self.inner.dim

    def encode(self, texts, batch_size=64, progress=None):
        self.calls += 1
        self.texts += len(texts)
        return self.inner.encode(texts, batch_size=batch_size, progress=progress)


def test_second_call_hits_the_cache_without_encoding(onnx_encoder, tmp_path):
    labels = pd.DataFrame({"label": ["cat", "dog", "cat", "bird", "dog"]})
    counting = CountingEncoder(onnx_encoder)
    store = Store(tmp_path / "cache")
    first = embed_f_labels("classification", labels, encoders=[counting], store=store)
    assert (counting.calls, counting.texts) == (1, 3)        # 3 distinct classes, each embedded once
    second = embed_f_labels("classification", labels, encoders=[counting], store=store)
    assert (counting.calls, counting.texts) == (1, 3)        # no encoder call at all
    np.testing.assert_array_equal(first.arrays[0], second.arrays[0])
    embed_f_labels("classification", labels, encoders=[counting], store=store, template="a photo of a {}.")
    assert counting.calls == 2                               # different texts: a new key


def test_cache_is_resumable_in_chunks(onnx_encoder, tmp_path):
    counting = CountingEncoder(onnx_encoder)
    texts = [f"text number {i}" for i in range(10)]
    store = Store(tmp_path / "cache")
    full = embed_texts(counting, texts, store=store, chunk_rows=4)
    assert counting.calls == 3
    np.testing.assert_allclose(full, onnx_encoder.encode(texts), atol=1e-6)


# ----------------------------------------------------------------------------- every task kind, end to end
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]

KINDS = {
    "classification": (pd.DataFrame({"label": [0, 9, 9, 5, 1]}), FASHION, {}),
    "multilabel": (pd.DataFrame({"labels": ["Bag|Sandal", "Bag", ["Coat", "Shirt"], "Shirt|Coat"]}), None, {}),
    "regression": (pd.DataFrame({"target": [0.5, 12.25, 0.5, -3.0]}), None, {}),
    "captioning": (pd.DataFrame({"image": [0, 0, 1, 1, 2],
                                 "caption": ["a dark ankle boot", "a black boot on white", "a light shirt",
                                             "a pale long-sleeved shirt", "a bag with a handle"]}), None,
                   {"layout": "per_image"}),
    "vqa": (pd.DataFrame({"question": ["what is shown?", "what is shown?", "is it dark?"],
                          "answer": ["a bag", "a sneaker", "yes"]}), None, {}),
    "text_qa": (pd.DataFrame({"question": ["who wrote it?", "when?"], "answer": ["Mark Twain", "1876"],
                              "context": ["Mark Twain wrote Tom Sawyer.", None]}), None, {}),
    "referring": (pd.DataFrame({"expression": ["the bag on the left", "the boot"], "x1": [0, 30], "y1": [5, 0],
                                "x2": [28, 56], "y2": [33, 28], "width": [56, 56], "height": [56, 56]}), None, {}),
    "detection": (pd.DataFrame({"objects": ['[[0, 0, 28, 28, "Bag"], [28, 0, 56, 28, "Sandal"]]', "[]",
                                            [[0, 0, 10, 10, "Bag"]]],
                                "width": [56, 56, 56], "height": [56, 56, 56]}), None, {}),
}


@pytest.mark.parametrize("task", list(KINDS))
def test_every_task_kind_end_to_end(task, onnx_encoder, tmp_path):
    from emms.flabels import f_label_texts

    labels, names, options = KINDS[task]
    flt = f_label_texts(task, labels, names, **options)
    fl = embed_f_labels(task, labels, names, encoders=[onnx_encoder], **options)
    n = flt.n_samples
    assert fl.task == task and len(fl.arrays) == 1 and fl.arrays[0].shape == (n, 384)
    assert np.all(np.isfinite(fl.arrays[0]))
    text_emb = onnx_encoder.encode(flt.texts)
    for i in range(n):   # each sample's F-label is the (mean) embedding of its own text(s)
        own = flt.index[i][flt.index[i] >= 0] if flt.index.ndim == 2 else [flt.index[i]]
        np.testing.assert_allclose(fl.arrays[0][i], text_emb[own].mean(axis=0), atol=1e-5)
    save_f_labels(tmp_path / "f.npz", fl)
    back = load_f_labels(tmp_path / "f.npz")
    np.testing.assert_array_equal(back.arrays[0], fl.arrays[0])
    np.testing.assert_array_equal(back.rows, fl.rows)


def test_classification_same_class_same_embedding_and_progress(onnx_encoder):
    labels, names, _ = KINDS["classification"]
    seen = []
    fl = embed_f_labels("classification", labels, names, encoders=[onnx_encoder, load_encoder("e5-small")],
                        progress=lambda done, total: seen.append((done, total)))
    assert fl.widths == [384, 384] and seen[-1] == (20, 20)  # all 10 class names x 2 encoders
    np.testing.assert_array_equal(fl.arrays[0][1], fl.arrays[0][2])
    assert not np.allclose(fl.arrays[0][0], fl.arrays[0][1])


def test_captioning_layouts(onnx_encoder):
    labels, _, _ = KINDS["captioning"]
    pairs = embed_f_labels("captioning", labels, encoders=[onnx_encoder])
    per_image = embed_f_labels("captioning", labels, encoders=[onnx_encoder], layout="per_image")
    assert pairs.arrays[0].shape[0] == 5 and per_image.arrays[0].shape[0] == 3
    np.testing.assert_array_equal(per_image.rows, [0, 2, 4])
    np.testing.assert_allclose(per_image.arrays[0][0], pairs.arrays[0][:2].mean(axis=0), atol=1e-6)


# ----------------------------------------------------------------------------- errors
def test_unknown_encoder_and_bad_arguments():
    with pytest.raises(InputError, match="encoder: unknown 'nope'; expected one of"):
        load_encoder("nope")
    with pytest.raises(InputError, match="texts: expected a list of strings"):
        load_encoder("e5-small").encode("just one string")
    with pytest.raises(InputError, match="batch_size: expected a positive integer"):
        load_encoder("e5-small").encode(["a"], batch_size=0)


def test_missing_gpu_is_a_resource_error(tiny_models, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ResourceError, match="no CUDA GPU"):
        HFTextEncoder(str(tiny_models["bert"][0]), device="cuda")


@pytest.mark.parametrize("name", ENCODER_SETS["paper"])
def test_paper_set_offline_gives_one_line_resource_error(name, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    with pytest.raises(ResourceError) as caught:
        load_encoder(name)
    message = str(caught.value)
    assert "\n" not in message and "needs hub access" in message and "HF_HUB_OFFLINE" in message
    assert {"clip-vit-g-14": "laion/CLIP-ViT-g-14-laion2B-s12B-b42K"}.get(name, name) in message
