"""The index in a relational database, through SQLAlchemy Core: any SQLAlchemy URL or Engine
(SQLite by default, PostgreSQL tested against a real server).

One row per live image in ``table`` and, when the store holds (N, K) score vectors, one row per
(image, class) in ``<table>_scores`` (long form: what SQL joins and filters on). Everything is
written in one transaction: an error leaves the database as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ._contract import ReadableStore, image_ref
from .errors import DatabaseError, InvalidInputError, TargetExistsError
from .format import stack_path

IF_EXISTS = ("fail", "replace", "append")
_ROWS_PER_INSERT = 5000


def _engine(url_or_engine: Any):
    import sqlalchemy as sa

    if isinstance(url_or_engine, sa.engine.Engine):
        return url_or_engine, False
    if isinstance(url_or_engine, os.PathLike):
        url_or_engine = f"sqlite:///{os.fspath(url_or_engine)}"
    if not isinstance(url_or_engine, (str, sa.engine.URL)):
        raise InvalidInputError(
            f"expected a SQLAlchemy URL or Engine, got {type(url_or_engine).__name__}"
        )
    try:
        engine = sa.create_engine(url_or_engine)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ValueError) as exc:
        raise InvalidInputError(
            f"{url_or_engine!r} is not a usable database URL ({exc}); expected e.g. "
            "sqlite:///index.db or postgresql+psycopg://user@host/db"
        ) from None
    except ImportError as exc:
        raise InvalidInputError(
            f"{url_or_engine!r} needs the database driver {exc.name!r}: "
            "install it (h5store[sql] has psycopg for PostgreSQL)"
        ) from None
    return engine, True


def _begin_for_real(conn) -> None:
    # Python's sqlite3 driver opens a transaction only before DML, so a CREATE TABLE would
    # survive a rollback: open it ourselves (this works for engines callers pass in too).
    if conn.dialect.name == "sqlite" and not conn.connection.driver_connection.in_transaction:
        conn.exec_driver_sql("BEGIN")


def _tables(metadata, table: str, with_scores: bool):
    import sqlalchemy as sa

    images = sa.Table(
        table,
        metadata,
        sa.Column("store", sa.String(1024), primary_key=True),
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("ref", sa.Text, nullable=False),
        sa.Column("label", sa.Text, nullable=False, index=True),
        sa.Column("true_label", sa.Text),
        sa.Column("score", sa.Float),
        sa.Column("correct", sa.Boolean),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("channels", sa.Integer, nullable=False),
        sa.Column("dtype", sa.String(16), nullable=False),
        sa.Column("codec", sa.String(64), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("crc32", sa.BigInteger, nullable=False),
        sa.Column("hdf5_path", sa.Text, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("file", sa.Text),
    )
    scores = None
    if with_scores:
        scores = sa.Table(
            f"{table}_scores",
            metadata,
            sa.Column("store", sa.String(1024), primary_key=True),
            sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("label", sa.Text, primary_key=True),
            sa.Column("score", sa.Float, nullable=False),
        )
    return images, scores


def _rows(
    store: ReadableStore, files: Mapping[int, str] | None, name: str, keep: np.ndarray
) -> list[dict]:
    frame = store.to_pandas()[keep]
    index = store.index
    positions = index["position"][index["deleted"] == 0][keep]  # the frame's rows, in order
    rows = []
    for r, position in zip(frame.itertuples(index=False), positions.tolist()):
        true = r.true_label if isinstance(r.true_label, str) else None
        rows.append(
            {
                "store": name,
                "id": int(r.id),
                "ref": image_ref(name, int(r.id)),
                "label": r.label,
                "true_label": true,
                "score": None if np.isnan(r.score) else float(r.score),
                "correct": None if true is None else r.label == true,
                "height": int(r.height),
                "width": int(r.width),
                "channels": int(r.channels),
                "dtype": r.dtype,
                "codec": r.codec,
                "bytes": int(r.nbytes),
                "crc32": int(r.crc32),
                "hdf5_path": stack_path(
                    r.label, int(r.height), int(r.width), int(r.channels), r.dtype
                ),
                "position": int(position),
                "source": r.source if isinstance(r.source, str) else None,
                "file": None if files is None else files.get(int(r.id)),
            }
        )
    return rows


def to_sql(
    store: ReadableStore,
    url_or_engine: Any,
    *,
    table: str = "images",
    if_exists: str = "fail",
    files: Mapping[int, str] | None = None,
    ids: Iterable[int] | None = None,
) -> int:
    """Write the store's index to a database, as one transaction.

    One row per image in ``table`` and, when the store has score vectors, their entries in
    ``<table>_scores`` (long form: store, id, label, score). See
    :meth:`h5store.ImageStore.to_sql` for the columns; a sharded view writes each shard's
    rows naming that shard.

    Parameters
    ----------
    store
        The open store to export.
    url_or_engine
        A SQLAlchemy URL (``sqlite:///lab.db``, ``postgresql+psycopg://...``) or Engine.
    table
        The table name.
    if_exists
        ``"fail"``, ``"replace"`` or ``"append"``, for an existing table.
    files
        Image id -> path of its exported file, for the ``file`` column.
    ids
        Only these images (default: every live image).

    Returns
    -------
    int
        The number of image rows written.

    Raises
    ------
    InvalidInputError
        SQLAlchemy is not installed, or ``if_exists`` or ``table`` is not valid.
    TargetExistsError
        The table exists and ``if_exists="fail"``; the database is left as it was.
    DatabaseError
        The database refused a row or the connection was lost; the transaction is rolled
        back.
    """
    try:
        import sqlalchemy as sa
    except ImportError:
        raise InvalidInputError("to_sql needs SQLAlchemy: pip install 'h5store[sql]'") from None
    if if_exists not in IF_EXISTS:
        raise InvalidInputError(f"if_exists must be one of {IF_EXISTS}, got {if_exists!r}")
    if not isinstance(table, str) or not table:
        raise InvalidInputError(f"table must be a non-empty name, got {table!r}")
    # Each row names its store file by its absolute path, so that it leads back to the image
    # from anywhere (a sharded view: the shard holding it).
    wanted = None if ids is None else np.asarray(list(ids))
    rows: list[dict] = []
    long: list[dict] = []
    with_scores = False
    for member in getattr(store, "shards", (store,)):
        name = os.path.abspath(member.path)
        live = member.ids()
        keep = np.ones(len(live), bool) if wanted is None else np.isin(live, wanted)
        member_rows = _rows(member, files, name, keep)
        rows += member_rows
        vectors = member.scores
        if vectors is not None:
            with_scores = True
            labels = member.labels[: vectors.shape[1]]
            long += [
                {"store": name, "id": row["id"], "label": labels[k], "score": float(v)}
                for row, vector in zip(member_rows, vectors[keep].tolist())
                for k, v in enumerate(vector)
                if v == v
            ]  # NaN: no vector stored
    engine, owned = _engine(url_or_engine)
    try:
        with engine.begin() as conn:
            _begin_for_real(conn)
            metadata = sa.MetaData()
            images, scores = _tables(metadata, table, with_scores)
            present = [
                t.name
                for t in (images, scores)
                if t is not None and sa.inspect(conn).has_table(t.name)
            ]
            if present and if_exists == "fail":
                raise TargetExistsError(
                    f"table {present[0]!r} exists in {engine.url.render_as_string()}; pass "
                    "if_exists='replace' (--if-exists replace) or 'append'"
                )
            if if_exists == "replace":
                for t in (scores, images):
                    if t is not None:
                        t.drop(conn, checkfirst=True)
            metadata.create_all(conn)
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                conn.execute(images.insert(), rows[start : start + _ROWS_PER_INSERT])
            if scores is not None:
                for start in range(0, len(long), _ROWS_PER_INSERT):
                    conn.execute(scores.insert(), long[start : start + _ROWS_PER_INSERT])
    except sa.exc.OperationalError as exc:
        raise DatabaseError(
            f"cannot write to {engine.url.render_as_string()}: {str(exc.orig).strip() or exc}"
        ) from None
    except sa.exc.IntegrityError as exc:
        raise DatabaseError(
            f"{engine.url.render_as_string()} refused the rows (nothing was written): "
            f"{str(exc.orig).strip().splitlines()[0]}"
        ) from None
    except sa.exc.SQLAlchemyError as exc:
        raise DatabaseError(f"{engine.url.render_as_string()}: {exc}") from None
    finally:
        if owned:
            engine.dispose()
    return len(rows)
