"""One rich progress bar for the CLI's long phases (the warm start, RL training), with plain lines for logs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class StepProgress:
    """A bar over ``total`` steps labelled ``label``, with a free-text description after it.

    Nothing is drawn without a console. When the console is not a terminal (a log file, CI), a bar would not
    show, so :meth:`update` also prints ``"<label> N/total | description"`` every ``log_every`` steps and at the
    last one. :meth:`update` may be called from any thread (rich's progress is thread-safe).
    """

    def __init__(
        self, console: Console | None, label: str, total: int, *, start: int = 0, log_every: int = 1
    ) -> None:
        self.console = console
        self.label = label
        self.total = total
        self._start = start
        self._log_every = max(1, log_every)
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> StepProgress:
        if self.console is not None and self.total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn(f"[bold]{self.label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
                console=self.console,
            )
            self._task = self._progress.add_task("", total=self.total, completed=self._start)
            self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def note(self, text: str) -> None:
        """Print a line above the bar."""
        if self.console is not None:
            self.console.print(text)

    def update(self, done: int, description: str) -> None:
        """Move the bar to ``done`` steps and show ``description`` after it."""
        if self._progress is None or self.console is None:
            return
        self._progress.update(self._task, completed=done, description=description)
        if not self.console.is_terminal and (done % self._log_every == 0 or done == self.total):
            self.console.print(f"{self.label} {done}/{self.total} | {description}")
