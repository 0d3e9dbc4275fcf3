"""Catalog, sizes and the resumable transfer on their own (the end-to-end cases are in test_download.py)."""

from __future__ import annotations

import hashlib

import pytest

from fake_hub import FakeHub
from worldplay_cli.contract.errors import BadInput
from worldplay_cli.download import catalog, transfer
from worldplay_cli.download.sizes import format_size, parse_size


def test_every_released_variant_has_base_pieces_and_its_action_checkpoint():
    from worldplay_cli.contract import variants

    base = {
        "hunyuan": {"hunyuanvideo-480p-i2v", "qwen2.5-vl", "byt5-small", "glyph-sdxl-v2", "siglip"},
        "wan": {"wan2.2-ti2v-5b", "wan-transformer-config"},
    }
    for variant in catalog.VARIANTS.values():
        if variant.name in ("sr", "ar-rl-distilled"):
            continue
        family = variants.get(variant.name).family_name
        assert set(variant.pieces) == base[family] | {f"action-{variant.name}"}
        assert variant.action_checkpoint.endswith("/diffusion_pytorch_model.safetensors") or family == "wan"
    assert catalog.VARIANTS["wan-distilled"].action_checkpoint == "wan_distilled_model/model.pt"
    assert not catalog.VARIANTS["ar-rl-distilled"].released


def test_select_shares_pieces_and_refuses_unknown_or_unreleased_names():
    variants, pieces = catalog.select(["ar", "ar-distilled", "sr"], skip=["siglip"])
    names = [piece.name for piece in pieces]
    assert [variant.name for variant in variants] == ["ar", "ar-distilled", "sr"]
    assert names.count("hunyuanvideo-480p-i2v") == 1 and "siglip" not in names
    assert {"action-ar", "action-ar-distilled", "hunyuanvideo-sr"} <= set(names)
    assert "ar-rl-distilled" not in [variant.name for variant in catalog.select(["all"])[0]]
    for bad in (["nope"], ["ar-rl-distilled"], []):
        with pytest.raises(BadInput):
            catalog.select(bad)
    with pytest.raises(BadInput):
        catalog.select(["ar"], skip=["nope"])


def test_every_piece_has_a_catalog_size_that_says_where_it_comes_from():
    # An offline plan shows these; a piece without one would be planned as "? B".
    assert set(catalog.KNOWN_SIZES) == set(catalog.PIECES)
    for name, known in catalog.KNOWN_SIZES.items():
        assert (known.size > 10**8 or name == "wan-transformer-config") and known.basis, name
    assert format_size(catalog.KNOWN_SIZES["action-ar"].size, approximate=True) == "~17.1 GB"


def test_mistyped_names_get_the_closest_valid_one():
    with pytest.raises(BadInput, match=r"unknown variant 'ar-distiled'; did you mean 'ar-distilled'\?"):
        catalog.select(["ar-distiled"])
    with pytest.raises(BadInput) as caught:
        catalog.find_variant("xyz")
    assert caught.value.message == "unknown variant 'xyz'" and caught.value.hint == (
        "variants: bi, ar, ar-rl, ar-distilled, wan-distilled, wan-ar, sr"
    )


def test_patterns_and_the_distilled_rename():
    hv = catalog.PIECES["hunyuanvideo-480p-i2v"]
    files = [
        "vae/config.json",
        "transformer/480p_i2v/config.json",
        "transformer/720p_t2v/config.json",
        "upsampler/720p_sr_distilled/config.json",
        "README.md",
    ]
    assert hv.wanted(files) == ["transformer/480p_i2v/config.json", "vae/config.json"]
    byt5 = catalog.PIECES["byt5-small"]
    assert byt5.wanted(["pytorch_model.bin", "tf_model.h5", "flax_model.msgpack"]) == ["pytorch_model.bin"]
    distilled = catalog.PIECES["action-ar-distilled"]
    assert distilled.layout_path("ar_distilled_action_model/model.safetensors") == (
        "ar_distilled_action_model/diffusion_pytorch_model.safetensors"
    )
    assert catalog.PIECES["qwen2.5-vl"].layout_path("config.json") == "text_encoder/llm/config.json"


def test_sizes_round_trip_and_reject_nonsense():
    assert parse_size("60GB") == 60 * 10**9 and parse_size("1.5 TB") == 15 * 10**11
    assert parse_size("100kB") == 100_000 and parse_size("2GiB") == 2 * 2**30 and parse_size("42") == 42
    assert format_size(17_100_000_000) == "17.1 GB" and format_size(999) == "999 B"
    with pytest.raises(BadInput):
        parse_size("lots")


def test_interrupted_transfer_keeps_partial_and_resumes(tmp_path):
    data = bytes(range(256)) * 4096  # 1 MiB
    with FakeHub() as hub:
        hub.add_repo("org/repo", {"weights.safetensors": data})
        url = f"{hub.cdn_url}/{hashlib.sha256(data).hexdigest()}"
        dest, partial = tmp_path / "blob", tmp_path / "blob.incomplete"
        with pytest.raises(transfer.Cancelled):
            transfer.fetch(
                url, dest, partial, size=len(data), sha256=hashlib.sha256(data).hexdigest(), cancelled=lambda: True
            )
        kept = partial.stat().st_size
        assert 0 < kept < len(data) and not dest.exists()
        transfer.fetch(url, dest, partial, size=len(data), sha256=hashlib.sha256(data).hexdigest())
        assert dest.read_bytes() == data and not partial.exists()
        assert [r.range for r in hub.requests] == [None, f"bytes={kept}-"]


def test_wrong_digest_is_rejected_and_the_bad_copy_removed(tmp_path):
    data = b"x" * 5000
    with FakeHub() as hub:
        hub.add_repo("org/repo", {"weights.safetensors": data})
        url = f"{hub.cdn_url}/{hashlib.sha256(data).hexdigest()}"
        with pytest.raises(transfer.WorldplayError, match="sha256 mismatch"):
            transfer.fetch(url, tmp_path / "blob", tmp_path / "part", size=len(data), sha256="0" * 64)
        assert not (tmp_path / "part").exists() and not (tmp_path / "blob").exists()


def test_the_sr_addon_names_the_variants_it_serves_from_the_registry():
    from worldplay_cli.contract import variants

    note = catalog.VARIANTS["sr"].note
    assert "generate --sr" in note and "bi, ar, ar-rl, ar-distilled" in note
    record = variants.Variant(
        name="no-sr", title="t", model_type="ar", chunk_latents=4, steps=4, guidance=1.0, action_dir="x",
        piece_title="x", super_resolution=False,
    )  # fmt: skip
    with variants.registered(record):
        assert "no-sr" in catalog.VARIANTS and "no-sr" not in catalog.VARIANTS["sr"].note
