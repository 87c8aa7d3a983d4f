"""The ``hub`` sink: a pipeline that ends by publishing its dataset to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, SecretStr

from taskloom.plugin import Sink, SinkWriter


class HubSink(Sink):
    """Push each leaf step's rows, as Parquet shards, and the dataset card to a Hub dataset repo.

    The rows are written to ``.hub/<leaf>.parquet`` in the run folder as they finish; the push
    happens once, when the run has completed and its card is written, so a run stopped by a
    budget or a signal publishes nothing. A push that fails leaves the rows on disk, and
    ``taskloom push RUN_DIR REPO_ID`` sends them later. Pushing again uploads only what changed.
    """

    registry_name = "hub"

    repo_id: str = Field(description="The dataset repo, 'user/name' or 'org/name'; created if missing.")
    private: bool = Field(default=False, description="Create the repo private (an existing public one is refused).")
    token: SecretStr | None = Field(
        default=None, description="A token with write access; HF_TOKEN or `hf auth login`'s when unset. Never dumped."
    )
    revision: str | None = Field(default=None, description="The branch to push to; None for main.")
    endpoint: str | None = Field(default=None, description="The Hub's URL; None for HF_ENDPOINT or huggingface.co.")
    _parquet: Any = PrivateAttr(default=None)
    _pushed: Any = PrivateAttr(default=None)

    def open(self, directory: Path, leaf: str) -> SinkWriter:
        from taskloom import get_sink

        (directory / ".hub").mkdir(exist_ok=True)
        if self._parquet is None:
            self._parquet = get_sink("parquet", filename=".hub/{leaf}.parquet")
        writer: SinkWriter = self._parquet.open(directory, leaf)
        return writer

    def finish(self, directory: Path) -> None:
        from taskloom_huggingface.hub import HubError, push_run

        written = self._parquet.result() if self._parquet is not None else None
        if written is None:
            return
        files = written if isinstance(written, dict) else {Path(written).stem: Path(written)}
        try:
            self._pushed = push_run(
                directory,
                self.repo_id,
                private=self.private,
                token=self.token,
                revision=self.revision,
                endpoint=self.endpoint,
                files=files,
            )
        except HubError as error:
            error.add_note(f"The rows are on disk in {directory}; `taskloom push {directory} {self.repo_id}` retries.")
            raise

    def result(self) -> Any:
        """The :class:`~taskloom_huggingface.hub.PushResult` of the push, once the run completed."""
        return self._pushed
