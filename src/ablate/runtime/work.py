"""One study as a worker holds it: the spec rebuilt from the storage, its MLflow places, and the trial-attr calls."""

from __future__ import annotations

import logging
import os
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from ablate.errors import AblateError
from ablate.runtime.optuna_internals import cached_storage, study_id, trial_id
from ablate.runtime.sampling import pruner_for, sampler_for
from ablate.runtime.storage import retry
from ablate.runtime.studies import StudyNotFoundError, check_backend
from ablate.spec.attributes import ERROR_ATTR, PARENT_RUN_ATTR, SPEC_ATTR
from ablate.spec.references import check_builder
from ablate.spec.study_spec import StudySpec
from ablate.tracking.environment import environment_tags
from ablate.tracking.tracker import Tracker

log = logging.getLogger(__name__)


class NotAnAblateStudyError(AblateError):
    """A study in the storage that `ablate submit` did not make (it holds no study spec)."""


def worker_id() -> str:
    """How this process appears in trials and `ablate status`: host and process id.

    A child of a recycling `ablate worker` reports its parent's (from $ABLATE_WORKER_ID), so the
    worker keeps one id however many processes run its trials.
    """
    return os.environ.get("ABLATE_WORKER_ID") or f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class StudyWork:
    """One study as a worker runs it: the spec rebuilt from the storage, and its MLflow places."""

    study: optuna.Study
    storage: RDBStorage
    spec: StudySpec
    tracker: Tracker
    experiment_id: str
    parent_run_id: str
    tags: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def cached(self) -> BaseStorage:
        """The storage as the Study sees it (`optuna_internals.cached_storage`): trials are read and popped through it."""
        return cached_storage(self.study)

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        """The study's trials, read again from the storage (retried while it is unreachable)."""
        loaded_as = study_id(self.study)  # the id the Study itself was loaded with
        return retry(
            lambda: self.cached.get_all_trials(loaded_as, deepcopy=False, states=states), what="read the trials"
        )


def attach(name: str, storage: RDBStorage, tracker: Tracker) -> StudyWork:
    """Load a submitted study and everything a worker needs for it from the storage alone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            study = retry(lambda: optuna.load_study(study_name=name, storage=storage), what="load the study")
        except KeyError:
            known = ", ".join(s.study_name for s in storage.get_all_studies()) or "none"
            raise StudyNotFoundError(f"no study {name!r} in the storage; known studies: {known}") from None
    attrs = study.user_attrs
    if SPEC_ATTR not in attrs:
        raise NotAnAblateStudyError(
            f"study {name!r} holds no ablate study spec (user attr {SPEC_ATTR!r}); submit it with `ablate submit`"
        )
    spec = StudySpec.model_validate(attrs[SPEC_ATTR])
    check_backend(study, spec)  # a worker on another backend than the study's refuses it
    check_builder(spec.model)  # a custom model's builder: this machine's copy must be the study's
    if spec.engine != "optuna":
        raise NotAnAblateStudyError(
            f"study {name!r} runs on engine {spec.engine}, whose trials come from its own tuner in one "
            "process: run it with `ablate run`, not with workers"
        )
    study.pruner = pruner_for(spec)  # load_study would bring Optuna's default median pruner
    study.sampler = sampler_for(spec, trials_so_far=len(retry(lambda: study.get_trials(deepcopy=False), what="read the trials")))
    experiment_id = tracker.experiment_id(spec.experiment)
    parent = attrs.get(PARENT_RUN_ATTR)
    if not parent or tracker.find_parent(experiment_id, spec.name) != parent:
        # Submitted against another tracking store (or none): this store gets its own parent run.
        parent = tracker.find_parent(experiment_id, spec.name) or tracker.parent_run(
            experiment_id, spec.name, environment_tags()
        )
    return StudyWork(study=study, storage=storage, spec=spec, tracker=tracker, experiment_id=experiment_id, parent_run_id=parent)


def _skip(work: StudyWork, trial: optuna.Trial, reason: str) -> None:
    _attr_setter(work, trial_id(trial))(ERROR_ATTR, reason)
    retry(lambda: work.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True), what="tell")
    log.warning("trial %d of %s %s", trial.number, work.name, reason)


def _attr_setter(work: StudyWork, trial_id: int) -> Callable[[str, Any], None]:
    def set_attr(key: str, value: Any) -> None:
        retry(lambda: work.cached.set_trial_user_attr(trial_id, key, value), what=f"set {key}")

    return set_attr
