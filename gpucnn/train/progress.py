"""The progress display of ``fit`` and ``evaluate``.

* ``fit(verbose=1)`` on a terminal: a tqdm bar per epoch, exactly as wide as the terminal
  (:func:`terminal_width`: ``shutil.get_terminal_size``, so ``$COLUMNS`` is honoured; re-read
  at every refresh, so a resized window is followed), showing the running loss, metrics and
  img/s that fit. At the epoch's end the bar's final line shows the loss, the metrics, the
  validation metrics and img/s when they all fit; otherwise the bar is cleared and replaced by
  the Keras-style summary :func:`line` (``Epoch 3/10 - 12.1s - loss: 0.1234 - accuracy: 0.9612
  - val_loss: ... - val_accuracy: ... - 812 img/s``), wrapped at its `` - `` separators so
  no line is wider than the terminal.
* ``fit(verbose=1)`` without a terminal (a log file, CI, a pipe, a notebook): the summary line,
  once per epoch (a bar's carriage returns would be noise there, and it is never nothing).
* ``fit(verbose=2)``: the summary line once per epoch, as Keras (wrapped to the terminal's
  width when the output is one). ``evaluate(verbose=1)`` prints one :func:`line` too.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any, TextIO

__all__ = ["Progress", "fmt_logs", "is_terminal", "line", "postfix", "terminal_width",
           "wrap_parts"]

#: The bar's layout (a known total): ``Epoch 3/10 12/63 |####      | 00:05<00:21, loss=...``.
BAR_FORMAT = "{desc} {n_fmt}/{total_fmt} |{bar}| {elapsed}<{remaining}{postfix}"
#: Indent of the continuation lines of a wrapped summary line.
INDENT = "  "


def _fmt(v: Any) -> str:
    if isinstance(v, float) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") == "f"):
        return f"{float(v):.4f}"
    return str(v)


def fmt_logs(logs: dict) -> str:
    """``"loss: 0.1235 - accuracy: 0.5000"``: floats with four decimals, others as they are."""
    return " - ".join(f"{k}: {_fmt(v)}" for k, v in logs.items())


def postfix(logs: dict, rate: float) -> dict:
    """The progress bar's numbers: ``{name: "0.1235", ..., "img/s": "812"}``."""
    return {**{k: _fmt(v) for k, v in logs.items()}, "img/s": f"{rate:.0f}"}


def terminal_width() -> int:
    """Columns of the terminal (``$COLUMNS`` first, then the terminal itself, 80 when neither
    answers); at least 20."""
    return max(20, shutil.get_terminal_size((80, 24)).columns)


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes, captured output,
    closed streams and objects without ``isatty``)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def wrap_parts(parts: list[str], width: int) -> list[str]:
    """``parts`` joined with `` - `` into lines of at most ``width`` characters, breaking only
    between parts (continuation lines indented by :data:`INDENT`); a part longer than a line
    is cut into pieces."""
    width = max(int(width), len(INDENT) + 1)
    lines: list[str] = []
    cur = ""
    for part in parts:
        if not cur:
            cur = (INDENT if lines else "") + part
        elif len(cur) + 3 + len(part) <= width:
            cur = f"{cur} - {part}"
        else:
            lines.append(cur)
            cur = INDENT + part
        while len(cur) > width:  # only a part wider than a whole line gets cut
            lines.append(cur[:width])
            cur = INDENT + cur[width:]
    if cur:
        lines.append(cur)
    return lines


def line(head: str, dt: float, logs: dict, rate: float | None = None,
         width: int | None = None) -> str:
    """One summary line (``fit``'s epochs without a bar, ``evaluate(verbose=1)``):
    ``"{head} - {dt}s - loss: ... - {rate} img/s"``; with ``width``, wrapped into lines of at
    most that many characters (joined with newlines)."""
    parts = [head, f"{dt:.1f}s", *(f"{k}: {_fmt(v)}" for k, v in logs.items())]
    if rate is not None:
        parts.append(f"{rate:.0f} img/s")
    if width is None:
        return " - ".join(parts)
    return "\n".join(wrap_parts(parts, width))


class Progress:
    """``fit``'s display of one epoch (see the module doc): ``verbose`` 0 (nothing), 1 (a bar
    on a terminal, else one summary line) or 2 (one summary line); ``total`` batches (``None``
    when unknown); ``file`` the stream (default: ``sys.stdout`` at construction)."""

    def __init__(self, verbose: int, epoch: int, epochs: int, total: int | None,
                 file: TextIO | None = None) -> None:
        self.verbose, self.epoch, self.epochs = verbose, epoch, epochs
        self.file = sys.stdout if file is None else file
        self.tty = is_terminal(self.file)
        self.head = f"Epoch {epoch + 1}/{epochs}"
        self.t0 = time.perf_counter()
        self.bar: Any = None
        if verbose == 1 and self.tty:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                desc=self.head,
                unit="batch",
                file=self.file,
                leave=True,
                ncols=terminal_width(),
                # explicit: tqdm's own probe reads a size-less pseudo-terminal as -1 rows
                # and then draws nothing at all
                nrows=max(2, shutil.get_terminal_size((80, 24)).lines),
                bar_format=BAR_FORMAT if total else None,
                mininterval=0.2,
            )

    # ------------------------------------------------------------------ the bar
    def _fits(self, post: dict, width: int) -> bool:
        """Whether the bar's line with ``post`` as its numbers and a bar of tqdm's unsized
        width (10) fits in ``width`` columns."""
        fd = dict(self.bar.format_dict)
        fd.update(ncols=None, postfix=", ".join(f"{k}={v}" for k, v in post.items()))
        return len(self.bar.format_meter(**fd)) <= width

    def _set(self, post: dict, refresh: bool) -> bool:
        """Show as many of ``post``'s numbers (in order) as fit the terminal; True if all."""
        width = terminal_width()
        self.bar.ncols = width
        keys = list(post)
        shown = len(keys)
        while shown and not self._fits({k: post[k] for k in keys[:shown]}, width):
            shown -= 1
        self.bar.set_postfix({k: post[k] for k in keys[:shown]}, refresh=refresh)
        return shown == len(keys)

    def update(self, logs: dict | None, seen: int) -> None:
        """Advance one step; ``logs`` (values just read from the device) refresh the numbers
        shown, ``None`` leaves them (and the rate, only meaningful after a sync) as they are."""
        if self.bar is not None:
            if logs is not None:
                rate = seen / max(time.perf_counter() - self.t0, 1e-9)
                self._set(postfix(logs, rate), refresh=False)
            self.bar.update(1)

    def abort(self) -> None:
        """Close the bar of an epoch that raised (nothing is printed for it)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self, logs: dict, seen: int) -> None:
        """End the epoch: ``logs`` are its final numbers (validation ones included)."""
        dt = time.perf_counter() - self.t0
        rate = seen / max(dt, 1e-9)
        if self.verbose == 0:
            return
        if self.bar is not None:
            fits = self._set(postfix(logs, rate), refresh=False)
            bar, self.bar = self.bar, None
            if fits:
                bar.close()  # the bar's final line holds every number
                return
            bar.leave = False  # too narrow: the summary line replaces the bar
            bar.close()
        width = terminal_width() if self.tty else None
        print(line(self.head, dt, logs, rate, width), file=self.file, flush=True)
