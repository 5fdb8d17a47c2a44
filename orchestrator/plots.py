"""Figures (matplotlib, headless): every plot states the command that made it in its footer."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, footer: str | None) -> Path:
    if footer:
        fig.text(0.01, -0.01, footer, fontsize=6, color="0.4", ha="left", va="top")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def accuracy_vs_ratio(rows: list[dict], path, title: str, footer: str | None = None) -> Path:
    """One line per method: accuracy (%) against the pruning ratio."""
    fig, ax = _pyplot().subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["ratio"], 100 * r["acc"]) for r in rows if r["method"] == method)
        ax.plot(*zip(*pts), marker="o", ms=3, label=method)
    ax.set(xlabel="pruning ratio (fraction of weights removed)", ylabel="accuracy (%)", title=title, ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path, footer)


def sensitivity_plot(table: dict, path, title: str, footer: str | None = None) -> Path:
    """Li et al.'s figure: accuracy of the net with one group pruned, per group, against the ratio."""
    names = list(table["groups"])
    stages = sorted({n.split(".")[0] for n in names})
    fig, axes = _pyplot().subplots(1, len(stages), figsize=(4.2 * len(stages), 3.6), sharey=True, squeeze=False)
    for ax, stage in zip(axes[0], stages):
        for name in [n for n in names if n.split(".")[0] == stage]:
            pts = sorted((float(r), 100 * a) for r, a in table["groups"][name].items())
            ax.plot(*zip(*pts), marker=".", lw=1, label=name.replace(".conv1", ""))
        ax.axhline(100 * table["baseline"], color="k", ls="--", lw=0.8)
        ax.set(title=stage, xlabel="filters pruned away (fraction)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=5, ncol=2)
    axes[0][0].set_ylabel("accuracy (%)")
    fig.suptitle(title)
    return _save(fig, path, footer)
