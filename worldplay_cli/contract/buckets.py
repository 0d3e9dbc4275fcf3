"""The image-size bucket of the official i2v pipeline: one rule for the CLI (the video size it puts in a
job spec) and the worker (the video size and the SigLIP crop).

As `generate_crop_size_list(base_size, 16, max_ratio=4)` and the closest-ratio pick of HunyuanVideo-1.5:
a staircase of (height, width) pairs of about base_size² pixels, sides multiples of the stride; the
bucket whose height/width ratio, rounded to 5 decimals, is closest to the image's (not rounded) wins,
the first of equally close ones in staircase order. The 720p super-resolution stage maps a 480p bucket to
the 720p bucket (base 960) of the closest width/height ratio, not rounded (the official `BucketMap`); a
size that is no 480p bucket has no 720p size. Pure Python: the CLI has no numpy in this path.
"""

from __future__ import annotations

RESOLUTION_BASE = {"480p": 640}  # generation resolution name -> base_size
SUPER_RESOLUTION_BASE = 960  # the 720p buckets the SR stage maps 480p ones to
STRIDE = 16
MAX_RATIO = 4.0


def bucket_sizes(base_size: int = 640, stride: int = STRIDE, max_ratio: float = MAX_RATIO) -> list[tuple[int, int]]:
    """Candidate (height, width) pairs in the official order."""
    budget = round((base_size / stride) ** 2)
    sizes = []
    long_side, short_side = budget, 1
    while long_side > 0:
        if max(long_side, short_side) / min(long_side, short_side) <= max_ratio:
            sizes.append((long_side * stride, short_side * stride))
        if (short_side + 1) * long_side <= budget:
            short_side += 1
        else:
            long_side -= 1
    return sizes


def bucket_size(
    image_width: int, image_height: int, resolution: str = "480p", *, base_size: int | None = None
) -> tuple[int, int]:
    """(width, height) of the bucket for an image of `image_width` x `image_height`."""
    sizes = bucket_sizes(base_size if base_size is not None else RESOLUTION_BASE[resolution])
    aspect = image_height / image_width
    # min keeps the first of equally close buckets, as numpy's argmin in the official code does
    height, width = min(sizes, key=lambda size: abs(round(size[0] / size[1], 5) - aspect))
    return width, height


def super_resolution_size(width: int, height: int) -> tuple[int, int] | None:
    """(width, height) of the 720p bucket the SR stage turns a 480p bucket `width` x `height` into; None
    when that size is no 480p bucket (e.g. a custom --width/--height), which the official stage cannot map."""
    if (width, height) not in bucket_sizes(RESOLUTION_BASE["480p"]):
        return None
    ratio = width / height
    # entries are read (width, height) here, as the official map reads them; min keeps the first of ties
    return min(bucket_sizes(SUPER_RESOLUTION_BASE), key=lambda size: abs(size[0] / size[1] - ratio))
