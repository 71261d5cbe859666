"""``geoembed clean URL``: list, and with ``--delete`` remove, stale temporaries in a bucket."""

from __future__ import annotations

from typing import Any

import click

from geoembed.cli._options import echo_json, json_option


@click.command()
@click.argument("prefix")
@click.option(
    "--older-than",
    default="6h",
    show_default=True,
    help="Age (s, m, h, d, w: 30m, 1d) after which a temporary none of whose objects was "
    "written since is taken for the leftover of a killed run.",
)
@click.option(
    "--delete",
    is_flag=True,
    help="Remove the stale temporaries; without it nothing is changed (dry run).",
)
@json_option
def clean(prefix: str, older_than: str, delete: bool, as_json: bool) -> None:
    """List the temporaries that killed geoembed runs left under PREFIX (gs:// or s3://).

    Only objects that geoembed marked as its own are considered: names holding
    ".geoembed-tmp-" (staged outputs, COG parts, resumable work) and the NAME.partial
    stores of write_zarr whose metadata carry geoembed's version. A temporary is stale
    when none of its objects was written for --older-than (or its process, on this host,
    is gone). Nothing is removed without --delete; a later --resume cannot use what was
    removed. Every write to a target already removes that target's stale temporaries.
    """
    from datetime import UTC, datetime

    from geoembed._cloud import is_url
    from geoembed.export.remote import remote_remove
    from geoembed.export.remote_sweep import parse_age, remote_temporaries

    if not is_url(prefix) or prefix.split("://", 1)[0] not in ("gs", "gcs", "s3"):
        raise click.BadParameter(
            f"{prefix!r} is not a gs:// or s3:// URL. For a local directory, "
            "`geoembed verify DIR` lists the temporaries of killed runs (the next run "
            "writing there removes them).",
            param_hint="PREFIX",
        )
    try:
        age = parse_age(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from exc
    found = remote_temporaries(prefix, older_than=age)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for tmp in found:
        removed = False
        if delete and tmp.stale:
            remote_remove(tmp.url)
            removed = True
        rows.append(
            {
                "url": tmp.url,
                "target": tmp.target,
                "objects": tmp.objects,
                "bytes": tmp.nbytes,
                "age_s": None if tmp.modified is None else (now - tmp.modified).total_seconds(),
                "stale": tmp.stale,
                "resumable": tmp.resumable,
                "removed": removed,
            }
        )
    if as_json:
        echo_json({"prefix": prefix, "older_than_s": age.total_seconds(), "temporaries": rows})
        return
    for row in rows:
        age_s = row["age_s"]
        shown = "?" if age_s is None else f"{age_s / 3600:.1f} h"
        state = "removed" if row["removed"] else ("stale" if row["stale"] else "recent, kept")
        click.echo(
            f"{row['url']}  ({row['objects']} objects, {row['bytes']} bytes, {shown} old): {state}"
        )
    stale = [r for r in rows if r["stale"]]
    if delete:
        click.echo(f"{len(stale)} stale temporaries removed, {len(rows) - len(stale)} kept.")
    else:
        click.echo(
            f"{len(stale)} stale temporaries ({sum(r['bytes'] for r in stale)} bytes) of "
            f"{len(rows)}; nothing removed (dry run): pass --delete to remove them."
        )
