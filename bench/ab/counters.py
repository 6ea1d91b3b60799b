"""Instructions per call: a count of work, not of time, for `inferbench ab`.

Two counters, the first this machine allows:

- **perf**: the CPU's retired-instruction counter (`perf_event_open`, PERF_TYPE_HARDWARE /
  PERF_COUNT_HW_INSTRUCTIONS), user space only, for the calling thread. Needs a PMU the kernel
  can see (many VMs have none: "PMU not available due to virtualization") and
  `kernel.perf_event_paranoid` <= 2, or CAP_PERFMON.
- **callgrind**: Valgrind's instruction count (Debian's `valgrind`), for a process started
  under it with instrumentation off; the counted calls switch it on and off with Valgrind's
  client requests, so imports and the model build cost a little time and no count. The
  counts are of Valgrind's own CPU (its CPUID), which engines read to pick their kernels.

This file is also a script: `python -P instructions.py < REQUEST.json`, run with a side's
interpreter and code (like `ab_agent.py`), builds each cell asked for with that side's
`inferbench`, warms it up, counts a few batches of calls at one thread and writes one JSON line
per cell. So it imports nothing from `inferbench` at module level.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import json
import mmap
import os
import platform
import statistics
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

PERF_TYPE_HARDWARE, PERF_TYPE_SOFTWARE = 0, 1
PERF_COUNT_HW_INSTRUCTIONS = 1
PERF_COUNT_SW_TASK_CLOCK = 1
_ENABLE, _DISABLE, _RESET = 0x2400, 0x2401, 0x2403  # PERF_EVENT_IOC_*
_SYSCALL = {"x86_64": 298, "aarch64": 241}  # __NR_perf_event_open
_ATTR_SIZE = 128  # PERF_ATTR_SIZE_VER7 and later: the kernel zero-fills what it knows beyond
# perf_event_attr's flag bits: disabled (0), exclude_kernel (5), exclude_hv (6).
_FLAGS = 1 << 0 | 1 << 5 | 1 << 6
PARANOID = Path("/proc/sys/kernel/perf_event_paranoid")


class CounterUnavailable(Exception):
    """No counter here; the message says why (a note in the verdict, never an error)."""


class PerfCounter:
    """One perf event of the calling thread (no child threads: `inherit` is off), counting
    user-space work only between `start` and `stop`."""

    def __init__(self, kind: int = PERF_TYPE_HARDWARE, config: int = PERF_COUNT_HW_INSTRUCTIONS) -> None:
        number = _SYSCALL.get(platform.machine())
        if number is None:
            raise CounterUnavailable(f"perf_event_open: no syscall number known for {platform.machine()}")
        libc = ctypes.CDLL(None, use_errno=True)
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("IIQQQQQ", attr, 0, kind, _ATTR_SIZE, config, 0, 0, 0, _FLAGS)
        self._libc = libc
        # pid 0, cpu -1: this thread, on whichever CPU it runs.
        self.fd = int(libc.syscall(number, attr, 0, -1, -1, 0))
        if self.fd < 0:
            raise CounterUnavailable(_perf_refusal(ctypes.get_errno()))

    def start(self) -> None:
        self._libc.ioctl(self.fd, _RESET, 0)
        self._libc.ioctl(self.fd, _ENABLE, 0)

    def stop(self) -> int:
        self._libc.ioctl(self.fd, _DISABLE, 0)
        value: int = struct.unpack("Q", os.read(self.fd, 8))[0]
        return value

    def close(self) -> None:
        os.close(self.fd)


def _perf_refusal(errno: int) -> str:
    paranoid = PARANOID.read_text().strip() if PARANOID.exists() else "?"
    why = {
        2: "the kernel has no hardware PMU for this event (a VM that does not pass one through)",
        13: f"not permitted (kernel.perf_event_paranoid = {paranoid}; <= 2 or CAP_PERFMON needed)",
        1: f"not permitted (kernel.perf_event_paranoid = {paranoid}; <= 2 or CAP_PERFMON needed)",
        38: "the kernel has no perf events",
        95: "the CPU or VM does not support this event",
    }.get(errno, os.strerror(errno))
    return f"perf_event_open: {why}"


def perf_reason() -> str | None:
    """None when this thread can count its instructions with perf, else why not."""
    try:
        PerfCounter().close()
    except CounterUnavailable as exc:
        return str(exc)
    return None


# ------------------------------------------------------------------ Valgrind client requests

# amd64 client request (valgrind.h's documented ABI): the four rotations of rdi add up to 128
# bits, a no-op on a real CPU, and Valgrind reads the sequence plus `xchg rbx,rbx` as "answer
# the request whose words start at rax; the default answer is in rdx". As a function
# f(args=rdi, default=rsi) -> rdx.
_CLIENT_REQUEST = bytes.fromhex(
    "4889f8"  # mov rax, rdi
    "4889f2"  # mov rdx, rsi
    "48c1c703"
    "48c1c70d"
    "48c1c73d"
    "48c1c733"  # rol rdi, 3 / 13 / 61 / 51
    "4887db"  # xchg rbx, rbx
    "4889d0"  # mov rax, rdx
    "c3"  # ret
)
_RUNNING_ON_VALGRIND = 0x1001
_CALLGRIND = ord("C") << 24 | ord("T") << 16  # VG_USERREQ_TOOL_BASE('C','T')
DUMP_STATS, ZERO_STATS = _CALLGRIND, _CALLGRIND + 1
START_INSTRUMENTATION, STOP_INSTRUMENTATION = _CALLGRIND + 4, _CALLGRIND + 5


@dataclass
class _Requests:
    call: Callable[[ctypes.Array[ctypes.c_uint64], int], int]
    page: mmap.mmap


_requests: _Requests | None = None


def client_request(request: int, *args: int, default: int = 0) -> int:
    """Valgrind's answer to `request`, or `default` outside Valgrind (and off amd64)."""
    global _requests
    if platform.machine() != "x86_64":
        return default
    if _requests is None:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        page.write(_CLIENT_REQUEST)
        address = ctypes.addressof(ctypes.c_char.from_buffer(page))
        kind = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.POINTER(ctypes.c_uint64), ctypes.c_uint64)
        _requests = _Requests(kind(address), page)
    words = (ctypes.c_uint64 * 6)(request, *args, *([0] * (5 - len(args))))
    return int(_requests.call(words, default))


def on_valgrind() -> bool:
    return client_request(_RUNNING_ON_VALGRIND) > 0


class CallgrindCounter:
    """Instructions Valgrind executed (Ir) between `start` and `stop`, all threads of this
    process; each `stop` dumps a part file next to `--callgrind-out-file`, read back here."""

    def __init__(self, out_file: Path) -> None:
        if not on_valgrind():
            raise CounterUnavailable("not running under valgrind --tool=callgrind")
        self.out_file = out_file
        self.parts = 0

    def start(self) -> None:
        client_request(START_INSTRUMENTATION)
        client_request(ZERO_STATS)

    def stop(self) -> int:
        client_request(DUMP_STATS)
        client_request(STOP_INSTRUMENTATION)
        self.parts += 1
        return read_callgrind_total(Path(f"{self.out_file}.{self.parts}"))

    def close(self) -> None:
        pass


def read_callgrind_total(path: Path) -> int:
    """The Ir total of one callgrind dump ("totals:" or "summary:" line)."""
    for line in path.read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise CounterUnavailable(f"{path} has no totals line")


# ------------------------------------------------------------------ the counting script


def count_calls(call: Callable[[], None], counter: Any, calls: int, batches: int) -> list[float]:
    """Instructions per call in each of `batches` batches of `calls` calls. The garbage collector
    is off while counting: a collection lands in whichever batch crosses its allocation count,
    and costs more than a tiny model's call."""
    counts = []
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(batches):
            counter.start()
            for _ in range(calls):
                call()
            counts.append(counter.stop() / calls)
    finally:
        if was_enabled:
            gc.enable()
    return counts


def _cell_call(config: Any, cell: Any, cache_dir: Path) -> Callable[[], None]:
    """One prepared call of the cell at one thread, with the side's own code (the interfaces
    `inferbench.cell.worker` has long used)."""
    import inferbench
    from inferbench.backends import load_backend
    from inferbench.models import build_model

    # A side from before bench/ had rooms keeps the runner at the top (see ab/agent.py).
    rooms = any((Path(folder) / "sweep").is_dir() for folder in inferbench.__path__)
    resolve_models = importlib.import_module(
        "inferbench.sweep.runner" if rooms else "inferbench.runner"
    ).resolve_models

    ref = resolve_models(config)[cell.model].at_shape(cell.shape)
    model = build_model(ref, seed=config.measure.seed)
    options = config.backend_options.get(cell.backend, {})
    # One thread: every call's work on this thread, and no pool spinning into the count.
    backend = load_backend(cell.backend)(1, cache_dir, config.accuracy.calibration_samples, options)
    backend.prepare(model, cell.precision, cell.batch_size)
    native = backend.to_native(model.make_inputs(cell.batch_size, config.measure.seed))

    def call() -> None:
        backend.run(native)
        backend.synchronize()

    return call


def _counter(kind: str, out_file: Path) -> Any:
    return CallgrindCounter(out_file) if kind == "callgrind" else PerfCounter()


def serve(requests: TextIO, answers: TextIO) -> None:
    """Read one request ({profile, name, overrides, cells, counter, out_file, cache_dir, warmup,
    calls, batches}); answer one line per cell: its counts, or why it has none."""
    from inferbench.config import profile_from_dict

    request = json.load(requests)
    config = profile_from_dict(request["profile"], request["name"]).with_overrides(**request["overrides"])
    by_key = {c.key: c for c in config.cells()}
    counter = _counter(request["counter"], Path(request["out_file"]))
    for key in request["cells"]:
        answer: dict[str, Any] = {"cell_key": key, "counter": request["counter"]}
        try:
            call = _cell_call(config, by_key[key], Path(request["cache_dir"]))
            for _ in range(request["warmup"]):
                call()
            answer["counts"] = count_calls(call, counter, request["calls"], request["batches"])
            answer["instructions_per_call"] = statistics.median(answer["counts"])
        except Exception as exc:  # one cell's failure is its note; the others are still counted
            answer["reason"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
    counter.close()


def main() -> int:
    # Answers on the real stdout only; whatever an engine prints goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin, answers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
