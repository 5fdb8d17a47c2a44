"""Optuna's RDB storage with trial claims that hold on SQLite.

A worker claims an enqueued trial by reading that it is WAITING and setting it RUNNING. PostgreSQL
makes the two one step (`SELECT ... FOR UPDATE`); SQLite ignores that clause, so two local workers
starting together both read WAITING and both run the same start point (optuna/optuna#4621; it
failed CI once). SQLite workers share a machine, so a file lock beside the database makes the claim
atomic there.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

import optuna


class ClaimLockedStorage(optuna.storages.RDBStorage):
    """RDBStorage whose claims of waiting trials (state set to RUNNING) hold `lock`, a file, exclusively."""

    def __init__(self, url: str, lock: Path, **kwargs):
        self.lock = Path(lock)
        super().__init__(url, **kwargs)

    def set_trial_state_values(self, trial_id, state, values=None) -> bool:
        if state != optuna.trial.TrialState.RUNNING:
            return super().set_trial_state_values(trial_id, state, values)
        with open(self.lock, "a") as f:  # released on close, after the claim's transaction committed
            fcntl.flock(f, fcntl.LOCK_EX)
            return super().set_trial_state_values(trial_id, state, values)
