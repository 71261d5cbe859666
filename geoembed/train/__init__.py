"""Train a compact CNN on a field and labels, and export it for ``geoembed infer``.

PyTorch (extra ``train``) is imported only when :func:`train_cnn` runs.
"""

from geoembed.train.cnn import TrainResult, train_cnn

__all__ = ["TrainResult", "train_cnn"]
