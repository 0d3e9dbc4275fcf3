"""Streaming and tiled decoding of the native VAE (tiny golden weights)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from worker.models.tiny_vae import TINY_VAE_CONFIG
from worker.models.vae import HunyuanVideo15VAE, SpatialTiling, StreamingDecoder, blend_into, tiled_decode


@pytest.fixture(scope="module")
def vae(golden_vae_state):
    model = HunyuanVideo15VAE(TINY_VAE_CONFIG)
    model.load_state_dict(golden_vae_state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def latents():
    # 3 latent frames on a 6x8 grid -> 9 frames of 96x128 pixels
    return torch.randn(1, 4, 3, 6, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def full_decode(vae, latents):
    with torch.no_grad():
        return vae.decode(latents)


def test_streaming_chunks_equal_whole_video_decode(vae, latents, full_decode):
    decoder = StreamingDecoder(vae)
    first = list(decoder.push(latents[:, :, :1]))
    assert [piece.shape[2] for piece in first] == [1]
    assert decoder.frames_done == 1
    rest = list(decoder.push(latents[:, :, 1:]))
    assert [piece.shape[2] for piece in rest] == [4, 4]
    assert decoder.frames_done == 9
    assert torch.equal(torch.cat(first + rest, dim=2), full_decode)


def test_streaming_yields_each_latent_frame_before_the_next_is_decoded(vae, latents):
    decoder = StreamingDecoder(vae)
    pieces = decoder.push(latents)
    next(pieces)
    assert decoder.latent_frames_done == 0
    next(pieces)
    assert decoder.latent_frames_done == 1


def test_tiled_decode_approximates_untiled(vae, latents, full_decode):
    with torch.no_grad():
        small = vae.decode(latents, SpatialTiling(tile_latents=4, overlap_latents=1))
        large = vae.decode(latents, SpatialTiling(tile_latents=6, overlap_latents=2))
    assert small.shape == large.shape == full_decode.shape
    error_small = (small - full_decode).abs().mean()
    error_large = (large - full_decode).abs().mean()
    # tiles cut the decoder's global attention and its receptive field, so they only approximate
    assert error_small < 0.2 * full_decode.abs().mean()
    assert error_large < error_small


def test_tiling_falls_back_to_untiled_when_one_tile_covers_the_frame(vae, latents, full_decode):
    with torch.no_grad():
        tiled = vae.decode(latents, SpatialTiling(tile_latents=8, overlap_latents=2))
    assert torch.equal(tiled, full_decode)


def test_streaming_tiled_equals_tiled_decode(vae, latents):
    tiling = SpatialTiling(tile_latents=4, overlap_latents=1)
    with torch.no_grad():
        whole = vae.decode(latents, tiling)
    decoder = StreamingDecoder(vae, tiling)
    streamed = [*decoder.push(latents[:, :, :2]), *decoder.push(latents[:, :, 2:])]
    assert torch.equal(torch.cat(streamed, dim=2), whole)


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"), [(6, 8, 4, 1), (7, 5, 3, 1), (9, 9, 4, 2), (5, 11, 5, 0)]
)
def test_tile_geometry_is_exact_for_a_pointwise_decoder(height, width, tile, overlap):
    # a decoder without spatial context decodes every overlap identically, so blending must change nothing
    def pointwise(latent: torch.Tensor, position: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(latent.sin(), scale_factor=(1, 4, 4), mode="nearest")

    latent = torch.randn(2, 3, 1, height, width, generator=torch.Generator().manual_seed(height * width))
    tiled = tiled_decode(latent, SpatialTiling(tile, overlap), 4, pointwise)
    torch.testing.assert_close(tiled, pointwise(latent, (0, 0)))


def test_blend_is_a_linear_cross_fade():
    previous = torch.zeros(1, 1, 1, 2, 8)
    tile = torch.ones(1, 1, 1, 2, 6)
    blended = blend_into(previous, tile, extent=4, dim=-1)
    assert blended[0, 0, 0, 0].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_tiling_rejects_overlap_not_smaller_than_tile():
    with pytest.raises(ValueError, match="overlap_latents"):
        SpatialTiling(tile_latents=4, overlap_latents=4)
