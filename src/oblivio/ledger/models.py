"""The ledger's tables as SQLAlchemy 2 typed ORM classes (portable to SQLite and PostgreSQL).

A *request* names samples of one model version's training set; ``process`` gathers pending
requests into an *unlearning run* (one batch), which produces a new *model version* and an
*audit*. Every status change of a request is appended to ``status_history``. A scheduled run is
claimed by one worker at a time through a lease (``claimed_by``, ``lease_until``).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, TypeDecorator, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Request states, in order; ``failed`` can follow any of the first four.
RECEIVED, SCHEDULED, UNLEARNED, AUDITED, CLOSED, FAILED = "received", "scheduled", "unlearned", "audited", "closed", "failed"
REQUEST_STATES = (RECEIVED, SCHEDULED, UNLEARNED, AUDITED, CLOSED, FAILED)
# Unlearning-run (batch) states: scheduled until its one final transaction closes or fails it.
RUN_STATES = (SCHEDULED, CLOSED, FAILED)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on both backends (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use timezone-aware UTC")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc) if value is not None else None


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


class ModelVersion(Base):
    """One checkpoint, identified by the SHA-256 of its weights file."""

    __tablename__ = "model_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    weights_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    model_hash: Mapped[str] = mapped_column(String(64))
    parent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("model_version.id"))
    checkpoint_path: Mapped[str] = mapped_column(Text)
    arch: Mapped[Optional[str]] = mapped_column(String(64))
    dataset: Mapped[dict[str, Any]]
    split_hashes: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    parent: Mapped[Optional["ModelVersion"]] = relationship(remote_side=[id])


class Request(Base):
    """A deletion request: which training samples of which model version, and why."""

    __tablename__ = "request"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_ref: Mapped[str] = mapped_column(String(200), unique=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_version.id"), index=True)
    scenario: Mapped[dict[str, Any]]
    sample_ids: Mapped[list[Any]]
    sample_hashes: Mapped[list[Any]]
    reason: Mapped[Optional[str]] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default=RECEIVED, index=True)
    error: Mapped[Optional[str]] = mapped_column(Text)
    run_id: Mapped[Optional[int]] = mapped_column(ForeignKey("unlearning_run.id"), index=True)

    model_version: Mapped[ModelVersion] = relationship()
    run: Mapped[Optional["UnlearningRun"]] = relationship(back_populates="requests")
    history: Mapped[list["StatusChange"]] = relationship(order_by="StatusChange.id", viewonly=True)


class StatusChange(Base):
    """Append-only: one row per status a request entered (the database refuses UPDATE and DELETE)."""

    __tablename__ = "status_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("request.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    note: Mapped[Optional[str]] = mapped_column(Text)


class UnlearningRun(Base):
    """One batch: the requests it serves, the method and options, and its output model version."""

    __tablename__ = "unlearning_run"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    input_version_id: Mapped[int] = mapped_column(ForeignKey("model_version.id"), index=True)
    output_version_id: Mapped[Optional[int]] = mapped_column(ForeignKey("model_version.id"))
    status: Mapped[str] = mapped_column(String(16), default=SCHEDULED, index=True)
    method: Mapped[str] = mapped_column(String(64))
    options: Mapped[dict[str, Any]]
    seed: Mapped[int] = mapped_column(Integer, default=0)
    output_path: Mapped[str] = mapped_column(Text)
    split: Mapped[Optional[dict[str, Any]]]
    seconds: Mapped[Optional[float]]
    info: Mapped[Optional[dict[str, Any]]]
    error: Mapped[Optional[str]] = mapped_column(Text)
    scheduled_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[Optional[datetime]]
    # Who works on a scheduled run, and until when: a worker renews its lease while it runs; a run
    # whose lease ran out (its worker was killed) is taken over by the next worker (migration 0002).
    claimed_by: Mapped[Optional[str]] = mapped_column(String(64))
    lease_until: Mapped[Optional[datetime]]

    # At most one run in flight per input model, so a model version never gets two children.
    __table_args__ = (
        Index("ix_unlearning_run_one_scheduled", "input_version_id", unique=True,
              sqlite_where=text("status = 'scheduled'"), postgresql_where=text("status = 'scheduled'")),
    )

    input_version: Mapped[ModelVersion] = relationship(foreign_keys=[input_version_id])
    output_version: Mapped[Optional[ModelVersion]] = relationship(foreign_keys=[output_version_id])
    requests: Mapped[list[Request]] = relationship(back_populates="run", order_by="Request.id")
    audit: Mapped[Optional["Audit"]] = relationship(back_populates="run", uselist=False)


class Audit(Base):
    """The audit of one run's output model: metrics, verdict and where the report files are."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("unlearning_run.id"), unique=True)
    metrics: Mapped[dict[str, Any]]
    verdict: Mapped[str] = mapped_column(String(8))
    headline: Mapped[str] = mapped_column(Text)
    report_path: Mapped[str] = mapped_column(Text)
    report_sha256: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    run: Mapped[UnlearningRun] = relationship(back_populates="audit")
