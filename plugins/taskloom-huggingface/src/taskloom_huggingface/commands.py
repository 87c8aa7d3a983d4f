"""``taskloom push``: the Hub command this plugin adds through ``register_commands``."""

from __future__ import annotations

import argparse

from taskloom.plugin import Command


class PushCommand(Command):
    """push a finished run folder to a Hugging Face dataset repo (Parquet shards + card; only what changed)"""

    registry_name = "push"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dir", help="a run folder whose pipeline ran to its end (it holds README.md)")
        parser.add_argument("repo_id", help="the dataset repo, 'user/name' or 'org/name'; created if missing")
        parser.add_argument("--private", action="store_true", help="create the repo private")
        parser.add_argument("--revision", help="the branch to push to (default: main)")
        parser.add_argument("--message", help="the commit message")

    def run(self, args: argparse.Namespace) -> int:
        from taskloom_huggingface.hub import push_run

        result = push_run(
            args.run_dir, args.repo_id, private=args.private, revision=args.revision, commit_message=args.message
        )
        print(result.line())
        for path in result.uploaded:
            print(f"  uploaded  {path}")
        for path in result.deleted:
            print(f"  removed   {path}")
        return 0
