"""The GPU stack's seams, checked without a GPU: which TensorRT ONNX Runtime's TensorRT provider
links (read from ELF files, real ones built with gcc and synthetic ones), the provider option
dictionaries against ONNX Runtime's documented option names, Torch-TensorRT's compile settings
and TF32 state (on a mocked torch_tensorrt), the warning filters, and `make setup HW=gpu`'s
smoke check on fake modules."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import types
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from inferbench.backends.elf import ElfError, needed_libraries
from inferbench.backends.onnxruntime_cuda import (
    TRT11_ISSUE,
    TRT_EP_LIBRARY,
    linked_tensorrt_major,
    provider_options,
    tensorrt_ep_major,
)
from inferbench.errors import BackendError, UnsupportedError
from inferbench.models import build_model, resolve_model
from tests.conftest import FAST_MEASURE

# ONNX Runtime's TensorRT provider options (onnxruntime/core/providers/tensorrt/
# tensorrt_execution_provider_info.cc, and the TensorRT-ExecutionProvider docs). The Python
# binding spells the stream `user_compute_stream` and sets has_user_compute_stream itself.
ORT_TRT_OPTIONS = {
    "device_id", "user_compute_stream", "trt_max_partition_iterations", "trt_min_subgraph_size",
    "trt_max_workspace_size", "trt_fp16_enable", "trt_bf16_enable", "trt_int8_enable",
    "trt_int8_calibration_table_name", "trt_int8_use_native_calibration_table", "trt_dla_enable",
    "trt_dla_core", "trt_dump_subgraphs", "trt_engine_cache_enable", "trt_engine_cache_path",
    "trt_engine_cache_prefix", "trt_engine_decryption_enable", "trt_engine_decryption_lib_path",
    "trt_force_sequential_engine_build", "trt_context_memory_sharing_enable",
    "trt_layer_norm_fp32_fallback", "trt_timing_cache_enable", "trt_timing_cache_path",
    "trt_force_timing_cache", "trt_detailed_build_log", "trt_build_heuristics_enable",
    "trt_sparsity_enable", "trt_builder_optimization_level", "trt_auxiliary_streams",
    "trt_tactic_sources", "trt_extra_plugin_lib_paths", "trt_profile_min_shapes",
    "trt_profile_max_shapes", "trt_profile_opt_shapes", "trt_cuda_graph_enable",
}  # fmt: skip
# ONNX Runtime's CUDA provider options (CUDA-ExecutionProvider docs).
ORT_CUDA_OPTIONS = {
    "device_id", "user_compute_stream", "gpu_mem_limit", "arena_extend_strategy",
    "cudnn_conv_algo_search", "do_copy_in_default_stream", "cudnn_conv_use_max_workspace",
    "cudnn_conv1d_pad_to_nc1d", "enable_cuda_graph", "enable_skip_layer_norm_strict_mode",
    "use_tf32", "prefer_nhwc", "use_ep_level_unified_stream", "gpu_external_alloc",
    "gpu_external_free", "gpu_external_empty_cache", "tunable_op_enable", "tunable_op_tuning_enable",
    "tunable_op_max_tuning_duration_ms",
}  # fmt: skip
# torch_tensorrt.dynamo.compile's keyword arguments in 2.13 (py/torch_tensorrt/dynamo/_compiler.py),
# the subset an inferbench call may use.
TORCH_TRT_COMPILE_ARGS = {
    "arg_inputs", "disable_tf32", "min_block_size", "timing_cache_path", "immutable_weights",
    "enable_autocast", "autocast_low_precision_type", "truncate_double", "optimization_level",
}  # fmt: skip
ENGINE_CACHE_ARGS = {"cache_built_engines", "reuse_cached_engines", "engine_cache_dir", "engine_cache_size"}


# -- ELF files -----------------------------------------------------------------------------------


def make_elf(needed: list[str], wide: bool = True, big_endian: bool = False) -> bytes:
    """A minimal shared object image: ELF header, a PT_LOAD mapping the whole file at a non-zero
    address, a PT_DYNAMIC with DT_NEEDED entries, DT_STRTAB (an address) and DT_STRSZ."""
    order = ">" if big_endian else "<"
    ehsize, phentsize = (64, 56) if wide else (52, 32)
    base = 0x400000
    strtab = b"\0" + b"".join(name.encode() + b"\0" for name in needed)
    strtab_at = ehsize + 2 * phentsize
    offsets = [1 + sum(len(n) + 1 for n in needed[:i]) for i in range(len(needed))]
    entries = [(1, off) for off in offsets] + [(5, base + strtab_at), (10, len(strtab)), (0, 0)]
    dyn_fmt = order + ("qQ" if wide else "iI")
    dynamic = b"".join(struct.pack(dyn_fmt, tag, value) for tag, value in entries)
    dynamic_at = strtab_at + len(strtab)
    size = dynamic_at + len(dynamic)
    ident = b"\x7fELF" + bytes([2 if wide else 1, 2 if big_endian else 1, 1]) + bytes(9)
    if wide:
        header = struct.pack(
            order + "HHIQQQIHHHHHH", 3, 62, 1, 0, ehsize, 0, 0, ehsize, phentsize, 2, 64, 0, 0
        )
        load = struct.pack(order + "IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
        dyn = struct.pack(order + "IIQQQQQQ", 2, 6, dynamic_at, base + dynamic_at, 0, len(dynamic), 0, 8)
    else:
        header = struct.pack(
            order + "HHIIIIIHHHHHH", 3, 20, 1, 0, ehsize, 0, 0, ehsize, phentsize, 2, 40, 0, 0
        )
        load = struct.pack(order + "IIIIIIII", 1, 0, base, base, size, size, 5, 0x1000)
        dyn = struct.pack(order + "IIIIIIII", 2, dynamic_at, base + dynamic_at, 0, len(dynamic), 0, 6, 4)
    return ident + header + load + dyn + strtab + dynamic


@pytest.mark.parametrize(("wide", "big_endian"), [(True, False), (False, True), (False, False)])
def test_needed_libraries_of_synthetic_elf(tmp_path: Path, wide: bool, big_endian: bool) -> None:
    path = tmp_path / "lib.so"
    path.write_bytes(make_elf(["libcudart.so.13", "libnvinfer.so.10", "libc.so.6"], wide, big_endian))
    assert needed_libraries(path) == ["libcudart.so.13", "libnvinfer.so.10", "libc.so.6"]
    assert linked_tensorrt_major(path) == 10


@pytest.fixture(scope="module")
def gcc_provider(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real shared object named like ONNX Runtime's TensorRT provider, linked by gcc against a
    stub `libnvinfer.so.10` (built here too), as the real one links TensorRT 10's."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not installed: the real-ELF fixture cannot be built")
    folder = tmp_path_factory.mktemp("elf")
    (folder / "stub.c").write_text("int nvinfer_version(void) { return 10; }\n")
    (folder / "provider.c").write_text(
        "int nvinfer_version(void);\nint provider(void) { return nvinfer_version(); }\n"
    )
    stub, provider = folder / "libnvinfer.so.10", folder / TRT_EP_LIBRARY
    shared = [gcc, "-shared", "-fPIC"]
    subprocess.run([*shared, "-Wl,-soname,libnvinfer.so.10", "-o", stub, folder / "stub.c"], check=True)
    subprocess.run([*shared, "-o", provider, folder / "provider.c", "-Wl,--no-as-needed", stub], check=True)
    return provider


def test_needed_libraries_of_a_gcc_built_library(gcc_provider: Path) -> None:
    needed = needed_libraries(gcc_provider)
    assert "libnvinfer.so.10" in needed and "libc.so.6" in needed
    assert linked_tensorrt_major(gcc_provider) == 10
    assert tensorrt_ep_major_with(gcc_provider.parent, installed=10) == 10


def test_elf_reader_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    text = tmp_path / TRT_EP_LIBRARY
    text.write_text("not a library\n")
    with pytest.raises(ElfError, match="not an ELF file"):
        needed_libraries(text)
    with pytest.raises(UnsupportedError, match="could not read the dependencies"):
        linked_tensorrt_major(text)
    with pytest.raises(UnsupportedError, match="no TensorRT provider library"):
        linked_tensorrt_major(tmp_path / "absent.so")
    text.write_bytes(make_elf(["libcudart.so.13"]))
    with pytest.raises(UnsupportedError, match=r"names no libnvinfer\.so\.N dependency"):
        linked_tensorrt_major(text)


def tensorrt_ep_major_with(capi: Path, installed: int | None) -> int:
    from inferbench.backends import onnxruntime_cuda

    real = onnxruntime_cuda.installed_tensorrt_major
    onnxruntime_cuda.installed_tensorrt_major = lambda: installed  # type: ignore[assignment]
    try:
        return tensorrt_ep_major(capi)
    finally:
        onnxruntime_cuda.installed_tensorrt_major = real  # type: ignore[assignment]


def test_version_mismatch_names_both_and_the_issue(tmp_path: Path) -> None:
    (tmp_path / TRT_EP_LIBRARY).write_bytes(make_elf(["libnvinfer.so.10"]))
    with pytest.raises(UnsupportedError) as caught:
        tensorrt_ep_major_with(tmp_path, installed=11)
    reason = str(caught.value)
    assert "TensorRT 10" in reason and "TensorRT 11 is installed" in reason and TRT11_ISSUE in reason
    with pytest.raises(UnsupportedError, match="tensorrt not installed"):
        tensorrt_ep_major_with(tmp_path, installed=None)


def test_mismatch_is_an_unsupported_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker turns the mismatch into a row with status `unsupported` and the reason."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from inferbench.backends import onnxruntime_cuda
    from inferbench.cell import worker

    capi = tmp_path / "capi"
    capi.mkdir()
    (capi / TRT_EP_LIBRARY).write_bytes(make_elf(["libnvinfer.so.10", "libcudart.so.12"]))
    monkeypatch.setattr(onnxruntime_cuda, "require_cuda", lambda: None)
    monkeypatch.setattr(onnxruntime_cuda, "_ort_capi_dir", lambda: capi)
    monkeypatch.setattr(onnxruntime_cuda, "installed_tensorrt_major", lambda: 11)
    providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: providers)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the worker adds the user's folder
    spec = {
        "cell": {
            "model": "mlp",
            "backend": "onnxruntime-cuda",
            "precision": "int8",
            "batch_size": 2,
            "threads": 1,
        },
        "model_ref": asdict(resolve_model("mlp")),
        "measure": asdict(FAST_MEASURE),
        "options": {"provider": "tensorrt"},
        "cache_dir": str(tmp_path / "cache"),
    }
    spec_path, out_path = tmp_path / "spec.json", tmp_path / "out.json"
    spec_path.write_text(json.dumps(spec))
    assert worker.main([str(spec_path), str(out_path)]) == 0
    record = json.loads(out_path.read_text())
    assert record["status"] == "unsupported"
    assert "TensorRT 10" in record["reason"] and "TensorRT 11" in record["reason"]
    assert TRT11_ISSUE in record["reason"]


# -- provider options ----------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("trt_major", [10, 11])
def test_tensorrt_provider_options(tmp_path: Path, precision: str, trt_major: int) -> None:
    providers = provider_options("tensorrt", precision, tmp_path, 0x7F00, trt_major)
    assert [name for name, _ in providers] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    trt, cuda = providers[0][1], providers[1][1]
    assert set(trt) <= ORT_TRT_OPTIONS and set(cuda) <= ORT_CUDA_OPTIONS
    assert "has_user_compute_stream" not in trt and "has_user_compute_stream" not in cuda
    assert trt["user_compute_stream"] == cuda["user_compute_stream"] == str(0x7F00)
    engines = tmp_path / "ort-tensorrt-engines"
    assert trt["trt_timing_cache_path"] == trt["trt_engine_cache_path"] == str(engines) and engines.is_dir()
    assert all(isinstance(v, str) for v in (*trt.values(), *cuda.values()))
    if trt_major == 10:  # weakly typed: the flags decide which kernels run
        assert trt["trt_fp16_enable"] == str(precision == "fp16")
        assert trt["trt_int8_enable"] == str(precision == "int8")
    else:  # strongly typed: the graph decides
        assert "trt_fp16_enable" not in trt and "trt_int8_enable" not in trt


def test_cuda_provider_options(tmp_path: Path) -> None:
    providers = provider_options("cuda", "fp32", tmp_path, 42, None)
    assert [name for name, _ in providers] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    cuda = providers[0][1]
    assert set(cuda) <= ORT_CUDA_OPTIONS and cuda["use_tf32"] == "0" and cuda["user_compute_stream"] == "42"


# -- Torch-TensorRT ------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_torch_tensorrt_turns_tf32_off_and_caches_no_engines(
    precision: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prepare on a mocked torch_tensorrt: at compile time PyTorch's TF32 switches are off (the
    subgraphs left to PyTorch run under them) and no engine-cache argument is passed."""
    torch = pytest.importorskip("torch")
    from inferbench.backends import torch_tensorrt as backend_module

    seen: dict[str, Any] = {}

    def compile(exported: Any, *, arg_inputs: list[Any], **settings: Any) -> Any:
        seen.update(settings, arg_inputs=arg_inputs, exported=exported)
        seen["tf32"] = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        raise RuntimeError("stop after compile")

    fake = types.ModuleType("torch_tensorrt")
    fake.__version__ = "2.13.0"  # type: ignore[attr-defined]
    fake.dynamo = types.SimpleNamespace(compile=compile)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch_tensorrt", fake)
    for name in ("require_cuda", "reset_peak_memory"):
        monkeypatch.setattr(backend_module, name, lambda: None)
    monkeypatch.setattr(backend_module, "gpu_info", dict)
    monkeypatch.setattr(backend_module, "set_torch_threads", lambda threads: None)
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *args, **kwargs: self)  # stays on the CPU
    cls = backend_module.TorchTensorRtBackend
    monkeypatch.setattr(
        cls, "to_native", lambda self, arrays: tuple(torch.from_numpy(arrays[n]) for n in self.input_names)
    )
    monkeypatch.setattr(cls, "_export", lambda self, module, example, precision: "exported program")

    backend = cls(1, tmp_path)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # TF32 on
    try:
        with pytest.raises(BackendError, match="stop after compile"):
            backend.prepare(build_model(resolve_model("mlp")), precision, 2)
    finally:  # process-wide switches (monkeypatch cannot restore these properties)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert seen["tf32"] == (False, False)
    assert seen["exported"] == "exported program" and len(seen["arg_inputs"]) == 1
    assert seen["disable_tf32"] is True and seen["immutable_weights"] is True
    assert not ENGINE_CACHE_ARGS & seen.keys()
    assert set(seen) - {"tf32", "exported"} <= TORCH_TRT_COMPILE_ARGS
    assert seen["timing_cache_path"].startswith(str(tmp_path))
    assert ("enable_autocast" in seen) == (precision == "fp16")


# -- warnings, timing scope, set-up --------------------------------------------------------------


@pytest.mark.parametrize(
    "module", ["modelopt.torch.quantization", "torch_tensorrt.dynamo._compiler", "tensorrt"]
)
def test_gpu_stack_deprecations_do_not_fail_tests(module: str) -> None:
    warnings.warn_explicit("old API", DeprecationWarning, "engine.py", 1, module=module)
    with pytest.raises(DeprecationWarning):  # ours still do (filterwarnings = error)
        warnings.warn_explicit("old API", DeprecationWarning, "ours.py", 1, module="inferbench.sweep.runner")


def test_gpu_timing_scope_says_what_the_events_cover() -> None:
    from inferbench.backends import load_backend

    for name in ("tensorrt", "onnxruntime-cuda", "torch-tensorrt", "torch-cuda"):
        scope = load_backend(name).timing_scope
        assert "before and just after the host call" in scope and "host-side launch time" in scope


def _fake_stack(cuda: str | None = "13.0", trt_cuda: str = "13.2", providers: tuple[str, ...] = ()) -> Any:
    modules = {
        "torch": types.SimpleNamespace(__version__="2.13.0+cu130", version=types.SimpleNamespace(cuda=cuda)),
        "tensorrt": types.SimpleNamespace(__version__="11.0.0"),
        "torch_tensorrt": types.SimpleNamespace(__version__="2.13.0", __cuda_version__=trt_cuda),
        "onnxruntime": types.SimpleNamespace(
            __version__="1.32.0", get_available_providers=lambda: list(providers)
        ),
        "modelopt": types.SimpleNamespace(__version__="0.44.0"),
        "pynvml": types.SimpleNamespace(),
    }

    def importer(name: str) -> Any:
        if name not in modules:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return modules[name]

    return modules, importer


def test_smoke_check_passes_a_complete_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from inferbench.backends import onnxruntime_cuda
    from inferbench.tools.gpu_smoke import check

    (tmp_path / TRT_EP_LIBRARY).write_bytes(make_elf(["libnvinfer.so.10"]))
    monkeypatch.setattr(onnxruntime_cuda, "_ort_capi_dir", lambda: tmp_path)
    monkeypatch.setattr(onnxruntime_cuda, "installed_tensorrt_major", lambda: 11)
    providers = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    _, importer = _fake_stack(providers=providers)
    facts, problems = check(importer)
    assert problems == []
    assert f"onnxruntime providers: {', '.join(providers)}" in facts
    assert "torch built for CUDA 13.0" in facts and "torch_tensorrt built for CUDA 13.2" in facts
    trt_line = next(f for f in facts if f.startswith("onnxruntime-cuda provider=tensorrt"))
    assert "unsupported here" in trt_line and TRT11_ISSUE in trt_line  # a note, not a failure


def test_smoke_check_names_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from inferbench.tools import gpu_smoke

    modules, importer = _fake_stack(cuda="12.8", providers=("CPUExecutionProvider",))
    del modules["tensorrt"]
    _, problems = gpu_smoke.check(importer)
    assert any(p.startswith("tensorrt does not import") and "[tensorrt]" in p for p in problems)
    assert any("built for CUDA 13.2 but torch for CUDA 12.8" in p for p in problems)
    assert any("no CUDAExecutionProvider" in p for p in problems)
    modules["torch"].version.cuda = None
    assert any("is a CPU build" in p for p in gpu_smoke.check(importer)[1])

    monkeypatch.setattr(gpu_smoke, "check", lambda: (["torch 2.13.0"], ["tensorrt does not import"]))
    assert gpu_smoke.main([]) == 1
    out, err = capsys.readouterr()
    assert out == "torch 2.13.0\n"
    assert err.count("\n") == 1 and err.startswith("GPU stack incomplete: tensorrt does not import")
