"""The algorithms of the ``ctstfm`` provider, one module each."""


def all_algorithms():
    from .fuse import FuseAlgorithm
    from .train import TrainAlgorithm

    return [FuseAlgorithm(), TrainAlgorithm()]
