"""Runtime choices: device, precision (auto/fp32/bf16/fp16) and memory layout; refusals are one-line errors.

A CPU without native bf16 is simulated by replacing ``kidneyseg.runtime.cpu_bf16_support`` (the
detection), so every rule is tested on any machine.
"""

import json

import pytest
import torch

from kidneyseg import runtime
from kidneyseg.errors import KidneysegError
from kidneyseg.runtime import Runtime, resolve_device, resolve_runtime


@pytest.fixture
def no_bf16(monkeypatch):
    """A CPU without AMX / AVX-512 BF16."""
    monkeypatch.setattr(runtime, "cpu_bf16_support", lambda: None)


@pytest.fixture
def with_bf16(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_bf16_support", lambda: "AVX-512 BF16")


def test_auto_takes_cuda_only_when_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_cuda_without_gpu_and_unknown_names_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(KidneysegError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(KidneysegError, match="device must be one of"):
        resolve_device("tpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


def test_ram_budget_from_the_environment_or_the_free_memory(monkeypatch):
    from kidneyseg.runtime import RAM_BUDGET_ENV, ram_budget_bytes

    monkeypatch.setenv(RAM_BUDGET_ENV, "1.5")
    assert ram_budget_bytes() == int(1.5 * 2**30)
    for bad in ("0", "-2", "lots"):
        monkeypatch.setenv(RAM_BUDGET_ENV, bad)
        with pytest.raises(KidneysegError, match=f"{RAM_BUDGET_ENV} must be a positive number of GiB"):
            ram_budget_bytes()
    monkeypatch.delenv(RAM_BUDGET_ENV)
    assert 0 < ram_budget_bytes()

def test_auto_is_bf16_on_a_cpu_with_native_bf16(with_bf16):
    rt = resolve_runtime("cpu", "auto")
    assert (rt.precision, rt.dtype, rt.grad_scaler) == ("bf16", torch.bfloat16, False)
    assert rt.reason == "auto: CPU with AVX-512 BF16" and "bf16" in rt.describe()
    assert not rt.channels_last  # prediction: channels-first (thread-count independent results)
    assert resolve_runtime("cpu", "auto", training=True).channels_last  # training: channels-last (faster)
    assert resolve_runtime("cpu", "bf16").precision == "bf16"


def test_auto_is_fp32_and_bf16_refused_without_native_bf16(no_bf16):
    rt = resolve_runtime("cpu", "auto", training=True)
    assert (rt.precision, rt.channels_last, rt.reason) == ("fp32", False, "auto: CPU without native bf16")
    with pytest.raises(KidneysegError, match=r"--precision bf16 on an unsupported device") as e:
        resolve_runtime("cpu", "bf16")
    assert "\n" not in str(e.value)
    assert resolve_runtime("cpu", "fp32").precision == "fp32"


def test_fp16_on_cpu_and_unknown_settings_are_refused(with_bf16):
    with pytest.raises(KidneysegError, match="fp16 runs on CUDA GPUs only"):
        resolve_runtime("cpu", "fp16")
    with pytest.raises(KidneysegError, match="precision must be one of"):
        resolve_runtime("cpu", "half")
    with pytest.raises(KidneysegError, match="channels_last must be one of"):
        resolve_runtime("cpu", "fp32", "sometimes")
    assert resolve_runtime("cpu", "fp32", "on").channels_last
    assert not resolve_runtime("cpu", "bf16", "off", training=True).channels_last


def test_cuda_rules(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Old GPU")
    monkeypatch.setattr(runtime, "_cuda_bf16", lambda dev: False)
    rt = resolve_runtime("cuda", "auto")
    assert (rt.precision, rt.grad_scaler, rt.channels_last) == ("fp16", True, True)
    with pytest.raises(KidneysegError, match="--precision bf16 on an unsupported device: Old GPU"):
        resolve_runtime("cuda", "bf16")
    monkeypatch.setattr(runtime, "_cuda_bf16", lambda dev: True)
    assert resolve_runtime("cuda", "auto").precision == "bf16"


@pytest.mark.parametrize("flags,torch_probe,want", [
    ({"avx512f", "amx_bf16", "amx_tile"}, False, "AMX"),
    ({"avx512f", "avx512_bf16"}, False, "AVX-512 BF16"),
    ({"avx2", "fma"}, False, None),
    (set(), True, "AMX"),  # no /proc/cpuinfo (another OS): torch's own probe decides
])
def test_detection_reads_cpu_flags_and_torch_probes(monkeypatch, flags, torch_probe, want):
    monkeypatch.setattr(runtime, "_cpuinfo_flags", lambda: flags)
    monkeypatch.setattr(runtime, "_torch_says", lambda name: torch_probe)
    runtime._detect_cpu_bf16.cache_clear()
    try:
        assert runtime.cpu_bf16_support() == want
    finally:
        runtime._detect_cpu_bf16.cache_clear()


def test_autocast_and_layout_apply_to_the_network_only(with_bf16):
    conv = torch.nn.Conv3d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 4, 6, 8)
    rt = resolve_runtime("cpu", "bf16", "on")
    net = rt.prepare_model(conv)
    xin = rt.prepare_input(x)
    assert xin.is_contiguous(memory_format=torch.channels_last_3d) and net.weight.dtype == torch.float32
    with rt.autocast():
        assert net(xin).dtype == torch.bfloat16
    fp32 = Runtime(torch.device("cpu"))
    with fp32.autocast():
        assert not torch.is_autocast_enabled("cpu")
        assert conv(fp32.prepare_input(x)).dtype == torch.float32
    record = rt.to_dict()
    assert record["precision"] == "bf16" and record["memory_layout"] == "channels_last_3d"
    json.dumps(record)  # plain values only


def test_inference_model_casts_its_weights_once_with_identical_logits(with_bf16):
    """In bf16 the convolution weights are cast once at load: autocast then passes them through
    instead of re-casting every weight at every window, and the logits are bit-identical."""
    from torch.profiler import ProfilerActivity, profile

    from kidneyseg.model import NetworkConfig, build_unet

    torch.manual_seed(0)
    cfg = NetworkConfig(in_channels=2, num_classes=3, n_stages=3, base_features=4, max_features=16,
                        strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]])
    rt = resolve_runtime("cpu", "bf16", "off")
    ref, fast = build_unet(cfg), build_unet(cfg)
    fast.load_state_dict(ref.state_dict())
    ref, fast = rt.prepare_model(ref).eval(), rt.prepare_inference_model(fast).eval()
    convs = [m for m in fast.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    norms = [p for n, p in fast.named_parameters() if "norm" in n]
    assert convs and all(m.weight.dtype == torch.bfloat16 for m in convs)
    assert norms and all(p.dtype == torch.float32 for p in norms)  # the norms stay float32
    x = torch.randn(2, 2, 16, 16, 16)

    def casts(net):
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(2):  # two windows, autocast entered per window as sliding_window_predict does
                with rt.autocast():
                    out = net(x)
        n = sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy")
        return out, n

    (a, n_ref), (b, n_fast) = casts(ref), casts(fast)
    assert torch.equal(a, b)
    assert n_fast <= n_ref - 2 * len(convs)  # no weight cast left inside the windows
    # fp32 keeps the weights as they are
    fp32 = Runtime(torch.device("cpu")).prepare_inference_model(build_unet(cfg))
    assert all(p.dtype == torch.float32 for p in fp32.parameters())


def test_cli_refuses_bf16_on_a_cpu_without_it_in_one_line(no_bf16, tmp_path, capsys):
    from kidneyseg.cli import main

    from .infer_helpers import make_model_dir

    model = make_model_dir(tmp_path / "model")
    ct = tmp_path / "ct.nii.gz"
    ct.write_bytes(b"")  # never read: the precision is refused first
    assert main(["predict", "-i", str(ct), "-o", str(tmp_path / "out.nii.gz"), "--model", str(model),
                 "--precision", "bf16", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--precision bf16 on an unsupported device" in err[0], err
    assert not (tmp_path / "out.nii.gz").exists()
    assert main(["train", "--cache", str(tmp_path), "--out", str(tmp_path / "m"), "--precision", "bf16",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--precision bf16 on an unsupported device" in err[0], err


def test_a_cpu_without_bf16_predicts_in_fp32_under_auto(no_bf16, tmp_path, capsys):
    """Detection forced off: ``--precision auto`` still predicts, says fp32 once, and writes the same
    bytes as ``--precision fp32``."""
    import nibabel as nib
    import numpy as np

    from kidneyseg.cli import main

    from . import hardening_helpers as H
    from .infer_helpers import make_model_dir

    model = make_model_dir(tmp_path / "model", plan=H.PLAN)
    ct = H.save_nifti(tmp_path / "ct.nii.gz", H.ct_image(), dtype="int16")
    outs = {}
    for precision in ("auto", "fp32"):
        out = tmp_path / f"{precision}.nii.gz"
        capsys.readouterr()
        assert main(["predict", "-i", str(ct), "-o", str(out), "--model", str(model), "--precision", precision,
                     "--no-progress"]) == 0
        lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("runtime:")]
        assert len(lines) == 1 and "precision fp32" in lines[0], lines
        if precision == "auto":
            assert "auto: CPU without native bf16" in lines[0]
        outs[precision] = np.asarray(nib.load(str(out)).dataobj)
    assert outs["auto"].shape == nib.load(str(ct)).shape
    assert np.array_equal(outs["auto"], outs["fp32"])


def test_command_choices_match_the_runtime():
    from kidneyseg.train import commands

    assert commands.PRECISIONS == runtime.PRECISIONS
    assert commands.DEVICES == runtime.DEVICES
