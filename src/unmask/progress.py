"""One rich progress bar style for every long job (rate and ETA included)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _Bar:
    def __init__(self, progress: Progress | None, task: int | None):
        self.progress, self.task = progress, task

    def advance(self, n: float = 1, **fields) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=n, **fields)

    def update(self, **fields) -> None:
        if self.progress is not None:
            self.progress.update(self.task, **fields)


def make_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )


@contextmanager
def progress_bar(description: str, total: float, disable: bool = False) -> Iterator[_Bar]:
    if disable:
        yield _Bar(None, None)
        return
    with make_progress() as progress:
        yield _Bar(progress, progress.add_task(description, total=total, info="", rate=""))
