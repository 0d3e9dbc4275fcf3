"""Raw datasets from game footage annotated the FastVideo MatrixGame2 / Zelda way (fact sheet §1.3).

An annotation file is a JSON list of `{"path": video.mp4, "cap": caption, "action_path": actions.npy}`
(paths relative to the annotation's folder); a merge file lists `<folder>,<annotation.json>` lines. The
result is a `dataset.json` (`SourceManifest`) whose clips point at those files where they are, with the
layout's keyboard columns and the chosen view as its vocabulary, ready for `worldplay data prepare`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from trajectories.keys import LAYOUTS
from worldplay_cli.contract.errors import BadInput
from worldplay_cli.contract.training import ActionVocabulary, SourceClip, SourceManifest

_UNSAFE_ID = re.compile(r"[^A-Za-z0-9_.\-]+")


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"no {what} at {path}", "check the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInput(f"cannot read {what} {path}: {error}", "it must be a JSON list of clips") from None


def annotation_entries(source: Path) -> list[tuple[Path, dict]]:
    """(folder, entry) pairs of an annotation JSON or of a merge file of `<folder>,<annotation>` lines."""
    if source.suffix.lower() == ".json":
        lists = [(source.parent, source)]
    else:
        try:
            lines = [line.strip() for line in source.read_text().splitlines() if line.strip()]
        except OSError as error:
            raise BadInput(f"cannot read merge file {source}: {error.strerror or error}", "check the path") from None
        lists = []
        for number, line in enumerate(lines, start=1):
            folder, separator, annotation = line.partition(",")
            if not separator:
                raise BadInput(f"{source} line {number} is not <folder>,<annotation.json>", "one pair per line")
            lists.append((source.parent / folder.strip(), source.parent / annotation.strip()))
    entries = []
    for folder, annotation in lists:
        data = _read_json(annotation, "annotation file")
        if not isinstance(data, list):
            raise BadInput(f"{annotation} is not a list of clips", 'each item is {"path", "cap", "action_path"}')
        for position, entry in enumerate(data):
            if not isinstance(entry, dict) or not entry.get("path") or not entry.get("action_path"):
                raise BadInput(
                    f"{annotation} item {position} has no path or action_path",
                    'each item is {"path", "cap", "action_path"}',
                )
            entries.append((folder, entry))
    return entries


def manifest_from_annotations(
    source: str | Path,
    fps: float,
    layout: str = "matrixgame2",
    view: str = "first",
    degrees_per_unit: float = 1.0,
    pitch_sign: int = 1,
    validation_every: int = 0,
) -> SourceManifest:
    """A raw dataset manifest over annotated clips (every `validation_every`-th one a validation clip)."""
    if layout not in LAYOUTS:
        raise BadInput(f"unknown layout {layout!r}", f"use one of: {', '.join(LAYOUTS)}")
    source = Path(source).resolve()
    clips, seen = [], set()
    for position, (folder, entry) in enumerate(annotation_entries(source)):
        video = (folder / entry["path"]).resolve()
        clip_id = _UNSAFE_ID.sub("-", video.stem)[:100] or "clip"
        if clip_id in seen:
            clip_id = f"{clip_id}-{position}"
        seen.add(clip_id)
        split = "validation" if validation_every and position % validation_every == validation_every - 1 else "train"
        clips.append(
            SourceClip(
                id=clip_id,
                video=str(video),
                prompt=str(entry.get("cap") or ""),
                actions=str((folder / entry["action_path"]).resolve()),
                split=split,
            )
        )
    if not clips:
        raise BadInput(f"{source} lists no clips", 'add {"path", "cap", "action_path"} items')
    vocabulary = ActionVocabulary(
        keys=list(LAYOUTS[layout]), degrees_per_unit=degrees_per_unit, pitch_sign=pitch_sign, view=view
    )
    return SourceManifest(fps=fps, vocabulary=vocabulary, clips=clips)
