"""Dask clients for geoembed jobs: local processes, an existing scheduler, or Kubernetes.

Library functions never create clients; the CLI (and users) call :func:`dask_client`.
The word "cluster" in geoembed means KMeans; here we speak of *schedulers*.
"""

from geoembed.runtime.client import dask_client, describe_scheduler
from geoembed.runtime.progress import compute
from geoembed.runtime.threads import ThreadPolicy

__all__ = ["ThreadPolicy", "compute", "dask_client", "describe_scheduler"]
