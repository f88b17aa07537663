"""`learnviz export`: each format reads back, with the tools that read it, into what the archives hold.
The projector export is read by TensorBoard's own projector plugin (its HTTP routes and its TSV
reader)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pandas as pd
import pytest

from learnviz import readout
from learnviz.errors import LearnvizError
from learnviz.export import export, tsv_cell
from learnviz.notebook import open_run
from learnviz.results import EXTRACT

from .conftest import plain, rewrite_extract

CLI = [sys.executable, "-m", "learnviz.cli"]
AWKWARD_PROMPT = "All cats\tare animals.\nSome animals are pets.\r\nWhat follows \\ about cats?"
AWKWARD_ANSWER = "Some\tcats\nare"


def projector(logdir):
    """GET on TensorBoard's projector plugin, serving `logdir` (as `tensorboard --logdir` would)."""
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    apps = ProjectorPlugin(base_plugin.TBContext(logdir=str(logdir))).get_plugin_apps()

    def get(route, **params):
        r = Client(apps[route], Response).get(route, query_string=params)
        assert r.status_code == 200, r.get_data(as_text=True)
        return r
    return get


def awkward(v1):
    """The fixture with probe 3's prompt and greedy answer holding tabs, newlines and a backslash."""
    def change(d):
        d["prompt"][3] = AWKWARD_PROMPT
        d["greedy_answer"][3] = AWKWARD_ANSWER
    for step in (10, 20, 40):
        rewrite_extract(v1 / f"checkpoint-{step}.h5", change)
    return v1


def test_tsv_cell_escapes_and_shortens():
    assert tsv_cell("a\tb\nc\r\nd\\e") == "a\\tb\\nc\\r\\nd\\\\e"
    assert tsv_cell("x" * 150) == "x" * 99 + "\u2026"
    assert tsv_cell("x" * 100) == "x" * 100
    assert "\t" not in tsv_cell("\t" * 200) and "\n" not in tsv_cell("\n\r" * 80)
    assert tsv_cell("a\x0bb\x00c\u2028d\x85") == "a\\x0bb\\x00c\\u2028d\\x85"      # nothing any reader splits at
    assert tsv_cell("caf\u00e9 \u2026 \U0001f600") == "caf\u00e9 \u2026 \U0001f600"         # other text as it is


def test_projector_export_reads_back_in_tensorboard(v1, tmp_path):
    from google.protobuf import text_format
    from tensorboard.plugins.projector import projector_config_pb2
    from tensorboard.plugins.projector.projector_plugin import _read_tensor_tsv_file

    run = open_run(awkward(v1))
    out = tmp_path / "tb"
    export(run, "tensorboard", out)
    config = text_format.Parse((out / "projector_config.pbtxt").read_text(), projector_config_pb2.ProjectorConfig())
    assert [e.tensor_name for e in config.embeddings] == ["step_10/layer_2", "step_20/layer_2", "step_40/layer_2"]

    get = projector(out)
    assert get("/runs").get_json() == ["."]
    info = get("/info", run=".").get_json()
    assert [e["tensorName"] for e in info["embeddings"]] == [e.tensor_name for e in config.embeddings]
    for emb, step in zip(config.embeddings, run.steps):
        expected = run.embeddings(step, 2).astype(np.float32)
        shape = tuple(emb.tensor_shape)
        assert shape == expected.shape == (30, 8)
        tensor = np.frombuffer(get("/tensor", run=".", name=emb.tensor_name).get_data(), dtype=np.float32)
        np.testing.assert_array_equal(tensor.reshape(shape), expected)                 # exact, through TSV
        np.testing.assert_array_equal(_read_tensor_tsv_file(str(out / emb.tensor_path)), expected)

        lines = get("/metadata", run=".", name=emb.tensor_name).get_data(as_text=True).split("\n")
        assert lines[-1] == "" and lines[0] == "probe_id\tskill\tcategory\tcorrect\tgreedy_answer\tprompt"
        rows = [line.split("\t") for line in lines[1:-1]]
        assert len(rows) == shape[0]                                                # one label row per vector
        assert all(len(r) == 6 for r in rows)
        probes = run.probes(step)
        assert [r[0] for r in rows] == probes["probe_id"].tolist()
        assert [r[1] for r in rows] == probes["skill"].tolist()
        assert [r[2] for r in rows] == probes["category"].tolist()
        assert [r[3] for r in rows] == ["true" if c else "false" for c in probes["correct"]]
        assert rows[3][5] == "All cats\\tare animals.\\nSome animals are pets.\\r\\nWhat follows \\\\ about cats?"
        assert rows[3][4] == "Some\\tcats\\nare"
        assert rows[0][5] == probes["prompt"][0][:99] + "\u2026"                       # long prompts shortened

    one = tmp_path / "one"
    export(run, "tensorboard", one, layer=1, which="20")
    info = projector(one)("/info", run=".").get_json()
    assert [e["tensorName"] for e in info["embeddings"]] == ["step_20/layer_1"]


def test_npz_export_reads_back_with_numpy(series_dir, tmp_path):
    run = open_run(series_dir)
    export(run, "npz", tmp_path)
    folder = tmp_path / "embeddings"
    archives = readout.series(series_dir)
    meta = archives[-1].read(EXTRACT, ["probe_ids", "probe_skill", "probe_category", "prompt", "expected"])
    probe_set = json.loads((folder / "probe_set.json").read_text())
    assert probe_set["probe_hash"] == run.probe_hash and probe_set["steps"] == run.steps
    assert probe_set["layers"] == [1, 2] and probe_set["probe_count"] == 30
    assert [p["id"] for p in probe_set["probes"]] == list(meta["probe_ids"])
    assert [p["prompt"] for p in probe_set["probes"]] == list(meta["prompt"])
    assert [p["skill"] for p in probe_set["probes"]] == list(meta["probe_skill"])
    coords = json.loads((folder / "umap_coords.json").read_text())
    assert coords["steps"] == run.steps and coords["probe_ids"] == list(meta["probe_ids"]) and not coords["missing"]
    for a in archives:
        with np.load(folder / f"checkpoint_{a.step}.npz", allow_pickle=False) as z:
            assert z["probe_ids"].tolist() == list(meta["probe_ids"])
            assert int(z["step"]) == a.step and z["layers"].tolist() == [1, 2]
            stored = a.read(EXTRACT, ["embeddings"])["embeddings"]
            for k in (1, 2):
                assert z[f"layer_{k}"].dtype == np.float16
                np.testing.assert_array_equal(z[f"layer_{k}"], stored[f"layer_{k}"])
                layout = np.asarray(coords["coords"][str(a.step)][str(k)], dtype=np.float32)
                np.testing.assert_array_equal(layout, readout.read_geometry(a).layers[k].coords)


def test_parquet_export_reads_back_with_pandas(series_dir, tmp_path):
    run = open_run(series_dir)
    written = export(run, "parquet", tmp_path)
    assert sorted(p.name for p in written) == ["checkpoints.parquet", "history.parquet", "probes.parquet"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "checkpoints.parquet"), run.checkpoints)
    probes = pd.read_parquet(tmp_path / "probes.parquet")
    pd.testing.assert_frame_equal(probes, run.probes("all"))
    assert len(probes) == 4 * 30
    history, expected = pd.read_parquet(tmp_path / "history.parquet"), run.history
    assert history.columns.tolist() == expected.columns.tolist()
    for col in expected.columns:                       # list cells come back as arrays
        assert plain(history[col].tolist()) == plain(expected[col].tolist()), col
    assert history["layer_drifts"].iloc[-1].tolist() == pytest.approx(expected["layer_drifts"].iloc[-1])


def test_csv_export_reads_back_with_pandas(series_dir, tmp_path):
    run = open_run(series_dir)
    export(run, "csv", tmp_path, which="latest")
    probes = pd.read_csv(tmp_path / "probes.csv")
    expected = run.probes(run.steps[-1])
    assert probes["probe_id"].tolist() == expected["probe_id"].tolist()
    assert probes["prompt"].tolist() == expected["prompt"].tolist()
    assert probes["correct"].tolist() == expected["correct"].tolist()
    np.testing.assert_allclose(probes["answer_logprob"], expected["answer_logprob"], rtol=1e-6)
    history = pd.read_csv(tmp_path / "history.csv")
    hist = run.history
    assert history["step"].tolist() == hist["step"].tolist()
    np.testing.assert_allclose(history["skill_scores.syllo_easy"], hist["skill_scores.syllo_easy"])
    assert [json.loads(x) for x in history["error_positions"]] == plain(hist["error_positions"].tolist())
    checkpoints = pd.read_csv(tmp_path / "checkpoints.csv")
    np.testing.assert_allclose(checkpoints["ece"], run.checkpoints["ece"])
    np.testing.assert_allclose(checkpoints["layer_1.cka_prev"], run.checkpoints["layer_1.cka_prev"])


def test_csv_keeps_awkward_texts_as_they_are(v1, tmp_path):
    """Texts with commas, quotes, line breaks, tabs, unicode, formula-like starts and NA-like words
    read back exactly with the reading docs/api.md gives (formulas are not defused: decided there)."""
    texts = ["a,b", 'say "hi"', "one\ntwo\r\nthree", "tab\there", "caf\u00e9 \U0001f600", "=1+2", "+SUM(A1)",
             "-3", "@x", "nan", "NA", "null", "  padded  "]

    def change(d):
        for i, text in enumerate(texts):
            d["probe_ids"][i], d["prompt"][i], d["greedy_answer"][i] = f"{text}#{i}", text, text
    rewrite_extract(v1 / "checkpoint-40.h5", change)
    run = open_run(v1)
    export(run, "csv", tmp_path, which="latest")
    probes = pd.read_csv(tmp_path / "probes.csv", keep_default_na=False, na_values=[""])
    expected = run.probes(40)
    for col in ("probe_id", "prompt", "greedy_answer"):
        assert probes[col].tolist() == expected[col].tolist(), col
    assert probes["prompt"][:len(texts)].tolist() == texts
    assert probes["first_divergence"].dtype == np.int64 and probes["correct"].dtype == bool


def test_export_errors(v1, tmp_path):
    with pytest.raises(LearnvizError) as e:
        export(v1, "hdf5", tmp_path)
    assert "tensorboard, npz, parquet, csv" in str(e.value)
    (tmp_path / "file").write_text("")
    with pytest.raises(LearnvizError) as e:
        export(v1, "npz", tmp_path / "file")
    assert str(tmp_path / "file") in str(e.value)
    with pytest.raises(LearnvizError) as e:
        export(v1, "tensorboard", tmp_path / "tb", layer=7)
    assert "pooled layers (decoder blocks, 0-based): 1, 2" in str(e.value)


def test_a_folder_that_cannot_be_written_is_named_with_what_to_do(v1, tmp_path):
    """A read-only or full --out: the error names the file to be written (not its hidden temporary
    sibling) and says what to do; nothing half-written is left."""
    def read_only(*args, **kw):      # as a read-only file system answers a rename and an unlink
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(args[0]))
    for fmt, first in (("csv", "history.csv"), ("parquet", "history.parquet"),
                       ("npz", "embeddings/checkpoint_10.npz"), ("tensorboard", "step_10/layer_2.tsv")):
        with mock.patch("os.replace", side_effect=read_only), \
                mock.patch("pathlib.Path.unlink", autospec=True, side_effect=read_only), \
                pytest.raises(LearnvizError) as e:
            export(v1, fmt, tmp_path / fmt)
        text = str(e.value)
        assert text.startswith(f"{tmp_path / fmt / first}: cannot write: {os.strerror(errno.EROFS)}"), text
        assert ".tmp" not in text and "pass --out a folder you can write to" in text
        assert not [p for p in (tmp_path / fmt).rglob("*") if p.is_file() and not p.name.startswith(".")]


def test_export_command(v1, tmp_path):
    for fmt, name in (("tensorboard", "projector_config.pbtxt"), ("npz", "embeddings/checkpoint_40.npz"),
                      ("parquet", "probes.parquet"), ("csv", "history.csv")):
        out = subprocess.run(CLI + ["export", fmt, "--archive", str(v1), "--out", str(tmp_path / fmt)],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert f"({fmt}) to {tmp_path / fmt}" in out.stdout and (tmp_path / fmt / name).is_file()
    root = tmp_path / "root"
    root.mkdir()
    v1.rename(root / "learnviz-archive")
    out = subprocess.run(CLI + ["export", "npz", "--checkpoints", str(root), "--out", str(tmp_path / "via-root"),
                                "--checkpoint", "latest", "--layer", "1"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    with np.load(tmp_path / "via-root" / "embeddings" / "checkpoint_40.npz") as z:
        assert sorted(z.files) == ["layer_1", "layers", "probe_ids", "step"]
    bad = subprocess.run(CLI + ["export", "csv", "--checkpoints", str(root), "--out", str(tmp_path / "x"),
                                "--checkpoint", "30"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no archived checkpoint at step '30'" in bad.stderr
    assert "archived steps: 10, 20, 40" in bad.stderr and "Traceback" not in bad.stderr
    missing = subprocess.run(CLI + ["export", "csv", "--archive", str(tmp_path / "nowhere"), "--out",
                                    str(tmp_path / "x")], capture_output=True, text=True)
    assert missing.returncode == 2 and str(tmp_path / "nowhere") in missing.stderr and "Traceback" not in missing.stderr


def test_a_step_whose_extraction_failed_is_named_with_its_reason(v1, tmp_path):
    """Asked for by number, an archived checkpoint whose extraction failed is not "no archived
    checkpoint": the export, the notebook API and `learnviz analyze` give the archive's reason."""
    from learnviz import archive as arc
    a = arc.Archive(v1 / "checkpoint-20.h5")
    info = a.stage(EXTRACT)
    arc.write_stage(a.path, EXTRACT, key=info.key, root_attrs=a.attrs, data={}, status="failed",
                    reason="CUDA out of memory at batch 3")
    arc.clear_memo()
    run = open_run(v1)
    assert run.steps == [10, 40]
    assert run.left_out == {20: "the extraction of checkpoint-20.h5 failed: CUDA out of memory at batch 3"}
    with pytest.raises(LearnvizError) as e:
        run.probes(20)
    assert "step 20 is archived but has no usable extraction" in str(e.value)
    assert "CUDA out of memory at batch 3" in str(e.value)
    bad = subprocess.run(CLI + ["export", "csv", "--archive", str(v1), "--out", str(tmp_path / "x"),
                                "--checkpoint", "20"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "checkpoint at step 20 is archived but has no usable extraction" in bad.stderr
    assert "failed: CUDA out of memory at batch 3" in bad.stderr and "usable steps: 10, 40" in bad.stderr
    assert not (tmp_path / "x").exists()
    analyze = subprocess.run(CLI + ["analyze", "--archive", str(v1), "--checkpoint", "20"],
                             capture_output=True, text=True)
    assert analyze.returncode == 2 and "failed: CUDA out of memory at batch 3" in analyze.stderr
    unknown = subprocess.run(CLI + ["export", "csv", "--archive", str(v1), "--out", str(tmp_path / "x"),
                                    "--checkpoint", "30"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "no archived checkpoint at step '30'" in unknown.stderr


def test_npz_export_names_every_layer_without_a_layout(v1, tmp_path):
    """A checkpoint lacking the layouts of two layers: umap_coords.json kept only the last layer's
    reason, and listed the step in `steps` with no coordinates."""
    import h5py
    run = open_run(v1)
    last = readout.series(v1)[-1]
    layers = run.pooled_layers(last.step)
    assert len(layers) >= 2
    with h5py.File(last.path, "r+") as f:
        for k in layers:
            del f[f"geometry/layer_{k}/coords"]
    export(open_run(v1), "npz", tmp_path)
    coords = json.loads((tmp_path / "embeddings" / "umap_coords.json").read_text())
    assert coords["steps"] == run.steps[:-1] and str(last.step) not in coords["coords"]
    why = coords["missing"][str(last.step)]
    assert all(f"has no UMAP layout of layer {k}" in why for k in layers), why
    assert list(coords["missing"]) == [str(last.step)]
