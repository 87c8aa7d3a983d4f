"""``taskloom report``: the command this plugin adds through ``register_commands``."""

from __future__ import annotations

import argparse
import webbrowser
from pathlib import Path

from taskloom.plugin import Command


class ReportCommand(Command):
    """write a run folder's report: one offline HTML page of its steps, judges, rows and failures"""

    registry_name = "report"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dir", help="a run folder (it holds run.json)")
        parser.add_argument("-o", "--output", help="where to write the page (default: RUN_DIR/report.html)")
        parser.add_argument("--open", action="store_true", help="open the page in the default browser")
        parser.add_argument("--sample", type=int, default=500, help="rows shown in the table at most (default 500)")

    def run(self, args: argparse.Namespace) -> int:
        from taskloom_report.report import build_report

        report = build_report(args.run_dir, sample=args.sample)
        target = Path(args.output) if args.output else Path(args.run_dir) / "report.html"
        report.save(target)
        print(f"report: {target} ({report.summary_line()})")
        if args.open:
            webbrowser.open(target.resolve().as_uri())
        return 0
