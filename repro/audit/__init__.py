"""Paper audit (``repro audit``): our aggregated metrics against the paper's recovered numbers and claims.

See :mod:`repro.audit.audit` for the definitions and ``reference.yaml`` for the recovered numbers (all
second-hand, from the [PN] summary, not checked against the paper's PDF)."""

from repro.audit.audit import audit_from_csv, run_audit, strict_failures
from repro.audit.data import COLUMNS, VERDICTS, aggregate, load_reference, read_metrics, validate_metrics
from repro.audit.render import format_markdown, write_audit

__all__ = [
    "COLUMNS",
    "VERDICTS",
    "aggregate",
    "audit_from_csv",
    "format_markdown",
    "load_reference",
    "read_metrics",
    "run_audit",
    "strict_failures",
    "validate_metrics",
    "write_audit",
]
