"""The study's sampler: Optuna's (NSGA-II, TPE, GP, grid, random) wrapped the way Optuna's own wrappers are
(`PartialFixedSampler`: a `BaseSampler` that delegates), with per-trial seeds and start-only values."""

from __future__ import annotations

import random

from optuna.samplers import BaseSampler


class SearchSampler(BaseSampler):
    """`inner` with two behaviours of its own.

    - Per-trial seeds: `inner`'s random state is reseeded from (seed, trial number) before every trial.
      Workers of one study share the trial-number sequence but not their samplers' states: seeded alike, two
      workers starting together proposed the same configurations. Per-trial seeds keep one worker's study
      reproducible and give every worker's trial its own draw. Optuna has no public way to seed a sampler
      again, so its `LazyRandomState`s (`_rng`, and those of the inner random samplers that TPE and GP draw
      their start-up from) are reseeded in place.
    - Start-only values (`start_values`, per parameter: what only start points run, e.g. a long fine-tune at
      one corner): a value the sampler draws or breeds from such a parent is redrawn among the others.
    """

    def __init__(self, inner: BaseSampler, seed: int, start_values: dict[str, list] | None = None):
        self.inner, self.seed, self.start_values = inner, seed, start_values or {}

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._redrawn(trial, self.inner.sample_relative(study, trial, search_space), search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        value = self.inner.sample_independent(study, trial, param_name, param_distribution)
        return self._redrawn(trial, {param_name: value}, {param_name: param_distribution})[param_name]

    def before_trial(self, study, trial):
        for k, obj in enumerate((self.inner, getattr(self.inner, "_random_sampler", None),
                                 getattr(self.inner, "_independent_sampler", None))):
            rng = getattr(obj, "_rng", None)
            if rng is not None and hasattr(rng, "rng"):  # optuna's LazyRandomState: reseeded in place
                rng.rng.seed((self.seed * 1_000_003 + trial.number * 2 + k) % 2**32)
        self.inner.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self):
        self.inner.reseed_rng()

    def _redrawn(self, trial, params: dict, space: dict) -> dict:
        for name, v in params.items():
            if v in self.start_values.get(name, []) and name in space:
                rng = random.Random(f"{self.seed}/{trial.number}/{name}")
                params[name] = rng.choice([c for c in space[name].choices if c not in self.start_values[name]])
        return params
