"""The sweep's hooks into Ray Tune: TPE that starts from a ledger, and the callback that
writes the ledger. Kept apart because they subclass Ray Tune's classes (importing Ray)."""

from __future__ import annotations

from typing import Any

from ray.tune import Callback
from ray.tune.search.optuna import OptunaSearch

from openmed_ray.hpo.ledger import HISTORY, Ledger, searched_params, trial_row


class ReplayingOptunaSearch(OptunaSearch):
    """OptunaSearch (TPE) whose study starts with earlier trials, told to Optuna the way Tune
    tells it a trial that ran here: the last dev F1 reported, each epoch's as intermediates."""

    def __init__(self, *, replay: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._replay = replay

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        if not super().set_search_properties(metric, mode, config, **spec):
            return False
        for row in self._replay:
            history = row[HISTORY]
            self.add_evaluated_point(
                {k: v for k, v in row["params"].items() if k in self._space},
                history[-1] if history else None,
                error=row["status"] == "error" or not history,
                intermediate_values=history or None,
            )
        return True


class LedgerCallback(Callback):
    """Writes each trial to the ledger the moment it ends (completed, pruned or failed).

    A trial's dev F1 history is the one its last result carries (restored with its
    checkpoint), not the results heard here: after a resume this driver hears only the
    epochs run since."""

    def __init__(self, ledger: Ledger, max_epochs: int) -> None:
        self.ledger = ledger
        self.max_epochs = max_epochs

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._record(trial, None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._record(trial, str(trial.error_msg or "the trial failed"))

    def _record(self, trial, error: str | None) -> None:
        last = trial.last_result or {}
        self.ledger.record(
            trial_row(
                trial.trial_id,
                searched_params(trial.config),
                last.get(HISTORY, []),
                seconds=last.get("time_total_s", 0.0),
                stopped_early=bool(last.get("stopped_early")),
                error=error,
                max_epochs=self.max_epochs,
            )
        )
