"""The progress output of ``fit``: the bar fits the terminal and its epoch's final line (or the
summary line replacing it) shows loss, metrics and validation metrics; without a terminal one
line per epoch; ``verbose=2`` one line per epoch (Keras)."""

from __future__ import annotations

import io
import re
import sys

import numpy as np
import pytest

from gpucnn import layers as L
from gpucnn.model import Sequential
from gpucnn.train import progress


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal (its width comes from ``$COLUMNS``)."""

    def isatty(self) -> bool:
        return True


def screen(text: str) -> list[str]:
    """What a terminal shows after ``text``: each carriage return goes back to column 0 and the
    characters after it overwrite the line (trailing blanks dropped, empty lines kept out)."""
    shown = []
    for row in text.split("\n"):
        cells: list[str] = []
        col = 0
        for seg_i, seg in enumerate(row.split("\r")):
            if seg_i:
                col = 0
            for ch in seg:
                if col < len(cells):
                    cells[col] = ch
                else:
                    cells.append(ch)
                col += 1
        vis = "".join(cells).rstrip()
        if vis:
            shown.append(vis)
    return shown


def widest(text: str) -> int:
    """The longest run of characters the stream ever writes on one terminal row."""
    return max(len(seg) for seg in re.split(r"[\r\n]", text))


def _data(n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, (x[:, 0] > x[:, 1]).astype(np.int64)


def _model() -> Sequential:
    m = Sequential([L.Dense(8, activation="relu", input_shape=(6,)), L.Dense(2)])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
              lr=0.01)
    return m


def _fit(verbose: int, epochs: int = 2, **kw) -> None:
    x, y = _data()
    _model().fit(x, y, batch_size=16, epochs=epochs, verbose=verbose,
                 validation_data=(x[:16], y[:16]), **kw)


KEYS = ("loss:", "accuracy:", "val_loss:", "val_accuracy:")


def _epoch_blocks(lines: list[str]) -> list[str]:
    """The visible lines grouped per epoch (a wrapped summary line's continuations joined)."""
    blocks: list[str] = []
    for ln in lines:
        if ln.startswith("Epoch "):
            blocks.append(ln)
        else:
            assert blocks, lines
            blocks[-1] += " " + ln.strip()
    return blocks


# ----------------------------------------------------------------------------- no terminal


@pytest.mark.parametrize("verbose", [1, 2])
def test_without_a_terminal_one_line_per_epoch(verbose, capsys):
    _fit(verbose, epochs=3)
    out = capsys.readouterr().out
    assert "\r" not in out  # no bar redraws in a log
    lines = out.splitlines()
    assert len(lines) == 3, out
    for i, ln in enumerate(lines):
        assert ln.startswith(f"Epoch {i + 1}/3 - ") and ln.endswith(" img/s"), ln
        for key in KEYS:
            assert key in ln, (key, ln)


def test_without_a_terminal_at_the_file_descriptor(capfd):
    """The same through a real (non-terminal) file descriptor, not only Python's capture."""
    _fit(1, epochs=1)
    out = capfd.readouterr().out
    assert "\r" not in out and len(out.splitlines()) == 1
    assert all(k in out for k in KEYS)


def test_verbose_0_prints_nothing_even_on_a_terminal(monkeypatch):
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", term)
    _fit(0)
    assert term.getvalue() == ""


# ----------------------------------------------------------------------------- a terminal


def test_80_columns_final_lines_show_every_number_within_the_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", term)
    _fit(1, epochs=2)
    out = term.getvalue()
    assert "\r" in out  # a live bar was drawn
    assert widest(out) <= 80
    blocks = _epoch_blocks(screen(out))
    assert len(blocks) == 2, screen(out)
    for i, block in enumerate(blocks):
        assert block.startswith(f"Epoch {i + 1}/2")
        for key in KEYS:
            assert key in block, (key, block)
        assert "img/s" in block


def test_a_real_pseudo_terminal_shows_the_bar(monkeypatch):
    """Through a pty of unknown size (as under ``script`` or some CI runners): tqdm's own
    size probe reads -1 rows there and would draw no bar; the bar is drawn and fits."""
    pty = pytest.importorskip("pty")
    import os

    master, slave = pty.openpty()
    stream = open(slave, "w", encoding="utf-8", closefd=True)
    try:
        monkeypatch.setenv("COLUMNS", "80")
        monkeypatch.setattr(sys, "stdout", stream)
        _fit(1, epochs=1)
        stream.flush()
        os.set_blocking(master, False)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        monkeypatch.undo()
        stream.close()
        os.close(master)
    out = b"".join(chunks).decode("utf-8", "replace")
    assert "Epoch 1/1 0/3 |" in out  # the live bar
    assert widest(out) <= 80
    block = " ".join(screen(out))
    assert all(k in block for k in KEYS), block


def test_wide_terminal_keeps_the_bar_with_every_number(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", term)
    _fit(1, epochs=1)
    out = term.getvalue()
    assert widest(out) <= 200
    shown = screen(out)
    assert len(shown) == 1, shown
    bar = shown[0]
    assert bar.startswith("Epoch 1/1 3/3 |") and "img/s=" in bar
    for key in ("loss=", "accuracy=", "val_loss=", "val_accuracy="):
        assert key in bar, (key, bar)


@pytest.mark.parametrize("columns", [20, 33, 57])
def test_narrow_terminals_never_overflow(columns, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(columns))
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", term)
    _fit(1, epochs=1)
    out = term.getvalue()
    assert widest(out) <= columns
    # the numbers survive, wrapped (a part wider than the line is cut into pieces)
    flat = "".join(ln.strip() for ln in screen(out))
    for key in ("loss:", "val_accuracy:"):
        assert key in flat, flat


def test_verbose_2_on_a_terminal_wraps_at_the_separators(monkeypatch):
    monkeypatch.setenv("COLUMNS", "50")
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", term)
    _fit(2, epochs=2)
    out = term.getvalue()
    assert "\r" not in out and widest(out) <= 50
    lines = out.splitlines()
    assert len(lines) > 2  # wrapped
    blocks = _epoch_blocks(lines)
    assert len(blocks) == 2
    for block in blocks:
        for key in KEYS:
            assert key in block
    for ln in lines:  # whole "name: value" items, never cut mid-item at this width
        assert ln.startswith(("Epoch ", progress.INDENT))
        assert re.fullmatch(r"(Epoch \d/\d|\s+\S.*)( - .+)*", ln), ln


def test_unknown_length_loader_on_a_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    term = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", term)
    x, y = _data(32)

    def batches():  # a generator: no len(), so the bar has no total
        for i in range(0, 32, 16):
            yield x[i:i + 16], y[i:i + 16]

    class Loader:
        def __iter__(self):
            return batches()

    _model().fit(Loader(), epochs=1, verbose=1)
    out = term.getvalue()
    assert widest(out) <= 80
    final = screen(out)[-1]
    assert final.startswith("Epoch 1/1") and "loss" in final and "accuracy" in final


def test_the_terminal_is_followed_when_it_is_resized(monkeypatch):
    monkeypatch.setenv("COLUMNS", "150")
    term = FakeTerminal()
    p = progress.Progress(1, 0, 1, 4, file=term)
    p.update({"loss": 0.5, "accuracy": 0.5}, 16)
    monkeypatch.setenv("COLUMNS", "40")
    for _ in range(3):
        p.update({"loss": 0.25, "accuracy": 0.75}, 32)
    p.close({"loss": 0.25, "accuracy": 0.75, "val_loss": 0.5, "val_accuracy": 0.5}, 64)
    after = term.getvalue()
    assert all(len(ln) <= 40 for ln in screen(after)[-4:])
    assert "val_accuracy: 0.5000" in " ".join(screen(after))


# ----------------------------------------------------------------------------- the pieces


def test_terminal_width_honours_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "123")
    assert progress.terminal_width() == 123
    monkeypatch.setenv("COLUMNS", "5")
    assert progress.terminal_width() == 20  # never narrower than 20


def test_is_terminal():
    assert progress.is_terminal(FakeTerminal())
    assert not progress.is_terminal(io.StringIO())
    assert not progress.is_terminal(object())
    closed = io.StringIO()
    closed.close()  # isatty() raises ValueError
    assert not progress.is_terminal(closed)


def test_line_and_wrapping():
    logs = {"loss": 0.123456, "accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.25}
    flat = progress.line("Epoch 3/10", 12.04, logs, 811.6)
    assert flat == ("Epoch 3/10 - 12.0s - loss: 0.1235 - accuracy: 0.5000 - val_loss: 1.0000 "
                    "- val_accuracy: 0.2500 - 812 img/s")
    assert progress.line("Epoch 3/10", 12.04, logs, 811.6, width=200) == flat
    wrapped = progress.line("Epoch 3/10", 12.04, logs, 811.6, width=60).split("\n")
    assert wrapped == ["Epoch 3/10 - 12.0s - loss: 0.1235 - accuracy: 0.5000",
                       "  val_loss: 1.0000 - val_accuracy: 0.2500 - 812 img/s"]
    # one part wider than the line is cut, nothing is lost
    pieces = progress.wrap_parts(["Epoch 1/1", "x" * 50], 20)
    assert all(len(p) <= 20 for p in pieces)
    assert "".join(p.strip() for p in pieces[1:]) == "x" * 50
    assert progress.wrap_parts([], 30) == []
    # NumPy scalars format like floats
    assert progress.fmt_logs({"loss": np.float32(0.5)}) == "loss: 0.5000"
