"""The progress display of ``fit`` and ``evaluate``: a tqdm bar per epoch (``verbose=1``:
running loss, metrics and img/s, refreshed at each host read) or one summary :func:`line`
(``fit(verbose=2)``'s epochs, ``evaluate(verbose=1)``).
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress", "fmt_logs", "line", "postfix"]


def fmt_logs(logs: dict) -> str:
    return " - ".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}"
                      for k, v in logs.items())


def postfix(logs: dict, rate: float) -> dict:
    """The progress bar's numbers."""
    return {**{k: f"{v:.4f}" for k, v in logs.items()}, "img/s": f"{rate:.0f}"}


def line(head: str, dt: float, logs: dict, rate: float | None = None) -> str:
    """One summary line (``fit(verbose=2)``'s epochs, ``evaluate(verbose=1)``)."""
    text = f"{head} - {dt:.1f}s - {fmt_logs(logs)}"
    return text if rate is None else f"{text} - {rate:.0f} img/s"


class Progress:
    """``fit``'s progress display: a bar per epoch (``verbose=1``) or one :func:`line`."""

    def __init__(self, verbose: int, epoch: int, epochs: int, total: int | None) -> None:
        self.verbose, self.epoch, self.epochs = verbose, epoch, epochs
        self.t0 = time.perf_counter()
        self.bar = None
        if verbose == 1:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                desc=f"Epoch {epoch + 1}/{epochs}",
                unit="batch",
                file=sys.stdout,
                leave=True,
                dynamic_ncols=True,
                mininterval=0.2,
            )

    def update(self, logs: dict | None, seen: int) -> None:
        """Advance one step; ``logs`` (values just read from the device) refresh the numbers
        shown, ``None`` leaves them (and the rate, only meaningful after a sync) as they are."""
        if self.bar is not None:
            if logs is not None:
                rate = seen / max(time.perf_counter() - self.t0, 1e-9)
                self.bar.set_postfix(postfix(logs, rate), refresh=False)
            self.bar.update(1)

    def abort(self) -> None:
        """Close the bar of an epoch that raised (nothing is printed for it)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self, logs: dict, seen: int) -> None:
        dt = time.perf_counter() - self.t0
        rate = seen / max(dt, 1e-9)
        if self.bar is not None:
            self.bar.set_postfix(postfix(logs, rate), refresh=True)
            self.bar.close()
        elif self.verbose == 2:
            print(line(f"Epoch {self.epoch + 1}/{self.epochs}", dt, logs, rate),
                  file=sys.stdout, flush=True)
