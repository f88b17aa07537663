"""Animated GIFs from per-checkpoint PNG frames (Pillow). One GIF frame per PNG, in the order
given; the last frame is held longer so the end state can be read before the loop restarts.

Deterministic: each frame is reduced to its own 256-colour palette by Pillow's median cut (no
dithering, no randomness) and written without optimisation: same bytes for the same PNGs.
A long run's GIF shows at most MAX_FRAMES checkpoints (`capped`), evenly spaced.
Pillow merges a frame identical to the one before it into that one (adding the durations); the
figures animated here name their step in the title, so every checkpoint keeps its own frame.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

from PIL import Image

from ..common import write_atomic

VERSION = 2
MAX_FRAMES = 60      # a GIF of a long run shows this many checkpoints, evenly spaced


def capped(items: Sequence, most: int = MAX_FRAMES) -> list:
    """At most `most` of `items` (frames, oldest first), evenly spaced, always the first and the
    latest: a GIF of 500 checkpoints would take 7 minutes to play and weigh hundreds of MB."""
    from .common import evenly_spaced
    return [items[i] for i in evenly_spaced(len(items), most)]


def write_gif(frames: Sequence[str | Path], out: str | Path, *, frame_ms: int = 800, last_ms: int = 2500,
              comment: str = "") -> Path:
    """Write `frames` (PNG paths, oldest checkpoint first) as a looping GIF at `out`, atomically.
    Frames of another size than the first are resized to it; `comment` goes into the GIF's
    comment extension (which steps it shows). ValueError when `frames` is empty."""
    if not frames:
        raise ValueError("write_gif needs at least one frame")
    out = Path(out)
    images = []
    size = None
    for f in frames:
        with Image.open(f) as im:
            rgb = im.convert("RGB")
        if size is None:
            size = rgb.size
        elif rgb.size != size:
            rgb = rgb.resize(size, Image.Resampling.LANCZOS)
        images.append(rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
    durations = [frame_ms] * (len(images) - 1) + [last_ms]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=durations,
                   loop=0, optimize=False, disposal=1, **({"comment": comment.encode()} if comment else {}))
    return write_atomic(out, buf.getvalue())
