"""A stub official checkout for the official engine's tests: `hyvideo/generate.py` that behaves like the real
one at its interface (arguments, progress bars on stderr, the video rank 0 writes), and an empty model dir."""

from __future__ import annotations

import json
from pathlib import Path

from worker.models.checkpoint import ACTION_CHECKPOINT_DIRS, WEIGHTS_NAME
from worker.pipeline.model_dir import SHARED_PIECES

# The stub records its argv and rank, prints tqdm-like bars per chunk on stderr, and rank 0 writes
# gen.mp4; with `--sr true` a 6-step bar follows and rank 0 writes gen_sr.mp4 at the 720p bucket (and gen.mp4
# only with `--save_pre_sr_video true`), as the official script. A prompt containing "oom" makes it die like
# a CUDA OOM.
STUB = r"""
import argparse, json, os, sys, time
parser = argparse.ArgumentParser()
for name in ("prompt", "negative_prompt", "image_path", "pose", "resolution", "model_path", "action_ckpt",
             "model_type", "few_step", "num_inference_steps", "video_length", "height", "width", "seed", "sr",
             "rewrite", "dtype", "output_path", "offloading", "group_offloading", "use_vae_parallel",
             "save_pre_sr_video"):
    parser.add_argument("--" + name)
args = parser.parse_args()
rank = int(os.environ["RANK"])
record = os.environ["STUB_RECORD_DIR"]
with open(os.path.join(record, f"argv-seed{args.seed}-rank{rank}.json"), "w") as handle:
    json.dump({"argv": sys.argv[1:], "world_size": os.environ["WORLD_SIZE"], "cwd": os.getcwd()}, handle)
print("HY-World 1.5 loading from: ", args.action_ckpt, flush=True)
if "oom" in args.prompt:
    print("Traceback (most recent call last):", file=sys.stderr)
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", file=sys.stderr, flush=True)
    sys.exit(1)
latents = (int(args.video_length) - 1) // 4 + 1
chunk = 16 if args.model_type == "bi" else 4
steps = int(args.num_inference_steps)
sr = args.sr == "true"
def bar(steps):
    for step in range(steps + 1):
        sys.stderr.write(f"\r{100 * step // steps:3d}%|####      | {step}/{steps} [00:00<00:00, 9.00it/s]")
        sys.stderr.flush()
        time.sleep(0.05)
    sys.stderr.write(f"\r100%|##########| {steps}/{steps} [00:00<00:00, 9.00it/s]\n")
for _ in range(latents // chunk):
    bar(steps)
if sr:
    bar(6)
def save(name, width, height):
    import imageio_ffmpeg, numpy as np
    os.makedirs(args.output_path, exist_ok=True)
    writer = imageio_ffmpeg.write_frames(os.path.join(args.output_path, name), (width, height), fps=24)
    writer.send(None)
    for index in range(int(args.video_length)):
        writer.send(np.full((height, width, 3), 10 * index % 255, np.uint8).tobytes())
    writer.close()
    print("Saved video to:", os.path.join(args.output_path, name), flush=True)
if rank == 0:
    width, height = int(args.width), int(args.height)
    if sr:
        from worldplay_cli.contract.buckets import super_resolution_size
        save("gen_sr.mp4", *super_resolution_size(width, height))
    if not sr or args.save_pre_sr_video == "true":
        save("gen.mp4", width, height)
"""

SMALL = ("--pose", "w-3", "--width", "64", "--height", "32")


def fake_model_dir(root: Path) -> Path:
    paths = [path for _, files, _ in SHARED_PIECES for path in files]
    paths += [f"{directory}/{WEIGHTS_NAME}" for directory in ACTION_CHECKPOINT_DIRS.values()]
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"")
    return root


# The WAN stub (`wan/generate.py`): records argv and rank, checks what the real script loads (the base's
# index and folders, the two checkpoints; the pose a JSON file), prints a 4-step bar per chunk and, on
# rank 0, writes `<pose>_<prompt>.mp4` of 4 * (latents - 1) + 1 frames at 1280x704 and 16 fps, as the
# official script. It imports `wan` from the checkout, as the real one needs PYTHONPATH to hold it.
WAN_STUB = r"""
import argparse, json, os, sys, time
import wan
parser = argparse.ArgumentParser()
for name in ("input", "negative_prompt", "pose", "num_chunk", "num_frames", "num_inference_steps", "model_id",
             "ar_model_path", "ckpt_path", "out", "image_path"):
    parser.add_argument("--" + name)
args = parser.parse_args()
rank = int(os.environ["RANK"])
with open(os.path.join(os.environ["STUB_RECORD_DIR"], f"wan-argv-rank{rank}.json"), "w") as handle:
    index = json.load(open(os.path.join(args.model_id, "model_index.json")))
    json.dump({"argv": sys.argv[1:], "world_size": os.environ["WORLD_SIZE"], "index": index,
               "folders": sorted(os.listdir(args.model_id))}, handle)
assert args.pose.endswith(".json") and os.path.isfile(args.ckpt_path)
assert os.path.isfile(os.path.join(args.ar_model_path, "diffusion_pytorch_model.safetensors"))
latents = 4 * int(args.num_chunk)
for _ in range(int(args.num_chunk)):
    for step in range(5):
        sys.stderr.write(f"\r{25 * step:3d}%|####      | {step}/4 [00:00<00:00, 9.00it/s]")
        sys.stderr.flush()
        time.sleep(0.05)
    sys.stderr.write("\n")
if rank == 0:
    import imageio_ffmpeg, numpy as np
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "pose_" + args.input.replace(" ", "_") + ".mp4")
    writer = imageio_ffmpeg.write_frames(path, (1280, 704), fps=16)
    writer.send(None)
    for index in range(4 * (latents - 1) + 1):
        writer.send(np.full((704, 1280, 3), 10 * index % 255, np.uint8).tobytes())
    writer.close()
    print("Video saved to", path, flush=True)
"""


def fake_wan_model_dir(root: Path) -> Path:
    """Empty files where a WAN model directory has them (both checkpoints), the base's index listing the
    transformer our download leaves out."""
    from worldplay_cli.contract import layout

    paths = [path for _, files, _ in layout.WAN_SHARED_PIECES for path in files]
    paths += [layout.action_checkpoint("wan-ar"), layout.action_checkpoint("wan-distilled")]
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"")
    index = {"_class_name": "WanPipeline", "transformer": ["diffusers", "WanTransformer3DModel"],
             "vae": ["diffusers", "AutoencoderKLWan"]}  # fmt: skip
    (root / layout.WAN_MODEL_INDEX).write_text(json.dumps(index))
    return root
