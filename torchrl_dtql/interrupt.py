"""Stop a long run cleanly on Ctrl-C or SIGTERM: the step in progress finishes, the caller checkpoints and exits.

A training loop asks :class:`GracefulStop` once per step whether a stop was requested; the first SIGINT (Ctrl-C) or
SIGTERM (``kill``, a scheduler's pre-emption) only sets that flag, so the loop can write a checkpoint before it
leaves. A second Ctrl-C while the checkpoint is being written raises ``KeyboardInterrupt`` as usual, for a user who
really wants out. Work with nothing to checkpoint (loading or regenerating a dataset, whose files are written
atomically) runs inside :meth:`GracefulStop.immediately`, where the first signal raises :class:`StopRequested`
at once.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType, TracebackType

__all__ = ["GracefulStop", "StopRequested"]


class StopRequested(KeyboardInterrupt):
    """A stop signal inside :meth:`GracefulStop.immediately`: nothing was left to checkpoint, the caller exits."""


class GracefulStop:
    """A context manager that turns SIGINT and SIGTERM into a flag polled by the training loop.

    Handlers are installed on entry and the previous ones restored on exit. Outside the main thread (where Python
    cannot install signal handlers) it does nothing and :attr:`requested` stays ``False``.

    Args:
        signals: the signals to catch.
        message: printed to stderr when the first signal arrives.

    Examples:
        >>> import os, signal
        >>> with GracefulStop(message="") as stop:
        ...     os.kill(os.getpid(), signal.SIGTERM)   # what `kill <pid>` does
        ...     stop.requested, stop.signal_name, stop.exit_code
        (True, 'SIGTERM', 143)
    """

    def __init__(
        self,
        signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
        message: str = "finishing the current step and writing a checkpoint (Ctrl-C again to quit at once)",
    ) -> None:
        self.signals = signals
        self.message = message
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._immediate = False

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return self.signum is not None

    @property
    def signal_name(self) -> str | None:
        """``"SIGINT"`` or ``"SIGTERM"`` once a signal arrived, else ``None``."""
        return None if self.signum is None else signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal (130 for SIGINT, 143 for SIGTERM); 0 when none."""
        return 0 if self.signum is None else 128 + self.signum

    @contextlib.contextmanager
    def immediately(self) -> Iterator[None]:
        """A block with nothing to checkpoint: a stop signal in it (or one already received) raises
        :class:`StopRequested` at once instead of waiting for the block to end. Outside the block signals set the
        flag again.

        Examples:
            >>> import os, signal
            >>> with GracefulStop(message="") as stop:
            ...     try:
            ...         with stop.immediately():
            ...             os.kill(os.getpid(), signal.SIGTERM)
            ...             interrupted = False
            ...     except StopRequested:
            ...         interrupted = True
            ...     interrupted, stop.requested, stop.exit_code
            (True, True, 143)
        """
        if self.requested:
            raise StopRequested
        self._immediate = True
        try:
            yield
        finally:
            self._immediate = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: the user does not want to wait
        if self.signum is None:
            self.signum = signum
            if self._immediate:  # nothing to save: stop now
                raise StopRequested
            if self.message:
                print(f"\n{signal.Signals(signum).name} received: {self.message}.", file=sys.stderr, flush=True)

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
