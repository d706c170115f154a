"""The algorithms of the ``ctstfm`` provider, one module each."""


def all_algorithms():
    from .assess import AssessAlgorithm
    from .fuse import FuseAlgorithm
    from .fuse_series import FuseSeriesAlgorithm
    from .starfm import StarfmAlgorithm
    from .temporal_difference import TemporalDifferenceAlgorithm
    from .train import TrainAlgorithm

    return [
        FuseAlgorithm(), FuseSeriesAlgorithm(), TrainAlgorithm(), AssessAlgorithm(), TemporalDifferenceAlgorithm(),
        StarfmAlgorithm(),
    ]
