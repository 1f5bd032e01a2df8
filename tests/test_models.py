"""Feature extractors behind the spec syntax: builtin:, hf:, st:, timm:, file:, modules and callables."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from _tiny_models import minilm_dir, save_tiny_bert, save_tiny_vit
from emms.errors import InputError, ResourceError
from emms.models import BACKBONES, from_callable, from_module, load_extractor, parse_spec
from emms.models.base import EXTRACTOR_VERSION

DIGITS = (load_digits().images[:12] * 16).clip(0, 255).astype(np.uint8)  # (12, 8, 8) gray uint8
TEXTS = ["a dog runs in the park", "stock markets fell sharply today", "the puppy plays with a ball",
         "an airplane takes off"]




# spec parsing ----------------------------------------------------------------------------------

def test_parse_spec_options_are_typed_and_overridable():
    spec = parse_spec("builtin:mnv2_imagenet?image_size=64&pretrained=false", seed=3)
    assert (spec.scheme, spec.target) == ("builtin", "mnv2_imagenet")
    assert spec.options == {"image_size": 64, "pretrained": False, "seed": 3}
    assert parse_spec("builtin:x?image_size=64", image_size=32).options["image_size"] == 32


@pytest.mark.parametrize("spec, match", [
    ("resnet50", "SCHEME:TARGET"),
    ("torchhub:resnet50", "unknown scheme 'torchhub'.*builtin.*hf.*st.*timm.*file"),
    ("hf:", "names no model"),
    ("builtin:mnv2_imagenet?image_size=big", "expects an integer"),
    ("builtin:mnv2_imagenet?pretrained=maybe", "true or false"),
    ("builtin:mnv2_imagenet?layers=3", "known options: image_size, pretrained, seed"),
    ("builtin:mnv2_imagenet?image_size", "key=value"),
])
def test_bad_specs_raise_input_error(spec, match):
    with pytest.raises(InputError, match=match):
        parse_spec(spec)


def test_unknown_builtin_lists_backbones():
    with pytest.raises(InputError, match="onet_mtcnn"):
        load_extractor("builtin:resnet50")


# builtin: --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnv2():
    return load_extractor("builtin:mnv2_imagenet?image_size=32")


def test_builtin_extract_batches_progress_and_dtype(mnv2):
    before = DIGITS.copy()
    done = []
    feats = mnv2.extract(DIGITS, batch_size=5, progress=done.append)
    assert feats.shape == (12, 1280) and feats.dtype == np.float32
    assert done == [5, 5, 2]
    np.testing.assert_array_equal(DIGITS, before)
    np.testing.assert_allclose(mnv2.extract(DIGITS, batch_size=12), feats, rtol=1e-4, atol=1e-5)
    assert mnv2.modality == "image"


def test_builtin_identity_tracks_weights_size_and_init(mnv2):
    assert mnv2.identity == load_extractor("builtin:mnv2_imagenet", image_size=32).identity
    assert "weights=sha256:b0353104" in mnv2.identity  # the torchvision file's published hash prefix
    assert mnv2.identity.endswith(f"v{EXTRACTOR_VERSION}")
    others = {load_extractor("builtin:mnv2_imagenet?image_size=48").identity,
              load_extractor("builtin:mnv2_imagenet?image_size=32&pretrained=false").identity,
              load_extractor("builtin:mnv2_imagenet?image_size=32&pretrained=false&seed=1").identity}
    assert len(others) == 3 and mnv2.identity not in others


def test_fixed_size_backbone_keeps_its_input_size():
    onet = load_extractor("builtin:onet_mtcnn?image_size=64")
    assert onet.image_size == 48 and "size=48" in onet.identity
    assert onet.extract(DIGITS[:3]).shape == (3, 256)


def test_source_probs_one_pass_and_which_backbones_have_them(mnv2):
    feats, probs = mnv2.extract_with_source_probs(DIGITS[:4], batch_size=3)
    assert probs.shape == (4, 1000) and mnv2.source_classes == 1000
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(feats, mnv2.extract(DIGITS[:4]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mnv2.source_probs(DIGITS[:4]), probs, rtol=1e-4, atol=1e-6)
    heads = {name for name, spec in BACKBONES.items() if spec.source_classes}
    assert heads == {"mnv2_imagenet", "mnv2_keras_dogs", "efflite0_imagenet", "efflite1_imagenet",
                     "efflite2_imagenet", "effb0_photo_vs_drawing", "onet_mtcnn"}
    ocr = load_extractor("builtin:ocrvgg_easyocr?image_size=32")
    assert not hasattr(ocr, "source_probs")  # callers test for the method to know LEEP/NCE apply


@pytest.mark.parametrize("kwargs, error, match", [
    ({"layer": 5}, InputError, "onet_mtcnn has 5 layer"),
    ({"pooling": "cls"}, InputError, "pooling choices are for token models"),
    ({"device": "tpu"}, InputError, "device"),
])
def test_builtin_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        load_extractor("builtin:onet_mtcnn", **kwargs)


def test_bad_batch_size_and_inputs(mnv2):
    with pytest.raises(InputError, match="batch_size"):
        mnv2.extract(DIGITS, batch_size=0)
    with pytest.raises(InputError, match="at least one input"):
        mnv2.extract(DIGITS[:0])
    with pytest.raises(InputError, match="uint8"):
        mnv2.extract(DIGITS.astype(np.float64))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_cuda_without_cuda_is_a_resource_error():
    with pytest.raises(ResourceError, match="cuda"):
        load_extractor("builtin:onet_mtcnn", device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_extraction_matches_cpu(mnv2):
    on_gpu = load_extractor("builtin:mnv2_imagenet?image_size=32", device="cuda")
    assert next(on_gpu.module.parameters()).is_cuda and on_gpu.identity == mnv2.identity
    feats, probs = on_gpu.extract_with_source_probs(DIGITS, batch_size=5)
    assert feats.dtype == np.float32 and feats.shape == (12, 1280)
    cpu_feats, cpu_probs = mnv2.extract_with_source_probs(DIGITS)
    # cuDNN may use TF32 convolutions: compare against the feature scale, not elementwise to 1e-6
    assert np.abs(feats - cpu_feats).max() < 2e-2 * np.abs(cpu_feats).max()
    assert np.abs(probs - cpu_probs).max() < 1e-2


# hf: vision ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    return save_tiny_vit(tmp_path_factory.mktemp("tiny_vit"))


def test_hf_vision_matches_direct_transformers_call(tiny_vit):
    import transformers

    extractor = load_extractor(f"hf:{tiny_vit}")
    feats = extractor.extract(DIGITS, batch_size=5)
    assert feats.shape == (12, 32) and feats.dtype == np.float32 and extractor.modality == "image"
    processor = transformers.AutoImageProcessor.from_pretrained(tiny_vit)
    model = transformers.ViTModel.from_pretrained(tiny_vit).eval()
    rgb = [np.repeat(img[..., None], 3, axis=2) for img in DIGITS]
    with torch.no_grad():
        expected = model(**processor(images=rgb, return_tensors="pt")).pooler_output.numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-5)
    assert "pool=pooler" in extractor.identity


def test_hf_vision_layer_and_pooling_choices(tiny_vit):
    last_cls = load_extractor(f"hf:{tiny_vit}", pooling="cls").extract(DIGITS[:4])
    layer1 = load_extractor(f"hf:{tiny_vit}", layer=1)
    layer1_mean = layer1.extract(DIGITS[:4])
    assert "layer=1|pool=mean" in layer1.identity
    assert last_cls.shape == layer1_mean.shape == (4, 32)
    assert not np.allclose(last_cls, layer1_mean)
    same_layer_cls = load_extractor(f"hf:{tiny_vit}", layer="-1", pooling="cls").extract(DIGITS[:4])
    assert not np.allclose(same_layer_cls, layer1_mean)
    with pytest.raises(InputError, match="pooling"):
        load_extractor(f"hf:{tiny_vit}", pooling="max")
    with pytest.raises(InputError, match="layer"):
        load_extractor(f"hf:{tiny_vit}", layer="last")


def test_hf_vit_without_pooler_weights_defaults_to_cls(tmp_path):
    import transformers

    config = transformers.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                    image_size=16, patch_size=8)
    transformers.ViTModel(config, add_pooling_layer=False).save_pretrained(tmp_path)
    transformers.ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(tmp_path)
    extractor = load_extractor(f"hf:{tmp_path}")
    assert "pool=cls" in extractor.identity
    assert extractor.extract(DIGITS[:2]).shape == (2, 16)


def test_hf_clip_vision_tower_gives_projected_embedding(tmp_path):
    import transformers

    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         vocab_size=100, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                           image_size=16, patch_size=8), projection_dim=8)
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    model.save_pretrained(tmp_path)
    transformers.CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(tmp_path)
    feats = load_extractor(f"hf:{tmp_path}").extract(DIGITS[:3])
    assert feats.shape == (3, 8)
    pixels = transformers.CLIPImageProcessor.from_pretrained(tmp_path)(
        images=[np.repeat(img[..., None], 3, axis=2) for img in DIGITS[:3]], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-5)


# hf: text --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), num_hidden_layers=2)


def test_hf_text_masked_mean_ignores_padding(tiny_bert):
    mean = load_extractor(f"hf:{tiny_bert}")
    assert mean.modality == "text" and "pool=mean" in mean.identity
    together = mean.extract(TEXTS, batch_size=4)
    alone = np.concatenate([mean.extract([t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)  # padding does not leak into the mean
    assert together.shape == (4, 32)
    pooler = load_extractor(f"hf:{tiny_bert}", pooling="pooler").extract(TEXTS)
    assert pooler.shape == (4, 32) and not np.allclose(pooler, together)


def test_hf_text_max_length_changes_identity_and_output(tiny_bert):
    short = load_extractor(f"hf:{tiny_bert}?max_length=4")
    full = load_extractor(f"hf:{tiny_bert}")
    assert short.identity != full.identity and "max_length=4" in short.identity
    assert not np.allclose(short.extract(TEXTS[:1]), full.extract(TEXTS[:1]))
    with pytest.raises(InputError, match="list of strings"):
        full.extract(DIGITS[:2])


def test_hf_minilm_mean_pooling_equals_sentence_transformers():
    directory = minilm_dir()
    hf_feats = load_extractor(f"hf:{directory}").extract(TEXTS)
    st = load_extractor(f"st:{directory}")
    st_feats = st.extract(TEXTS, batch_size=3)
    assert st_feats.shape == (4, 384) and st.modality == "text"
    normalised = hf_feats / np.linalg.norm(hf_feats, axis=1, keepdims=True)
    np.testing.assert_allclose(normalised, st_feats, atol=2e-5)
    sims = st_feats @ st_feats.T
    assert sims[0, 2] > sims[0, 3] and sims[0, 2] > sims[0, 1]  # dog~puppy beats dog~airplane/markets
    assert st.identity.startswith("st:model|weights=sha256:")


def test_missing_hf_model_is_a_resource_error(tmp_path):
    with pytest.raises(ResourceError, match="cannot load Hugging Face model"):
        load_extractor(f"hf:{tmp_path / 'nothing-here'}")


# file:, modules, callables, timm ---------------------------------------------------------------

def test_file_spec(tmp_path):
    feats = np.arange(24, dtype=np.float64).reshape(12, 2)
    np.save(tmp_path / "feats.npy", feats)
    extractor = load_extractor(f"file:{tmp_path / 'feats.npy'}")
    out = extractor.extract(DIGITS)
    assert out.dtype == np.float32 and extractor.modality == "any"
    np.testing.assert_array_equal(out, feats.astype(np.float32))
    with pytest.raises(InputError, match="12 rows but the dataset has 3"):
        extractor.extract(DIGITS[:3])
    assert load_extractor(f"file:{tmp_path / 'feats.npy'}?modality=image").modality == "image"
    with pytest.raises(InputError, match="image, text or any"):
        load_extractor(f"file:{tmp_path / 'feats.npy'}?modality=audio")
    np.save(tmp_path / "other.npy", feats + 1)
    assert load_extractor(f"file:{tmp_path / 'other.npy'}").identity != extractor.identity


@pytest.mark.parametrize("content, name, match", [
    (np.zeros(5), "vec.npy", "2-D"),
    (np.array([["a"], ["b"]]), "text.npy", "numeric"),
    (np.zeros((2, 2)), "feats.csv", r"\.npy"),
])
def test_bad_feature_files(tmp_path, content, name, match):
    path = tmp_path / name
    np.save(path, content) if name.endswith(".npy") else path.write_text("1,2")
    with pytest.raises(InputError, match=match):
        load_extractor(f"file:{path}")


def test_from_module_pools_maps_and_hashes_weights():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU())
    extractor = from_module(net, identity="tiny-conv",
                            preprocess=lambda batch: torch.as_tensor(np.asarray(batch), dtype=torch.float32)[:, None] / 255)
    feats = extractor.extract(DIGITS, batch_size=5)
    with torch.no_grad():
        expected = net(torch.as_tensor(DIGITS, dtype=torch.float32)[:, None] / 255).mean((2, 3)).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)
    identity = extractor.identity
    with torch.no_grad():
        net[0].bias.add_(1.0)
    assert from_module(net, identity="tiny-conv").identity != identity
    with pytest.raises(InputError, match="module"):
        from_module(lambda x: x, identity="x")


def test_from_callable_checks_output_shape():
    extractor = from_callable(lambda batch: np.asarray(batch, dtype=np.float64).reshape(len(batch), -1)[:, :5],
                              identity="first-pixels")
    out = extractor.extract(DIGITS, batch_size=7)
    assert out.shape == (12, 5) and out.dtype == np.float32
    np.testing.assert_array_equal(out, DIGITS.reshape(12, -1)[:, :5])
    broken = from_callable(lambda batch: np.zeros(3), identity="broken")
    with pytest.raises(InputError, match="shape"):
        broken.extract(DIGITS)


def test_timm_missing_is_a_resource_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "timm" else real(name, *a))
    with pytest.raises(ResourceError, match="pip install timm torchvision"):
        load_extractor("timm:resnet18")
