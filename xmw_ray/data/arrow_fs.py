"""The pyarrow filesystem behind a store URL, for the readers and writers that take pyarrow filesystems (Parquet
datasets, Ray Data's ``read_parquet``, Ray Train and Tune run storage).

``gs://`` goes through gcsfs (wrapped as a pyarrow filesystem), like every fsspec code path of the project: pyarrow's
own GCS client resolves its endpoint and credentials its own way (it ignores ``STORAGE_EMULATOR_HOST`` and gcsfs's
token settings), so one bucket would otherwise need two sets of settings. gcsfs takes Application Default
Credentials (or ``token`` from fsspec's config, e.g. ``FSSPEC_GS_TOKEN``), and ``STORAGE_EMULATOR_HOST`` for an
emulator. Other schemes (``s3://``, ``file://``) keep pyarrow's native filesystem, which honours the same ``AWS_*``
variables as s3fs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xmw_ray.storage import url_scheme

if TYPE_CHECKING:
    import pyarrow.fs

#: URL schemes served by gcsfs.
GCS_SCHEMES = ("gs", "gcs")


def arrow_filesystem(url: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """``(filesystem, path)`` for ``url``: the path is relative to the filesystem (no scheme), as pyarrow expects."""
    from pyarrow import fs

    if url_scheme(url) in GCS_SCHEMES:
        import fsspec

        gcs, path = fsspec.core.url_to_fs(url)
        return fs.PyFileSystem(fs.FSSpecHandler(gcs)), path
    return fs.FileSystem.from_uri(url)
