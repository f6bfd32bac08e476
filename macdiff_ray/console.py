"""What a command prints: the project's own progress bars and summary lines on the console, Ray's internal logging
in the run's log file (``RUN_DIR/ray.log``); ``--verbose`` puts Ray's lines back on the console as well.

Three streams reach a terminal in a Ray program, and each is routed here:

1. **Worker output.** Ray forwards every line that a task or actor (Train workers, the Train controller, Ray
   Data's split coordinator, Tune trials) writes to the driver, which prints it. :func:`attach` (called by
   :func:`macdiff_ray.train.runtime.init_ray`) replaces Ray's printer with :func:`_route`:
   - lines that start with :data:`MARK` (the project's own lines from a worker: :func:`say`, and the
     ``macdiff_ray`` loggers once :func:`worker_logging` ran) go to the console without the mark;
   - lines that start with :data:`PROGRESS` carry a JSON progress state (:class:`StepBar` in a worker) and
     become a tqdm bar drawn by the driver;
   - everything else (execution plans, ``TrainingReport(...)`` dumps, core-worker errors, Ray Data's own bars)
     goes to the log file, and also through Ray's own printer when ``verbose``.
   Ray has no public hook for this; the printer is a handler of ``ray._private.ray_logging``'s dispatcher
   (the one Ray Client uses). Without it, Ray's printer stays in place: nothing is lost, it is only noisy.
2. **The driver's Ray loggers** (``ray``, ``ray.data``, ...: the token-auth warning, "Started a local Ray
   instance", Parquet sampling notes): their console handlers are muted and a file handler is added.
3. **Ray Data's own progress bars** (per operator, per dataset, per epoch): off unless ``verbose``.

A plain script that never calls :func:`setup` keeps Ray's behaviour unchanged (tests, notebooks).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Optional

MARK = "[macdiff] "  # a worker line meant for the user's console
PROGRESS = "[macdiff-progress] "  # a worker progress state (JSON) that the driver draws as a bar
LOG_NAME = "ray.log"  # the run directory's log file of Ray's internal output
ROUTED_ENV = "MACDIFF_CONSOLE_ROUTED"  # set for the workers of a routed driver: only they emit PROGRESS lines

# Driver-side loggers whose console output is Ray internals (and MLflow's store set-up notes).
_RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.air", "ray.util", "ray.serve", "mlflow", "alembic")
_lock = threading.Lock()
_state: dict = {"configured": False, "verbose": False, "log_path": None, "file": None, "bars": {},
                "ray_printer": None, "attached": False, "muted": [], "stdout": None}


# --------------------------------------------------------------------------------------------------------------
# Where am I?
# --------------------------------------------------------------------------------------------------------------
def in_ray_worker() -> bool:
    """True inside a Ray task or actor process (a Train worker, a Tune trial, ...), False in a driver."""
    if "ray" not in sys.modules:
        return False
    try:
        import ray
        from ray._private.worker import global_worker

        return ray.is_initialized() and global_worker.mode == ray.WORKER_MODE
    except Exception:  # a Ray without these internals: treat as a driver (plain prints)
        return False


def log_path_for(run_dir: str) -> Optional[str]:
    """The local log file of a run directory (``RUN_DIR/ray.log``); None for a URI run directory (the log then
    goes to a temp file, named at the end of the run)."""
    if "://" in run_dir:
        import tempfile

        return str(Path(tempfile.mkdtemp(prefix="macdiff_log_")) / LOG_NAME)
    return str(Path(run_dir).resolve() / LOG_NAME)


def log_path() -> Optional[str]:
    return _state["log_path"]


def verbose() -> bool:
    return bool(_state["verbose"])


# --------------------------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------------------------
class _TqdmHandler(logging.Handler):
    """Log records as plain lines that do not break a progress bar being drawn."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write(self.format(record))
        except Exception:
            self.handleError(record)


class _Mute(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


def _log_file():
    f = _state["file"]
    if f is None and _state["log_path"]:
        Path(_state["log_path"]).parent.mkdir(parents=True, exist_ok=True)
        f = _state["file"] = open(_state["log_path"], "a", buffering=1, encoding="utf-8")
    return f


def setup(log_file: Optional[str], *, verbose: bool = False) -> None:
    """Route this driver's console (call once, before Ray starts). ``log_file``: where Ray's internal output goes
    (``RUN_DIR/ray.log``; None: nowhere but the console when ``verbose``)."""
    if _state["file"] is not None and log_file != _state["log_path"]:
        _state["file"].close()
        _state["file"] = None
    _state.update(configured=True, verbose=verbose, log_path=log_file, stdout=sys.stdout)
    own = logging.getLogger("macdiff_ray")
    if not any(isinstance(h, _TqdmHandler) for h in own.handlers):
        h = _TqdmHandler()
        h.setFormatter(logging.Formatter("%(message)s"))
        own.addHandler(h)
        own.setLevel(logging.INFO)
        own.propagate = False
    try:  # Ray and Ray Data install their console handlers on import: import them now, then route them
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        pass
    _route_driver_loggers()


def reroute() -> None:
    """Route loggers configured since :func:`setup` (MLflow configures its own on import); no-op unless set up."""
    if _state["configured"]:
        _route_driver_loggers()


@contextlib.contextmanager
def prints_to_log():
    """Inside: ``print`` output of library code (Tune's experiment banner and trial tables) goes to the log file
    unless verbose; the project's own lines (:func:`write`) still reach the console."""
    f = _log_file() if _state["configured"] and not _state["verbose"] else None
    if f is None:
        yield
        return
    with contextlib.redirect_stdout(f):
        yield


def _route_driver_loggers() -> None:
    """The driver's Ray loggers: console handlers muted unless verbose, a file handler added."""
    file_handler = None
    if _state["log_path"]:
        Path(_state["log_path"]).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(_state["log_path"], encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s -- %(message)s"))
        file_handler._macdiff = True  # type: ignore[attr-defined]
    for name in _RAY_LOGGERS:
        lg = logging.getLogger(name)
        for h in lg.handlers:
            if getattr(h, "_macdiff", False):
                continue
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                already = any(isinstance(f, _Mute) for f in h.filters)
                if not _state["verbose"] and not already:
                    h.addFilter(_Mute())
                    _state["muted"].append(h)
        if file_handler is not None and (lg.handlers or not lg.propagate or name == "ray"):
            for old in [h for h in lg.handlers if getattr(h, "_macdiff", False)]:
                lg.removeHandler(old)
            if not lg.propagate or name == "ray":  # children that propagate reach "ray"'s handler
                lg.addHandler(file_handler)


def is_configured() -> bool:
    """Whether this process routed its console with :func:`setup`."""
    return bool(_state["configured"])


def attach() -> None:
    """After ``ray.init``: sort forwarded worker output (:func:`_route`) and turn Ray Data's bars off unless
    verbose. A no-op unless :func:`setup` was called in this process."""
    if not _state["configured"] or in_ray_worker():
        return
    _route_driver_loggers()  # Ray Data configures its logger on import: route it too
    try:
        from ray.data import DataContext

        if not _state["verbose"]:
            DataContext.get_current().enable_progress_bars = False
    except ImportError:
        pass
    if _state["attached"]:
        return
    try:
        from ray._private import ray_logging
        from ray._private import worker as ray_worker
    except ImportError:
        return
    dispatcher = getattr(ray_logging, "global_worker_stdstream_dispatcher", None)
    printer = None
    for name, handler in getattr(dispatcher, "handlers", []):
        if name == "ray_print_logs":
            printer = handler
    if dispatcher is None or printer is None:  # Ray's printer is not where we expect: leave it alone
        return
    _state["ray_printer"] = printer
    _state["ray_worker"] = ray_worker
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", _route)
    _state["attached"] = True


def _prefix(data: Mapping[str, Any]) -> str:
    name = data.get("actor_name") or data.get("task_name") or ""
    return f"({name + ' ' if name else ''}pid={data.get('pid')}) "


def _route(data: dict) -> None:
    """Ray's forwarded worker output, sorted (see the module docstring)."""
    rest = []
    f = _log_file()
    for line in data.get("lines", []):
        if line.startswith(MARK):
            write(line[len(MARK):])
        elif line.startswith(PROGRESS):
            try:
                _draw(json.loads(line[len(PROGRESS):]))
            except (ValueError, TypeError):
                rest.append(line)
        else:
            rest.append(line)
    if not rest:
        return
    if f is not None:
        prefix = _prefix(data)
        for line in rest:
            f.write(prefix + line + "\n")
    if _state["verbose"] and _state["ray_printer"] is not None:
        _state["ray_printer"](dict(data, lines=rest))


def _draw(s: dict) -> None:
    """Create, move or close the driver-side bar of a worker's :class:`StepBar` state."""
    from tqdm.auto import tqdm

    with _lock:
        closed = _state.setdefault("closed", set())
        if s["id"] in closed:  # a state that arrives after its bar's final one (seen: out of order) opens nothing
            return
        bar = _state["bars"].get(s["id"])
        if bar is None:
            if s.get("done"):
                closed.add(s["id"])
                return
            # No rate or ETA of tqdm's own: the driver sees the worker's steps in bursts; the postfix carries
            # the worker's measured throughput.
            bar = tqdm(total=s.get("total"), desc=s.get("desc", ""), unit=s.get("unit", "it"), leave=False,
                       dynamic_ncols=True, file=sys.stderr,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
            _state["bars"][s["id"]] = bar
        bar.n = int(s.get("n", 0))
        if s.get("postfix"):
            bar.set_postfix(s["postfix"], refresh=False)
        bar.refresh()
        if s.get("done"):
            bar.close()
            del _state["bars"][s["id"]]
            closed.add(s["id"])


def write(text: str) -> None:
    """A console line that does not break a progress bar being drawn."""
    try:
        from tqdm.auto import tqdm

        out = _state["stdout"] or sys.stdout
        tqdm.write(text, file=out)
    except ImportError:
        out = _state["stdout"] or sys.stdout
        print(text, file=out, flush=True)
    out.flush()


def close() -> None:
    """Close open bars and the log file (end of a command)."""
    with _lock:
        for bar in list(_state["bars"].values()):
            bar.close()
        _state["bars"].clear()
    if _state["file"] is not None:
        _state["file"].close()
        _state["file"] = None


# --------------------------------------------------------------------------------------------------------------
# Both sides
# --------------------------------------------------------------------------------------------------------------
def say(text: str) -> None:
    """A line for the user's console, from a driver or from a Ray worker (marked, so the driver shows it)."""
    if in_ray_worker():
        print(MARK + text, flush=True)
    else:
        write(text)


def worker_logging() -> None:
    """In a Ray worker: the ``macdiff_ray`` loggers' warnings reach the console (marked). Idempotent."""
    if not in_ray_worker():
        return
    own = logging.getLogger("macdiff_ray")
    if any(getattr(h, "_macdiff_mark", False) for h in own.handlers):
        return
    h = logging.StreamHandler(sys.stdout)
    h.setFormatter(logging.Formatter(MARK + "%(message)s"))
    h._macdiff_mark = True  # type: ignore[attr-defined]
    h.setLevel(logging.WARNING)
    own.addHandler(h)
    own.propagate = False


def summary(title: str, items: Mapping[str, Any]) -> None:
    """The closing lines of a command: what it measured and where its files are, one ``name: value`` per line."""
    width = max((len(k) for k in items), default=0)
    lines = [title] + [f"  {k.ljust(width)}  {v}" for k, v in items.items() if v is not None]
    if _state["log_path"]:
        lines.append(f"  {'Ray log'.ljust(width)}  {_state['log_path']}" + ("" if _state["verbose"] else
                                                                           " (--verbose prints it here too)"))
    for line in lines:
        write(line)


class StepBar:
    """A progress bar over ``total`` steps with a postfix (loss, samples/s).

    In a Ray worker it prints its state as a :data:`PROGRESS` line at most every ``interval`` seconds (and when
    it closes); the driver draws it (:func:`_route`). Elsewhere it is a plain tqdm bar. ``enabled=False``: a
    no-op (other ranks, Tune trials).
    """

    def __init__(self, total: Optional[int], desc: str, unit: str = "step", *, enabled: bool = True,
                 interval: float = 0.5):
        self.enabled = enabled
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.n = 0
        self.postfix: dict = {}
        self._id = uuid.uuid4().hex[:12]
        self._last = 0.0
        self._remote = enabled and in_ray_worker()
        if self._remote and os.environ.get(ROUTED_ENV) != "1":  # nobody would draw it: the JSON would be noise
            self.enabled = self._remote = False
        self._bar = None
        if self.enabled and not self._remote:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, file=sys.stderr)

    def update(self, n: int = 1, **postfix: Any) -> None:
        if not self.enabled:
            return
        self.n += n
        self.postfix.update({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()})
        if self._bar is not None:
            self._bar.update(n)
            self._bar.set_postfix(self.postfix, refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._emit(done=False)

    def _emit(self, done: bool) -> None:
        state = {"id": self._id, "desc": self.desc, "total": self.total, "unit": self.unit, "n": self.n,
                 "postfix": self.postfix, "done": done}
        print(PROGRESS + json.dumps(state), flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            self._emit(done=True)
        self.enabled = False


def env_verbose() -> bool:
    """``MACDIFF_VERBOSE=1`` has the effect of ``--verbose`` (e.g. under ``ray job submit``)."""
    return os.environ.get("MACDIFF_VERBOSE", "") not in ("", "0")
