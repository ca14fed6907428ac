"""The subcommands as functions: the CLI's JSON with the CLI's numbers, the same files, the CLI's
messages for bad input."""
import json
import math
import os

import h5py
import numpy as np
import pytest

import hepsim
from conftest import cli, same_json


def flags(**kw):
    """The CLI's argument list for keyword flags, as the module builds it."""
    out = []
    for k, v in kw.items():
        out += ["--" + k.replace("_", "-"), str(v)]
    return out


@pytest.mark.parametrize("kw", [
    dict(samples=20, batch_size=20, max_steps=3000, tol=1e-7, threads=1),
    dict(samples=12, solver="dopri5", beta=0.1, angle=30, seed=3, tol=1e-6, max_steps=3000, batch_size=5, threads=2),
    dict(arch="loop_mnist", samples=8, solver="anderson", precision="float", tol=1e-4, max_steps=2000, threads=1),
])
def test_relax_equals_cli(kw):
    same_json(hepsim.relax(**kw), cli("relax", *flags(**kw))[1])


def test_relax_accepts_a_dict_and_keywords_override_it():
    a = hepsim.relax({"samples": 6, "max-steps": 100, "tol": 1e-3}, tol=1e-6, threads=1)
    assert a["tol"] == 1e-6 and a["samples"] == 6
    same_json(a, cli("relax", "--samples", 6, "--max-steps", 100, "--tol", 1e-6, "--threads", 1)[1])


def test_jacobian_equals_cli():
    kw = dict(samples=4, probes=50, angle=45, max_dense=600, threads=1)
    same_json(hepsim.jacobian(**kw), cli("jacobian", *flags(**kw))[1])


def test_gradcheck_equals_cli():
    kw = dict(arch="mlp_2-256", batch=4, N="1,2,4", T1=120, T2=20, angle=30, threads=1)
    same_json(hepsim.gradcheck(**kw), cli("gradcheck", *flags(**kw))[1])


def test_bench_returns_the_cli_keys():
    kw = dict(batches=2, warmup=0, repeats=1, T1=5, T2=2, threads=1)
    got, want = hepsim.bench(**kw), cli("bench", *flags(**kw))[1]
    assert set(got) == set(want)


def read_log(run):
    with h5py.File(os.path.join(run, "log.h5"), "r") as f:
        cols = {k: f["epochs"][k][()] for k in f["epochs"]}
        config = f.attrs["config"]
    return cols, config


def test_train_one_epoch_equals_cli_bit_for_bit(tmp_path):
    config = {"arch": "mlp_2-256", "dataset": "fmnist", "train-limit": 600, "test-limit": 200, "epochs": 1,
              "batch-size": 50, "T1": 30, "T2": 8, "homeostasis": 0.5, "threads": 2, "quiet": True}
    records = []
    got = hepsim.train(config, out=str(tmp_path / "py"), on_epoch=records.append)
    args = [a for k, v in config.items() if k != "quiet" for a in ("--" + k, str(v))]
    want = cli("train", *args, "--quiet", "--out", tmp_path / "cli")[1]
    same_json(got, want, ignore=("seconds", "examples_per_s", "out"))
    py_cols, py_config = read_log(tmp_path / "py")
    cli_cols, cli_config = read_log(tmp_path / "cli")
    py_config, cli_config = json.loads(py_config), json.loads(cli_config)
    assert py_config.pop("out") != cli_config.pop("out")
    assert py_config == cli_config
    for k in cli_cols:
        if k not in ("seconds", "train_seconds", "examples_per_s"):
            assert np.array_equal(py_cols[k], cli_cols[k], equal_nan=True), k
    with h5py.File(tmp_path / "py" / "checkpoint.h5") as a, h5py.File(tmp_path / "cli" / "checkpoint.h5") as b:
        assert np.array_equal(a["theta"][()], b["theta"][()])
    # The checkpoint through the module: the run's model and θ.
    ck = hepsim.load_checkpoint(str(tmp_path / "py" / "checkpoint.h5"))
    with h5py.File(tmp_path / "py" / "checkpoint.h5") as a:
        assert np.array_equal(ck["theta"], a["theta"][()])
    assert ck["epoch"] == 1 and not ck["mid_epoch"] and ck["config"]["T1"] == 30
    assert ck["model"].n_params == ck["theta"].size and ck["model"].activation == "sigmoid"
    assert hepsim.jac.jac_sym(ck["model"], ck["theta"]) == pytest.approx(got["jac_sym"], rel=1e-12)
    # The callback saw the logged epoch.
    assert len(records) == 1
    rec = records[0]
    for k in py_cols:
        assert rec[k] == py_cols[k][0] or (math.isnan(rec[k]) and math.isnan(py_cols[k][0])), k
    assert set(rec["cos_delta_mean"]) == {"l1", "l2", "out"}
    # eval of that run: the CLI's numbers.
    same_json(hepsim.eval(checkpoint=str(tmp_path / "py" / "checkpoint.h5"), threads=1),
              cli("eval", "--checkpoint", tmp_path / "py" / "checkpoint.h5", "--threads", 1)[1])


def test_train_config_file_and_callback_errors(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"arch": "loop_mnist", "train-limit": 100, "test-limit": 50, "epochs": 2, "T1": 10, "T2": 4}')

    class Stop(Exception):
        pass

    def stop(record):
        raise Stop(record["epoch"])

    with pytest.raises(Stop):
        hepsim.train(str(path), out=str(tmp_path / "run"), quiet=True, threads=1, on_epoch=stop)
    # The run stopped after its first epoch, logged and checkpointed: it resumes to the end.
    r = hepsim.train(resume=str(tmp_path / "run"), quiet=True, threads=1)
    assert r["epochs"] == 2


@pytest.mark.parametrize("command,kw", [
    ("relax", dict(samples=-1)),
    ("relax", dict(tol=float("nan"))),
    ("relax", dict(solver="rk5")),
    ("relax", dict(nonsense=1)),
    ("jacobian", dict(data_dir="/nonexistent/dir")),
    ("gradcheck", dict(N="1,x")),
    ("train", dict(lr="fast", out="/tmp/never")),
    ("eval", dict(checkpoint="/nonexistent/run")),
])
def test_bad_input_raises_the_cli_message(command, kw):
    with pytest.raises(ValueError) as e:
        getattr(hepsim, command)(**kw)
    args = []
    for k, v in kw.items():
        args += ["--" + k.replace("_", "-"), repr(v) if isinstance(v, float) else str(v)]
    code, out, err = cli(command, *args, check=False)
    assert code == 2 and out is None
    assert str(e.value) == err.strip()


def test_a_refused_result_travels_with_the_error():
    with pytest.raises(ValueError) as e:
        hepsim.relax(samples=5, max_steps=3, tol=1e-12)
    assert "--max-steps" in str(e.value)
    assert e.value.result["max_steps"] == 5


def test_flag_spellings_and_booleans():
    # 'batch_size' and 'batch-size' are one flag, and the keyword overrides the dict.
    a = hepsim.relax({"batch-size": 100, "samples": 5, "max-steps": 100, "tol": 1e-3}, samples=2, threads=1)
    assert a["samples"] == 2
    same_json(a, cli("relax", "--batch-size", 100, "--samples", 2, "--max-steps", 100, "--tol", 1e-3, "--threads", 1)[1])
    # A switch is given or left out; a flag with a value takes on/off.
    with pytest.raises(ValueError, match="--warm-start"):
        hepsim.train(warm_start=True, algo="bp", out="/tmp/never")  # on: refused for bp, as the CLI does
    code, _, err = cli("train", "--warm-start", "on", "--algo", "bp", "--out", "/tmp/never", check=False)
    assert code == 2 and "--warm-start" in err


def test_no_command_inside_a_command(tmp_path):
    def nested(record):
        hepsim.relax(samples=2, max_steps=5)

    with pytest.raises(ValueError, match="a subcommand cannot run inside another one"):
        hepsim.train(arch="loop_mnist", train_limit=50, test_limit=20, epochs=1, T1=5, T2=2, quiet=True, threads=1,
                     out=str(tmp_path / "run"), on_epoch=nested)
    # Library calls from the callback are fine.
    seen = []
    ck = tmp_path / "run2"

    def library(record):
        seen.append(hepsim.jac.jac_sym(model, theta))

    model = hepsim.sim.Model("mlp_2-256", 784, 10)
    theta = model.init()
    hepsim.train(arch="loop_mnist", train_limit=50, test_limit=20, epochs=1, T1=5, T2=2, quiet=True, threads=1,
                 out=str(ck), on_epoch=library)
    assert len(seen) == 1


def test_wrong_keyword_values():
    with pytest.raises(ValueError, match="--samples"):
        hepsim.relax(samples=object())
    with pytest.raises(ValueError, match="unknown subcommand|help"):
        hepsim.relax(help=True)
    assert "--samples" in hepsim.help("relax")
    with pytest.raises(ValueError, match="unknown subcommand"):
        hepsim.help("nope")
