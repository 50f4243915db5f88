"""Fixtures for the data pipeline tests: the real shipped tokenizers and a few real CFT records."""

from __future__ import annotations

import gzip
import itertools
import json

import pytest

from cft_jax.assets.tokenizers import load_tokenizer
from cft_jax.data import asset_path
from cft_jax.schema import CritiqueRecord, from_dict


@pytest.fixture(scope="session")
def qwen():
    return load_tokenizer("qwen2.5")


@pytest.fixture(scope="session")
def critiques() -> list[CritiqueRecord]:
    """The first 12 real RealCritic critique records shipped with the package."""
    with gzip.open(asset_path("realcritic_critiques"), "rt", encoding="utf-8") as f:
        return [from_dict(CritiqueRecord, json.loads(line)) for line in itertools.islice(f, 12)]
