"""Training progress: a tqdm bar per epoch on a terminal, and one line per epoch in every case (logs)."""

from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    def __init__(self, epochs: int, steps: int, enabled: bool = True, stream=None):
        self.epochs, self.steps, self.enabled = epochs, steps, enabled
        self.stream = stream or sys.stderr
        self.live = enabled and self.stream.isatty()
        self.bar: tqdm | None = None

    def update(self, epoch: int, step: int, loss: float, images_per_s: float) -> None:
        if not self.live:
            return
        if self.bar is None:
            self.bar = tqdm(total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}", file=self.stream,
                            leave=False, unit="step", dynamic_ncols=True)
        self.bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{images_per_s:,.0f}", refresh=False)
        self.bar.update(step - self.bar.n)

    def epoch_done(self, row: dict) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if not self.enabled:
            return
        line = (f"epoch {row['epoch']}/{self.epochs} loss {row['train_loss']:.3f} "
                f"train {100 * row['train_acc']:.2f}%")
        if "eval_acc" in row:
            line += f" eval {100 * row['eval_acc']:.2f}%"
        line += f" {row['seconds']:.0f}s {row['images_per_s']:,.0f} img/s"
        self.stream.write(line + "\n")
        self.stream.flush()
