"""Every editor command in one table: its keys, its action, and the words the help screen and palette show.

The key bindings, the help screen and the command palette are all generated from `COMMANDS`, so a
command cannot exist in one and be missing from another.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class Command:
    keys: str  # Textual key names, comma-separated; "" for palette-only commands
    action: str  # an action of the editor screen, e.g. "move('w')"
    title: str
    help: str
    group: str
    display: str = ""  # how the help screen writes the keys (defaults to the key names)
    footer: bool = False
    palette: bool = True


_ARROW_GLYPHS = {"right": "→", "left": "←", "up": "↑", "down": "↓"}


def _moves() -> list[Command]:
    keys = [
        ("w", "w", "Move forward", "w"),
        ("s", "s", "Move back", "s"),
        ("a", "a", "Move left", "a"),
        ("d", "d", "Move right", "d"),
        ("right", "right", "Turn right (yaw)", "→"),
        ("left", "left", "Turn left (yaw)", "←"),
        ("up", "up", "Look up (pitch)", "↑"),
        ("down", "down", "Look down (pitch)", "↓"),
        ("h", "hold", "Hold (stand still)", "h"),
    ]
    return [
        Command(key, f"move('{action}')", title, "insert after cursor (8w: 8 times)", "Author", display)
        for key, action, title, display in keys
    ]


def _latches() -> list[Command]:
    keys = [
        ("W", "w", "forward"),
        ("S", "s", "back"),
        ("A", "a", "left"),
        ("D", "d", "right"),
        ("shift+right", "right", "turn right"),
        ("shift+left", "left", "turn left"),
        ("shift+up", "up", "look up"),
        ("shift+down", "down", "look down"),
    ]
    return [
        Command(
            key,
            f"latch('{action}')",
            f"Latch {what}",
            "add it to every latent inserted until pressed again",
            "Author",
            display="⇧" + _ARROW_GLYPHS.get(action, action),
        )
        for key, action, what in keys
    ]


COMMANDS: tuple[Command, ...] = (
    *_moves(),
    Command(
        "plus", "combine", "Combine", "add the next action to what was just inserted (8w + → = 8 × W+→)", "Author", "+"
    ),
    *_latches(),
    Command("r", "replace", "Replace", "the next action replaces the latent(s) at the cursor", "Author"),
    Command(
        "x,delete", "delete", "Delete", "delete the selection or latents from the cursor on (3x)", "Author", "x del"
    ),
    Command("backspace", "backspace", "Delete backwards", "delete the cursor latent and step back", "Author", "⌫"),
    Command("v", "select", "Select", "start/stop a selection at the cursor", "Author"),
    Command("y", "copy", "Copy", "copy the selection, else the segment under the cursor", "Author"),
    Command("p", "paste", "Paste", "paste after the cursor (3p pastes three times)", "Author"),
    Command("u,ctrl+z", "undo", "Undo", "undo the last change", "Author", "u ^z"),
    Command("ctrl+r,ctrl+y", "redo", "Redo", "redo what was undone", "Author", "^r ^y"),
    Command(
        "right_square_bracket",
        "step('translation', 1)",
        "Longer moves",
        "increase the w/a/s/d step size",
        "Author",
        "]",
    ),
    Command(
        "left_square_bracket",
        "step('translation', -1)",
        "Shorter moves",
        "decrease the w/a/s/d step size",
        "Author",
        "[",
    ),
    Command(
        "right_curly_bracket", "step('rotation', 1)", "Bigger turns", "increase the turn step in degrees", "Author", "}"
    ),
    Command(
        "left_curly_bracket",
        "step('rotation', -1)",
        "Smaller turns",
        "decrease the turn step in degrees",
        "Author",
        "{",
    ),
    Command("R", "record", "Record mode", "every key press appends a latent in real time (6 per second)", "Author"),
    Command("full_stop", "cursor(1)", "Next latent", "move the cursor right (count prefix works)", "Navigate", "."),
    Command("comma", "cursor(-1)", "Previous latent", "move the cursor left", "Navigate", ","),
    Command("home", "goto('start')", "First latent", "move the cursor to latent 0", "Navigate"),
    Command("end", "goto('end')", "Last latent", "move the cursor to the last latent", "Navigate"),
    Command("pagedown", "chunk(1)", "Next chunk", "jump to the next denoising chunk", "Navigate", "pgdn"),
    Command("pageup", "chunk(-1)", "Previous chunk", "jump to the previous chunk", "Navigate", "pgup"),
    Command(
        "escape",
        "cancel",
        "Cancel",
        "clear the count, pending combine/replace and the selection",
        "Navigate",
        "esc",
        palette=False,
    ),
    Command("e", "edit_text", "Edit as text", "edit the segment list as pose-string text (esc to leave)", "Navigate"),
    Command("space", "play", "Play", "play the path from the cursor in the preview (space again stops)", "View"),
    Command("equals_sign", "zoom(1.5)", "Zoom in", "zoom the map and side view in", "View", "="),
    Command("minus", "zoom(0.6667)", "Zoom out", "zoom the map and side view out", "View", "-"),
    Command("z", "fit", "Fit", "fit the whole path into the map and side view", "View"),
    Command("ctrl+left", "pan(-1, 0)", "Pan left", "move the map view left", "View", "^←"),
    Command("ctrl+right", "pan(1, 0)", "Pan right", "move the map view right", "View", "^→"),
    Command("ctrl+up", "pan(0, 1)", "Pan up", "move the map view up", "View", "^↑"),
    Command("ctrl+down", "pan(0, -1)", "Pan down", "move the map view down", "View", "^↓"),
    Command("m", "model", "Switch model", "check lengths against ar (chunks of 4) or bi (chunks of 16)", "View"),
    Command("f", "fix('pad')", "Fix length: pad", "hold the last pose until the length is valid", "File"),
    Command("t", "fix('trim')", "Fix length: trim", "drop trailing latents until the length is valid", "File"),
    Command("P", "presets", "Presets", "replace the path with a preset", "File", footer=True),
    Command("ctrl+o", "open", "Import", "load official JSON, nerfstudio, CSV or plain JSON", "File", "^o"),
    Command("ctrl+s", "save", "Save", "save official JSON (and the pose string next to it)", "File", "^s", footer=True),
    Command("f2", "save_as", "Save as", "save under a new name", "File"),
    Command("ctrl+g", "submit", "Submit", "enqueue a generation job with this trajectory", "File", "^g", footer=True),
    Command("question_mark,f1", "help", "Help", "list every key", "File", "? f1", footer=True),
    Command(
        "q,ctrl+q", "app.quit", "Quit", "quit (asks first when there are unsaved changes)", "File", "q ^q", footer=True
    ),
    *(
        Command(
            str(digit),
            f"digit('{digit}')",
            f"Count {digit}",
            "count prefix; 0 alone goes to latent 0",
            "Author",
            palette=False,
        )
        for digit in range(10)
    ),
)


def bindings() -> list[Binding]:
    # ctrl+q is the App's own (priority) quit binding; `q` quits from the editor screen (typing a q in the
    # text box or a dialog is left alone, as the focused widget takes the key first).
    return [
        Binding(command.keys, command.action, command.title, show=command.footer, key_display=command.display or None)
        if command.action != "app.quit"
        else Binding("q", command.action, command.title, show=command.footer)
        for command in COMMANDS
        if command.keys
    ]
