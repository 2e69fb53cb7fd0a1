"""Every user error is one ``error:`` line (plus at most one hint) and exit status 2; Ctrl-C is one line.

Covers what Hydra raises (a misspelled option or key, an override it can't parse, an argument added with
``+`` that the target does not take), what Lightning raises, asking for GPUs where none is visible, and an
interrupted training run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from objmtl.cli.errors import hydra_message
from objmtl.cpus import cgroup_cpu_quota, usable_cpus
from objmtl.errors import UserError
from objmtl.runs import devices
from tests.helpers import run_cli

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the messages for a machine without a GPU")


def _one_error(result: subprocess.CompletedProcess, *words: str, hint: bool = False) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert lines and lines[0].startswith("error: "), result.stderr[-2000:]
    assert len(lines) <= (2 if hint else 1), result.stderr
    assert "Traceback" not in result.stderr and "Config search path" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(("override", "words"), [
    ("model=atts", ["model/atts"]),
    ("trainer.foo=1", ["trainer.foo"]),
    ("model=[", ["'['"]),
])
def test_hydra_composition_errors_are_one_line_and_a_hint(tmp_path: Path, override: str, words: list[str]) -> None:
    result = run_cli("objmtl-train", override, cwd=tmp_path)
    _one_error(result, *words, hint=True)
    if override == "model=atts":
        assert "atss" in result.stderr.splitlines()[1]  # the options, on the hint line


def test_errors_while_instantiating_name_the_key(synth_root: Path, tmp_path: Path) -> None:
    result = run_cli("objmtl-train", "data=shards", cwd=tmp_path)
    _one_error(result, "data.root: not set")
    result = run_cli("objmtl-train", "+trainer.foo=1", f"data.root={synth_root}", "debug=fast",
                     f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    _one_error(result, "trainer.foo", "not an argument")
    result = run_cli("objmtl-train", f"data.root={synth_root}", "data.batch_size=100", "debug=fast",
                     f"hydra.run.dir={tmp_path / 'r2'}", cwd=tmp_path)  # 84 training images
    _one_error(result, "data.batch_size=100", "no whole training batch")


def test_hydra_message_drops_the_search_path() -> None:
    from hydra.errors import MissingConfigException

    error = MissingConfigException("In 'train': Could not find 'model/atts'\n\nAvailable options in 'model':\n"
                                   "\tatss\n\tfcos\nConfig search path:\n\tprovider=main, path=file:///x")
    assert hydra_message(error) == ("In 'train': Could not find 'model/atts'",
                                    "Available options in 'model': atss, fcos")
    assert hydra_message(ValueError("not Hydra's")) is None


@NO_GPU
@pytest.mark.parametrize(("args", "words"), [
    (["trainer=gpu"], ["trainer=gpu", "no GPU is visible", "trainer=ddp_cpu"]),
    (["task=det", "model=atss", "trainer.devices=4"], ["trainer.devices=4", "trainer=ddp_cpu trainer.devices=4"]),
])
def test_gpus_asked_without_one_visible(tmp_path: Path, args: list[str], words: list[str]) -> None:
    result = run_cli("objmtl-train", *args, f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    _one_error(result, *words)
    assert not (tmp_path / "r" / "checkpoints").exists()


@NO_GPU
def test_objmtl_test_devices_without_a_gpu(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    _one_error(run_cli("objmtl-test", str(run), "--devices", "2"), "--devices 2", "--accelerator cpu")


def test_device_rules(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(devices, "gpu_visible", lambda: False)
    monkeypatch.setattr(devices, "usable_cpus", lambda: 2)
    devices.check_train_devices({"accelerator": "auto", "devices": 1})
    devices.check_train_devices({"accelerator": "auto", "devices": "auto"})  # Lightning: one CPU process
    for bad in ({"accelerator": "auto", "devices": 3}, {"accelerator": "cuda", "devices": 1},
                {"accelerator": "auto", "devices": "0,1"}, {"accelerator": "auto", "devices": -1, "strategy": "ddp"}):
        with pytest.raises(UserError, match="no GPU is visible"):
            devices.check_train_devices(bad)
    with caplog.at_level("WARNING"):
        devices.check_train_devices({"accelerator": "cpu", "devices": 4, "strategy": "ddp"})
    assert "4 gloo processes share 2 usable cores" in caplog.text
    devices.check_eval_devices(accelerator="cpu", devices=4)
    with pytest.raises(UserError, match="--accelerator cpu"):
        devices.check_eval_devices(accelerator="auto", devices=2)
    monkeypatch.setattr(devices, "gpu_visible", lambda: True)
    devices.check_train_devices({"accelerator": "gpu", "devices": 4, "strategy": "ddp"})


def test_the_commands_make_openmp_threads_wait_passively() -> None:
    """Spinning OpenMP threads made a training 4.4x slower beside another job (docs/benchmarks.md)."""
    code = "import os, objmtl.cli; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**env, "OMP_WAIT_POLICY": "ACTIVE"})
    assert out.stdout.strip() == "ACTIVE"  # the user's choice stays


def test_usable_cpus_reads_the_cgroup_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    assert cgroup_cpu_quota(tmp_path / "none") is None
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="process groups and SIGINT are POSIX")
def test_ctrl_c_is_one_line_and_the_last_checkpoint_loads(synth_root: Path, tmp_path: Path) -> None:
    """SIGINT to the whole process group, as a terminal sends it: loader workers included."""
    run = tmp_path / "run"
    exe = Path(sys.executable).parent / "objmtl-train"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    # batch 2: 42 steps an epoch and no validation, so the signal lands inside an epoch, not while loader
    # workers are being started (a worker that has not yet run its init still has Python's SIGINT handler)
    p = subprocess.Popen([str(exe), f"data.root={synth_root}", "data.image_size=32", "data.batch_size=2",
                          "data.num_workers=2", "checkpoint_every_n_steps=2", "trainer.max_epochs=50",
                          "trainer.check_val_every_n_epoch=50",
                          "trainer.enable_progress_bar=false", f"hydra.run.dir={run}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.is_file() and time.time() < deadline and p.poll() is None:
        time.sleep(0.3)
    assert last.is_file(), "no checkpoint was written"
    time.sleep(1.0)
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=180)
    assert p.returncode == 130, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted at step "), err[-3000:]
    assert f"resume with objmtl-train resume={run}" in lines[0]
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["global_step"] >= 2 and "optimizer_states" in state
