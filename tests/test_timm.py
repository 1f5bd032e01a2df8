"""timm: specs through ``load_extractor``, on real timm models built locally (nothing is downloaded).

timm imports torchvision, and PyPI's torchvision does not load beside the torch 2.13.0 CPU wheel of
the main .venv, so these tests are skipped there; ``scripts/test_timm.sh`` makes ``.venv-timm``
(torch 2.14.1 + torchvision 0.29.1 + timm) and runs them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

timm = pytest.importorskip("timm")

from emms.errors import InputError, ResourceError  # noqa: E402
from emms.models import TimmExtractor, load_extractor  # noqa: E402

RNG = np.random.default_rng(0)
PHOTOS = RNG.integers(0, 256, (5, 40, 52, 3), dtype=np.uint8)   # RGB, not square: squashed to the size
GRAY = RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8)


def _seeded_model(name: str, seed: int, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, **kwargs).eval()


def _timm_reference(model: torch.nn.Module, images: np.ndarray, size: int) -> np.ndarray:
    """Features computed directly with timm: its data config, a squash resize, ``forward_head(pre_logits=True)``."""
    config = timm.data.resolve_data_config(model=model)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(size, size), mode=config["interpolation"], align_corners=False, antialias=True)
    x = (x - torch.tensor(config["mean"]).view(1, 3, 1, 1)) / torch.tensor(config["std"]).view(1, 3, 1, 1)
    with torch.inference_mode():
        return model.forward_head(model.forward_features(x), pre_logits=True).numpy()


def test_random_resnet_through_the_spec_matches_a_direct_timm_forward():
    ex = load_extractor("timm:resnet18?pretrained=false&image_size=64")
    assert isinstance(ex, TimmExtractor) and ex.modality == "image"
    assert not ex.module.training, "the extractor must run the model in eval mode"
    assert ex.image_size == 64 and ex.spec.interpolation == "bicubic"  # resnet18's data config asks for bicubic
    feats = ex.extract(PHOTOS, batch_size=2)
    assert feats.shape == (5, 512) and feats.dtype == np.float32 and np.isfinite(feats).all()
    reference = _seeded_model("resnet18", 0, num_classes=0)  # seed 0 is the spec's default
    for ours, theirs in zip(ex.module.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(ours, theirs)
    np.testing.assert_allclose(feats, _timm_reference(reference, PHOTOS, 64), rtol=1e-4, atol=1e-5)


def test_features_are_deterministic_and_independent_of_the_batch():
    ex = load_extractor("timm:resnet18", pretrained=False, image_size=48)
    whole = ex.extract(PHOTOS, batch_size=5)
    # BatchNorm in train mode would use batch statistics: a row would change with its batch mates
    np.testing.assert_allclose(ex.extract(PHOTOS[:1], batch_size=1), whole[:1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ex.extract(PHOTOS, batch_size=2), whole, rtol=1e-4, atol=1e-5)
    again = load_extractor("timm:resnet18?pretrained=false&image_size=48")
    assert again.identity == ex.identity
    np.testing.assert_array_equal(again.extract(PHOTOS, batch_size=5), whole)
    other = load_extractor("timm:resnet18?pretrained=false&image_size=48&seed=1")
    assert other.identity != ex.identity and not np.allclose(other.extract(PHOTOS), whole)
    assert load_extractor("timm:resnet18?pretrained=false&image_size=64").identity != ex.identity


def test_gray_images_are_replicated_to_rgb():
    ex = load_extractor("timm:resnet18?pretrained=false&image_size=32")
    rgb = np.repeat(GRAY[..., None], 3, axis=3)
    np.testing.assert_allclose(ex.extract(GRAY), ex.extract(rgb), rtol=1e-5, atol=1e-6)


def test_fixed_size_vit_keeps_its_size_and_its_own_normalisation():
    ex = load_extractor("timm:vit_tiny_patch16_224?pretrained=false&image_size=64")
    config = timm.data.resolve_data_config(model=ex.module)
    assert ex.spec.fixed_size and ex.image_size == 224  # a fixed-size ViT ignores image_size
    assert ex.spec.mean == tuple(config["mean"]) == (0.5, 0.5, 0.5)
    assert "mean=(0.5, 0.5, 0.5)" in ex.identity
    feats = ex.extract(PHOTOS[:2])
    assert feats.shape == (2, ex.module.num_features) == (2, 192)
    reference = _seeded_model("vit_tiny_patch16_224", 0, num_classes=0)
    np.testing.assert_allclose(feats, _timm_reference(reference, PHOTOS[:2], 224), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_file_loads_the_backbone_and_drops_the_head(tmp_path, suffix):
    trained = _seeded_model("resnet18", 7, num_classes=10)  # a "fine-tuned" model with a 10-way head
    path = tmp_path / f"resnet18-ft{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(trained.state_dict(), str(path))
    else:
        torch.save({"state_dict": trained.state_dict(), "epoch": 3}, path)  # a training checkpoint
    ex = load_extractor("timm:resnet18", checkpoint=str(path), image_size=64)
    trained_state = trained.state_dict()
    for name, tensor in ex.module.state_dict().items():
        assert torch.equal(tensor, trained_state[name]), name
    random = load_extractor("timm:resnet18?pretrained=false&image_size=64")
    assert ex.identity.split("|")[1] != random.identity.split("|")[1]  # weights digest
    trained.reset_classifier(0)
    np.testing.assert_allclose(ex.extract(PHOTOS), _timm_reference(trained, PHOTOS, 64), rtol=1e-4, atol=1e-5)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_extractor("timm:resnet18", checkpoint=str(tmp_path / "nope.pth"))
    wrong = tmp_path / "resnet34.pth"
    torch.save(_seeded_model("resnet34", 0).state_dict(), wrong)
    with pytest.raises(ResourceError, match="does not fit timm model 'resnet18'"):
        load_extractor("timm:resnet18", checkpoint=str(wrong))
    partial = tmp_path / "partial.pth"
    state = _seeded_model("resnet18", 0).state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4.")}, partial)
    with pytest.raises(ResourceError, match=r"weight\(s\) missing"):
        load_extractor("timm:resnet18", checkpoint=str(partial))
    with pytest.raises(InputError, match="either 'checkpoint' or 'pretrained'"):
        load_extractor("timm:resnet18?pretrained=false", checkpoint=str(wrong))


def test_unknown_timm_model_is_an_input_error():
    with pytest.raises(InputError, match="unknown timm model 'resnet_nope'"):
        load_extractor("timm:resnet_nope?pretrained=false")


def test_pretrained_weights_offline_without_a_cache_name_the_way_out(tmp_path):
    """Real timm + huggingface_hub behaviour offline with an empty cache, in a fresh process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    code = ("from emms.errors import ResourceError\nfrom emms.models import load_extractor\n"
            "try:\n    load_extractor('timm:resnet18')\nexcept ResourceError as exc:\n    print('RESOURCE', exc)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "RESOURCE" in out.stdout and "pretrained=false or checkpoint=PATH" in out.stdout, out.stdout
