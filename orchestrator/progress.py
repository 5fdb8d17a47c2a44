"""A dependency-free progress bar: live on a terminal, one line per epoch in logs."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, epochs: int, steps: int, enabled: bool = True, stream=None):
        self.epochs, self.steps, self.enabled = epochs, steps, enabled
        self.stream = stream or sys.stderr
        self.live = enabled and self.stream.isatty()
        self._last = 0.0

    def update(self, epoch: int, step: int, loss: float, images_per_s: float) -> None:
        now = time.monotonic()
        if not self.live or (now - self._last < 0.2 and step < self.steps):
            return
        self._last = now
        filled = int(20 * step / self.steps)
        self.stream.write(f"\repoch {epoch + 1}/{self.epochs} [{'#' * filled}{'.' * (20 - filled)}] "
                          f"{step}/{self.steps} loss {loss:.3f} {images_per_s:,.0f} img/s ")
        self.stream.flush()

    def epoch_done(self, row: dict) -> None:
        if not self.enabled:
            return
        line = (f"epoch {row['epoch']}/{self.epochs} loss {row['train_loss']:.3f} "
                f"train {100 * row['train_acc']:.2f}%")
        if "eval_acc" in row:
            line += f" eval {100 * row['eval_acc']:.2f}%"
        line += f" {row['seconds']:.0f}s {row['images_per_s']:,.0f} img/s"
        self.stream.write(("\r" if self.live else "") + line + " " * 10 + "\n")
        self.stream.flush()
