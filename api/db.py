"""Storage: the SQL tables (jobs, surfaces, checkpoints) and the engine/session factory.

These are storage models; the wire shapes live in ``api/schemas/surface.py``. Times are UNIX seconds
(floats) so lease arithmetic is plain and identical on SQLite and Postgres. Tables are created
on start-up (``create_all``); the schema is small and append-only, so the one migration step is
``_add_missing_columns``: nullable columns added since a database file was made are added to it.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

# Job states; "queued"/"running" are active: at most one active job per surface id.
ACTIVE = ("queued", "running")
TERMINAL = ("done", "failed", "cancelled")


def now() -> float:
    return time.time()


class Base(DeclarativeBase):
    pass


class Job(Base):
    """One request on its way through the queue: a surface, or an analysis of a finished one."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    stage: Mapped[str] = mapped_column(String(16), default="queued")
    surface_id: Mapped[str] = mapped_column(String(64), index=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    # "surface" computes the surface file; "hessian" adds the hessian/ group to a complete one
    # (its `request` is the analysis body). NULL in databases made before analyses existed:
    # read as "surface". Both kinds share the one-active-job-per-surface index, so one file
    # never has two writers.
    kind: Mapped[str | None] = mapped_column(String(16), nullable=True, default="surface")
    # The plan the route made (``Plan.to_json`` / ``HessianPlan.to_json``), run as stored by
    # the worker; never on the wire (it holds server paths). NULL in rows of older versions.
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Estimated FLOPs of the whole job (``api/planning/job_cost.py``), stored when it is queued:
    # the fair queue orders by it and learns seconds per FLOP from finished jobs. NULL: not
    # priced (a kind without a pricer, or rows of older versions).
    cost_flops: Mapped[float | None] = mapped_column(Float, nullable=True)
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    eta_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # {"epoch", "epochs", "loss", "acc"} while (and after) a zoo model trains; None otherwise.
    # JSON, not four columns: it is only ever read and written whole, for the wire.
    train_progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Who queued it, for the per-client queue limits (api/quota.py): "token:<name>" or
    # "address:<ip>". NULL: queued without a client (the demo, rows of older versions).
    client: Mapped[str | None] = mapped_column(String(100), nullable=True)
    # Which worker holds the job and until when; a lapsed lease means its worker died.
    worker_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float, default=now)

    __table_args__ = (
        # The database itself refuses a second active job for one surface, so identical
        # concurrent requests share a job even across API processes.
        Index(
            "uq_jobs_active_surface",
            "surface_id",
            unique=True,
            sqlite_where=text("status IN ('queued', 'running')"),
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )


class SurfaceRecord(Base):
    """Display facts about a surface file (its numbers live in HDF5 under surfaces/)."""

    __tablename__ = "surfaces"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    model: Mapped[str] = mapped_column(String(100))
    dataset: Mapped[str] = mapped_column(String(100))
    checkpoint_id: Mapped[str] = mapped_column(String(64))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class CheckpointRecord(Base):
    """A checkpoint file under checkpoints/, uploaded or trained by a worker."""

    __tablename__ = "checkpoints"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(100))
    dataset: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(16))  # "upload" | "trained"
    filename: Mapped[str] = mapped_column(String(255), default="")
    # "landscape" (checkpoints/<id>.pt) or "onnx" (checkpoints/<id>.onnx); NULL in old rows
    format: Mapped[str | None] = mapped_column(String(16), nullable=True, default="landscape")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float, default=now)


def make_engine(url: str) -> Engine:
    """An engine shared by API threads and worker threads (and other processes on SQLite)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets readers (API) and the writer (worker) proceed together across processes.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    else:
        engine = create_engine(url, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    _add_missing_columns(engine)
    return engine


def _add_missing_columns(engine: Engine) -> None:
    """``ALTER TABLE … ADD COLUMN`` for nullable columns an older database lacks.

    ``create_all`` makes missing tables but never changes an existing one, and a service that
    upgrades must keep its job history. Only additive, nullable columns are handled — enough for
    an append-only schema; anything else would need a real migration tool.
    """
    inspector = inspect(engine)
    existing_tables = set(inspector.get_table_names())
    for table in Base.metadata.sorted_tables:
        if table.name not in existing_tables:
            continue
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            assert column.nullable, f"{table.name}.{column.name}: only nullable columns migrate"
            kind = column.type.compile(dialect=engine.dialect)
            try:
                with engine.begin() as connection:
                    connection.execute(
                        text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
                    )
            except DBAPIError:  # another process starting at the same moment added it first
                columns = inspect(engine).get_columns(table.name)
                if column.name not in {c["name"] for c in columns}:
                    raise


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
