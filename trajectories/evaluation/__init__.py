"""Video metrics for world-model outputs (numpy + OpenCV, no torch): what `worldplay eval` and the worker's
eval task compute, and the action-following score training validation shares.

- `camera`: camera following (relative poses from features + essential matrices against the trajectory);
- `revisit`: consistency between views whose poses come back near an earlier one;
- `drift`: per-chunk image statistics and sharpness over the rollout;
- `flow`: the action-following optical-flow score;
- `images`: PSNR / SSIM;
- `report`: one evaluation of a video, written as `eval.json`.
"""
