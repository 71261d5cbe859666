"""Train a compact CNN on a field and labels, and export it for ``geoembed infer``.

PyTorch (extra ``train``) is imported only when :func:`train_cnn` runs.
:func:`train_cnn` is the job (:mod:`geoembed.jobs.train`: open, check outputs, fit,
export together); :func:`~geoembed.train.cnn.fit_cnn` trains without writing.
"""

from geoembed.train.cnn import TrainResult, fit_cnn

__all__ = ["TrainResult", "fit_cnn", "train_cnn"]


def __getattr__(name: str) -> object:
    if name == "train_cnn":  # the job lives in geoembed.jobs.train (it writes the model)
        from geoembed.jobs.train import train_cnn

        return train_cnn
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
