"""geoembed."""
from geoembed._version import __version__
