"""Showing a starting cluster's progress: a live widget in a notebook (ipywidgets when it is
installed, else text updated in place), a bar on a terminal, plain lines otherwise (batch
logs), or a function of the caller's."""

from __future__ import annotations

import importlib
import sys
import time
from types import ModuleType
from typing import Any, Callable, Optional, TextIO, Union

from .status import Stage

#: What ``progress=`` accepts: ``None``/``True``/``"auto"`` chooses, ``False``/``"none"`` shows
#: nothing, a name picks a display, a callable is given every :class:`Stage`.
ProgressArg = Union[None, bool, str, Callable[[Stage], Any]]

DISPLAYS = ("auto", "widget", "notebook", "terminal", "log", "none")


class Display:
    """Shows one cluster's start. ``stage`` on every change, ``note`` for side remarks,
    ``close`` once at the end."""

    def __init__(self, name: str) -> None:
        self.name = name

    def rename(self, name: str) -> None:
        """The cluster's name once it is known (``up`` chose one)."""
        self.name = name

    def stage(self, stage: Stage) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def close(self, ok: bool, text: str) -> None:
        pass


def _module(name: str) -> ModuleType:
    """An optional module (IPython, ipywidgets), imported when a display needs it. Through
    importlib its attributes are untyped whether or not it is installed where types are checked."""
    return importlib.import_module(name)


def _bar(joined: int, expected: int, width: int = 20) -> str:
    done = 0 if expected <= 0 else min(width, round(width * joined / expected))
    return "█" * done + "░" * (width - done)


def _line(name: str, stage: Stage) -> str:
    return f"{name}: {stage.text} ({stage.elapsed_s:.0f}s)"


class _Callback(Display):
    def __init__(self, name: str, fn: Callable[[Stage], Any]) -> None:
        super().__init__(name)
        self.fn = fn

    def stage(self, stage: Stage) -> None:
        self.fn(stage)


class _Log(Display):
    """Timestamped lines on stderr, like the binary's own progress in a batch log."""

    def __init__(self, name: str, stream: Optional[TextIO] = None) -> None:
        super().__init__(name)
        self.stream = stream or sys.stderr

    def _say(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] ray-hpc: {text}", file=self.stream, flush=True)

    def stage(self, stage: Stage) -> None:
        self._say(_line(self.name, stage))

    def note(self, text: str) -> None:
        self._say(f"{self.name}: {text}")

    def close(self, ok: bool, text: str) -> None:
        self._say(f"{self.name}: {text}")


class _Terminal(Display):
    """One line redrawn in place: a bar of nodes joined and the stage."""

    def __init__(self, name: str, stream: Optional[TextIO] = None) -> None:
        super().__init__(name)
        self.stream = stream or sys.stderr
        self.width = 0

    def _draw(self, text: str) -> None:
        pad = max(0, self.width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self.width = len(text)

    def stage(self, stage: Stage) -> None:
        bar = _bar(stage.nodes_joined, stage.nodes_expected)
        self._draw(f"{bar} {stage.nodes_joined}/{stage.nodes_expected}  {_line(self.name, stage)}")

    def note(self, text: str) -> None:
        self._draw(f"{self.name}: {text}")

    def close(self, ok: bool, text: str) -> None:
        self._draw(f"{self.name}: {text}")
        self.stream.write("\n")
        self.stream.flush()


class _NotebookText(Display):
    """Text in the notebook's output, replaced in place (IPython's display handles)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ipython = _module("IPython.display")
        self.handle = self.ipython.display(self._text(f"{name}: submitting"), display_id=True)

    def _text(self, text: str) -> Any:
        return self.ipython.Pretty(text)

    def _show(self, text: str) -> None:
        if self.handle is not None:
            self.handle.update(self._text(text))

    def stage(self, stage: Stage) -> None:
        bar = _bar(stage.nodes_joined, stage.nodes_expected)
        self._show(f"{bar} {stage.nodes_joined}/{stage.nodes_expected}  {_line(self.name, stage)}")

    def note(self, text: str) -> None:
        self._show(f"{self.name}: {text}")

    def close(self, ok: bool, text: str) -> None:
        self._show(f"{self.name}: {text}")


class _Widget(Display):
    """An ipywidgets progress bar of nodes joined, with the stage beside it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        widgets = _module("ipywidgets")
        self.bar = widgets.IntProgress(value=0, min=0, max=1, description=name)
        self.label = widgets.Label(value="submitting")
        self.box = widgets.HBox([self.bar, self.label])
        _module("IPython.display").display(self.box)

    def rename(self, name: str) -> None:
        super().rename(name)
        self.bar.description = name

    def stage(self, stage: Stage) -> None:
        self.bar.max = max(1, stage.nodes_expected)
        self.bar.value = min(stage.nodes_joined, self.bar.max)
        self.label.value = f"{stage.text} ({stage.elapsed_s:.0f}s)"

    def note(self, text: str) -> None:
        self.label.value = text

    def close(self, ok: bool, text: str) -> None:
        self.bar.bar_style = "success" if ok else "danger"
        if ok:
            self.bar.value = self.bar.max
        self.label.value = text


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython with a kernel attached)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def _has_widgets() -> bool:
    try:
        _module("ipywidgets")
    except Exception:
        return False
    return True


def make(progress: ProgressArg, name: str) -> Display:
    """The display ``progress`` asks for (see :data:`ProgressArg`)."""
    if callable(progress) and not isinstance(progress, (bool, str)):
        return _Callback(name, progress)
    if progress is False or progress == "none":
        return Display(name)
    if progress is None or progress is True:
        progress = "auto"
    if progress not in DISPLAYS:
        raise ValueError(f"progress={progress!r}: expected one of {', '.join(DISPLAYS)}, a bool or a function")
    if progress == "auto":
        if in_notebook():
            progress = "widget" if _has_widgets() else "notebook"
        elif sys.stderr is not None and sys.stderr.isatty():
            progress = "terminal"
        else:
            progress = "log"
    if progress == "widget":
        return _Widget(name)
    if progress == "notebook":
        return _NotebookText(name)
    if progress == "terminal":
        return _Terminal(name)
    return _Log(name)
