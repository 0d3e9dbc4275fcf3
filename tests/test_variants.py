"""Adding a variant is one record: a variant registered in `contract.variants` (for this test only) is
seen by `worldplay download`, `worldplay generate`, doctor and the pipeline's recipe; and the one
bucket rule gives what both of the former rules gave where they agreed."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from worldplay_cli.contract import layout, variants
from worldplay_cli.contract.buckets import bucket_size

FAKE = variants.Variant(
    name="ar-fake",
    title="A test-only autoregressive variant",
    model_type="ar",
    chunk_latents=8,
    steps=7,
    guidance=3.5,
    action_dir="ar_fake_model",
    piece_title="test-only action model",
    preference=0,  # doctor's first choice while registered
)


@pytest.fixture
def fake_variant():
    with variants.registered(FAKE) as record:
        yield record
    assert "ar-fake" not in variants.names()


def test_the_registry_is_the_one_list(fake_variant):
    from trajectories.latents import chunk_size

    assert variants.names()[-1] == "ar-fake" and variants.get("ar-fake") is FAKE
    assert chunk_size("ar-fake") == 8  # trajectories' validators learn the chunk size from the record
    assert layout.action_checkpoint("ar-fake") == "ar_fake_model/diffusion_pytorch_model.safetensors"
    with pytest.raises(ValueError, match="already registered"):
        variants.register(FAKE)
    with pytest.raises(ValueError, match="built in"):
        variants.unregister("ar")


def test_download_dry_run_plans_the_new_variant(fake_variant, cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    code, out, err = cli("download", "ar-fake", "--dry-run", "--offline", "--json", "--model-dir", str(tmp_path / "m"))
    assert code == 0, err
    plan = json.loads(out)
    assert plan["pieces"][-1]["name"] == "action-ar-fake"
    assert [piece["name"] for piece in plan["pieces"]][:-1] == [
        "hunyuanvideo-480p-i2v",
        "qwen2.5-vl",
        "byt5-small",
        "glyph-sdxl-v2",
        "siglip",
    ]


def test_generate_dry_run_takes_the_new_variant_and_its_recipe(fake_variant, cli):
    code, out, err = cli(
        "generate",
        "--dry-run",
        "--variant",
        "ar-fake",
        "--prompt",
        "a harbour",
        "--pose",
        "w-7",
        "--width",
        "64",
        "--height",
        "32",
    )
    assert code == 0, err
    spec = json.loads(out)
    assert spec["variant"] == "ar-fake" and spec["trajectory"]["num_latents"] == 8
    assert (spec["steps"], spec["guidance"]) == (7, 3.5)
    code, _, err = cli(
        "generate",
        "--dry-run",
        "--variant",
        "ar-fake",
        "--prompt",
        "a harbour",
        "--pose",
        "w-3",
        "--width",
        "64",
        "--height",
        "32",
    )
    assert code != 0 and "8" in err  # 4 latents are not a whole 8-latent chunk


def test_doctor_sees_and_recommends_the_new_variant(fake_variant, tmp_path):
    from worker.doctor import probe_model_dir, recommend

    tmp_path.joinpath("m").mkdir()
    probe = probe_model_dir(tmp_path / "m")
    assert probe["variants"]["ar-fake"]["fix"] == "worldplay download ar-fake"
    recommendation = recommend({"installed": False}, {"installed": False}, ["ar-distilled", "ar-fake"])
    assert recommendation["variant"] == "ar-fake"


def test_the_pipeline_recipe_follows_the_record(fake_variant):
    from worker.pipeline.pipeline import GenerationOptions, WorldPlayPipeline
    from worker.runtime.memory_profiles import guidance_branches

    pipeline = SimpleNamespace(variant="ar-fake")  # the recipe reads nothing but the variant
    assert WorldPlayPipeline.recipe(pipeline, GenerationOptions()) == (7, 3.5)
    assert WorldPlayPipeline.chunk_latents.fget(pipeline) == 8
    assert guidance_branches("ar-fake") == 2 and guidance_branches("ar-distilled") == 1


# -- the one bucket rule ----------------------------------------------------------------------------


def _old_contract_bucket(image_width: int, image_height: int) -> tuple[int, int]:
    """`contract/specs.py:bucket_size` before the merge: (width, height) tuples, image aspect rounded."""
    stride, patches = 16, round((640 / 16) ** 2)
    buckets, wide, high = [], patches, 1
    while wide > 0:
        if max(wide, high) / min(wide, high) <= 4:
            buckets.append((wide * stride, high * stride))
        if (high + 1) * wide <= patches:
            high += 1
        else:
            wide -= 1
    aspect = round(image_height / image_width, 5)
    return min(buckets, key=lambda size: abs(round(size[1] / size[0], 5) - aspect))


def _old_encoder_bucket(width: int, height: int) -> tuple[int, int]:
    """`worker/pipeline/encoders.py:bucket_resolution` before the merge, as (width, height)."""
    stride, budget = 16, round((640 / 16) ** 2)
    sizes, long_side, short_side = [], budget, 1
    while long_side > 0:
        if max(long_side, short_side) / min(long_side, short_side) <= 4:
            sizes.append((long_side * stride, short_side * stride))
        if (short_side + 1) * long_side <= budget:
            short_side += 1
        else:
            long_side -= 1
    ratios = [round(bucket_height / bucket_width, 5) for bucket_height, bucket_width in sizes]
    index = min(range(len(sizes)), key=lambda i: abs(ratios[i] - height / width))
    return sizes[index][1], sizes[index][0]


def test_one_bucket_rule_gives_what_both_gave_where_they_agreed():
    disagreed = []
    for width in range(16, 2400, 23):
        for height in range(16, 2400, 29):
            new, contract, encoder = (
                bucket_size(width, height),
                _old_contract_bucket(width, height),
                _old_encoder_bucket(width, height),
            )
            assert new == encoder  # the official rule (bucket ratios rounded, image aspect not, first of equals)
            if contract != encoder:
                disagreed.append((width, height, contract, encoder))
    # they disagreed only on portrait images exactly between two buckets (a tie the official order breaks)
    assert disagreed and all(height > width for width, height, _, _ in disagreed)
    assert _old_contract_bucket(128, 224) == (480, 832) and bucket_size(128, 224) == (480, 848)


@pytest.mark.parametrize(
    ("width", "height", "bucket"),
    [
        (1920, 1080, (848, 480)),
        (1280, 720, (848, 480)),
        (1280, 704, (848, 464)),
        (832, 480, (832, 480)),
        (512, 512, (640, 640)),
        (1024, 768, (720, 544)),
    ],
)
def test_the_bucket_of_the_official_examples(width, height, bucket):
    assert bucket_size(width, height) == bucket
