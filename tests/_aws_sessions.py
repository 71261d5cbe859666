"""Count the boto3 credential sessions rasterio builds (AWS keys set in the environment)."""

from __future__ import annotations

import pytest


def count_aws_sessions(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Set fake AWS keys and return the list every new ``AWSSession`` is appended to."""
    import rasterio.session

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    made: list[object] = []
    real = rasterio.session.AWSSession.__init__

    def counting(self: object, *args: object, **kwargs: object) -> None:
        made.append(self)
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(rasterio.session.AWSSession, "__init__", counting)
    return made
