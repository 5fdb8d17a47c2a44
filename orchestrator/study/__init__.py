"""Studies: Optuna multi-objective searches over pipelines, tracked in MLflow, exported as Pareto fronts."""

from .space import SearchSpace, load_space
from .runner import DEFAULT_STORAGE, open_study, run_study, status

__all__ = ["DEFAULT_STORAGE", "SearchSpace", "load_space", "open_study", "run_study", "status"]
