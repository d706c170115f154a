"""Training and validation samples, and how the series is split between them.

For a target date T1 the input is (coarse at T1, fine at a reference date T0) and
the label is fine at T1; :func:`choose_references` picks the ``references``
nearest other dates. :func:`split_series` is the paper's chronological split (the
earliest dates train, the latest ``validation_fraction`` validate) with a spatial
fallback for short series: the bottom rows of every date validate and no training
patch touches them. :func:`split_scenes` splits every scene; :func:`pooled_split`
stands for several.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CtstfmError, OptionError
from .series import Sample

MIN_SPATIAL_VALIDATION_ROWS = 8


def choose_references(dates, targets, candidates, references=1, max_gap_days=None):
    """Samples for each target index: its ``references`` nearest candidate dates.

    ``dates`` is the list of all dates; ``targets`` and ``candidates`` are index
    lists. A target is never its own reference; ties in distance go to the
    earlier date. Candidates more than ``max_gap_days`` away are not used. Returns
    a list of :class:`Sample`, in target order.
    """
    samples = []
    for target in targets:
        others = [index for index in candidates if index != target]
        gaps = [(abs((dates[index] - dates[target]).days), dates[index], index) for index in others]
        if max_gap_days:
            gaps = [gap for gap in gaps if gap[0] <= max_gap_days]
        gaps.sort()
        for _, _, index in gaps[: max(1, int(references))]:
            samples.append(Sample(target, index))
    return samples


def _span(dates, indices, what):
    if len(indices) == 1:
        return f"1 {what} date ({dates[indices[0]]})"
    return f"{len(indices)} {what} dates ({dates[indices[0]]} to {dates[indices[-1]]})"


@dataclass
class Split:
    """How the series is divided into training and validation."""

    mode: str  # "dates" or "spatial"
    train_dates: list
    validation_dates: list
    train_samples: list
    validation_samples: list
    validation_rows: int = 0  # spatial mode: rows at the bottom kept for validation
    note: str = ""


def split_series(dates, height, *, validation_fraction=0.2, references=1, max_gap_days=None, patch_size=256):
    """The chronological split of the paper, or the spatial fallback.

    ``dates`` must be sorted and unique; ``height`` is the fine rasters' row count.
    """
    if not 0.0 < float(validation_fraction) < 1.0:
        raise OptionError(
            f"The validation fraction {{validation_fraction}} is {validation_fraction}; give a fraction between 0 "
            "and 1, e.g. 0.2.", "validation_fraction",
        )
    count = len(dates)
    everything = list(range(count))
    n_val = max(1, int(round(count * validation_fraction)))
    if count >= 4 and count - n_val >= 2:
        train = everything[: count - n_val]
        val = everything[count - n_val:]
        train_samples = choose_references(dates, train, train, references, max_gap_days)
        val_samples = choose_references(dates, val, everything, references, max_gap_days)
        if train_samples and val_samples:
            return Split(
                "dates",
                [dates[i] for i in train],
                [dates[i] for i in val],
                train_samples,
                val_samples,
                note=f"Chronological split: {_span(dates, train, 'training')}, {_span(dates, val, 'validation')}.",
            )
        reason = f"no reference within {max_gap_days} days on one side of the chronological split"
    else:
        reason = f"only {count} dates"
    samples = choose_references(dates, everything, everything, references, max_gap_days)
    if not samples:
        raise OptionError(
            f"No date has another date within {max_gap_days} days (the farthest reference, {{max_gap_days}}); raise "
            "{max_gap_days} or set it to 0 (no limit).", "max_gap_days",
        )
    rows = int(round(height * validation_fraction))
    rows = min(max(rows, MIN_SPATIAL_VALIDATION_ROWS), height // 2)
    if rows < 1 or height - rows < 8:
        raise CtstfmError(
            f"The rasters are {height} rows high: too small to hold out a validation block with {count} dates; "
            "give at least four dates or larger rasters."
        )
    return Split(
        "spatial",
        [dates[i] for i in sorted({s.target for s in samples})],
        [dates[i] for i in sorted({s.target for s in samples})],
        samples,
        samples,
        validation_rows=rows,
        note=(
            f"Validation on a held-out spatial block ({reason}; a chronological split needs at least four dates "
            f"with two left for training): the bottom {rows} of {height} rows of every date validate, "
            "and no training patch touches them."
        ),
    )


def split_scenes(scenes, *, validation_fraction=0.2, references=1, max_gap_days=None, patch_size=256):
    """:func:`split_series` for every scene, its samples re-indexed into the whole series; sets ``scene.split``."""
    for scene in scenes:
        try:
            split = split_series(
                scene.dates,
                scene.info.height,
                validation_fraction=validation_fraction,
                references=references,
                max_gap_days=max_gap_days,
                patch_size=patch_size,
            )
        except CtstfmError as exc:
            if not scene.label:
                raise
            if isinstance(exc, OptionError):
                label = scene.label.replace("{", "{{").replace("}", "}}")
                raise OptionError(f"Scene '{label}': {exc.template}", *exc.options) from None
            raise CtstfmError(f"Scene '{scene.label}': {exc}") from None
        shift = scene.first
        split.train_samples = [Sample(s.target + shift, s.reference + shift) for s in split.train_samples]
        split.validation_samples = [Sample(s.target + shift, s.reference + shift) for s in split.validation_samples]
        scene.split = split
    return scenes


def pooled_split(scenes):
    """One :class:`Split` standing for several scenes: samples pooled, dates merged
    (sorted, each once), notes joined, mode "dates", "spatial" or "mixed"."""
    modes = {scene.split.mode for scene in scenes}
    return Split(
        modes.pop() if len(modes) == 1 else "mixed",
        sorted({d for scene in scenes for d in scene.split.train_dates}),
        sorted({d for scene in scenes for d in scene.split.validation_dates}),
        [s for scene in scenes for s in scene.split.train_samples],
        [s for scene in scenes for s in scene.split.validation_samples],
        validation_rows=max(scene.split.validation_rows for scene in scenes),
        note=" ".join(f"Scene '{scene.label}': {scene.split.note}" for scene in scenes),
    )

