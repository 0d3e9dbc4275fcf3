"""Shared fixtures. Area-specific fixtures live in their own test modules or conftest plugins."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def golden_transformer_state():
    from golden_util import TRANSFORMER, regenerate_state_dict

    return regenerate_state_dict(TRANSFORMER)


@pytest.fixture(scope="session")
def golden_vae_state():
    from golden_util import VAE, regenerate_state_dict

    return regenerate_state_dict(VAE)
