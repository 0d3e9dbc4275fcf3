"""`worldplay rewrite`: try prompt rewriting on its own and see what the model changed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from worldplay_cli.options import JsonOption
from worldplay_cli.output import emit

if TYPE_CHECKING:
    from rich.console import Console

    from worldplay_cli.rewrite import RewriteResult


def register(app: typer.Typer) -> None:
    app.command("rewrite")(rewrite_command)


def rewrite_command(
    prompt: str = typer.Argument(..., help="The prompt to rewrite."),
    image: Optional[Path] = typer.Option(
        None, "--image", "-i", help="Reference image or a bundled example (meadow, city): rewrite for image-to-video."
    ),
    required: bool = typer.Option(
        False, "--required", help="Fail (exit 1) when the endpoint fails instead of keeping the original prompt."
    ),
    base_url: Optional[str] = typer.Option(
        None, "--base-url", help="Endpoint base URL for this run (e.g. http://localhost:8000/v1)."
    ),
    model: Optional[str] = typer.Option(None, "--model", help="Model name for this run."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Request timeout in seconds."),
    system_prompt: Optional[Path] = typer.Option(
        None, "--system-prompt", help="System prompt file (or a directory with rewrite_t2v.md / rewrite_i2v.md)."
    ),
    as_json: JsonOption = False,
) -> None:
    """Rewrite a prompt through the configured OpenAI-compatible endpoint and show original vs rewritten."""
    from worldplay_cli.contract.settings import load_settings
    from worldplay_cli.rewrite import rewrite_prompt
    from worldplay_cli.submit import image_path_for

    task = "i2v" if image is not None else "t2v"
    image = image_path_for(image) if image is not None else None
    if image is not None:
        from worldplay_cli.submit import _load_image

        _load_image(image)  # a missing or undecodable image is bad input, endpoint or not
    overrides = {
        "rewrite": {
            task: {"base_url": base_url, "model": model, "timeout_s": timeout},
            "system_prompt_file": system_prompt,
        }
    }
    result = rewrite_prompt(prompt, image, load_settings(overrides), "required" if required else "best-effort")
    emit(result.model_dump(mode="json"), as_json, lambda console: render_rewrite(console, result))


def render_rewrite(console: Console, result: RewriteResult) -> None:
    """Both prompts in panels: words the rewrite dropped struck out in red, words it added in green."""
    from rich.panel import Panel
    from rich.text import Text

    if result.changed:
        original, rewritten = word_diff(result.original, result.rewritten)
        console.print(Panel(original, title="original", title_align="left", border_style="dim"))
        console.print(Panel(rewritten, title="rewritten", title_align="left", border_style="green"))
    else:
        console.print(Panel(Text(result.original), title="prompt (unchanged)", title_align="left", border_style="dim"))
    details = [f"prompt version {result.prompt_version}"]
    if result.model:
        details.insert(0, f"model {result.model}")
    if result.endpoint:
        details.append(result.endpoint)
    console.print(Text(" · ".join(details), style="dim"))
    if result.warning:
        console.print(Text(f"warning: {result.warning}", style="yellow"))


def word_diff(before: str, after: str):
    """Two rich Texts marking the words only `before` has (red, struck) and only `after` has (green)."""
    import difflib

    from rich.text import Text

    before_words, after_words = before.split(), after.split()
    # Compare words without case and punctuation, so "cat," in the rewrite still matches "cat".
    matcher = difflib.SequenceMatcher(
        a=[_word_key(word) for word in before_words], b=[_word_key(word) for word in after_words], autojunk=False
    )
    before_text, after_text = Text(), Text()
    for tag, a_start, a_end, b_start, b_end in matcher.get_opcodes():
        kept = tag == "equal"
        _append_words(before_text, before_words[a_start:a_end], None if kept else "red strike")
        _append_words(after_text, after_words[b_start:b_end], None if kept else "green")
    return before_text, after_text


def _word_key(word: str) -> str:
    return re.sub(r"\W", "", word.lower()) or word


def _append_words(text, words: list[str], style: str | None) -> None:
    for word in words:
        if text.plain:
            text.append(" ")
        text.append(word, style=style)
