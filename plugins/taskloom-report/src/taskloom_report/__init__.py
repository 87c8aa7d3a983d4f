"""taskloom-report: one self-contained HTML page that shows what a run did.

``build_report(run_dir)`` reads the run folder (``run.json`` and the leaf outputs, streamed) and
returns a :class:`Report`; ``taskloom report RUN_DIR`` and ``taskloom run --report`` write it.
"""

from __future__ import annotations

from taskloom_report.report import Report, build_report, write_report

__all__ = ["Report", "build_report", "write_report"]
