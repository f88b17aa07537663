"""A notebook, as a script: a run's archives as pandas DataFrames and numpy arrays (docs/api.md).

    python examples/notebook.py                                  # the demo (`learnviz demo --no-serve`)
    python examples/notebook.py runs/gpt2-small                  # a checkpoints root, or an archive folder

Each `# %%` block is a notebook cell (VS Code, Jupytext and PyCharm run them one by one). It
needs pandas (`pip install 'learnviz[notebook]'`); matplotlib, for the last cell, comes with
learnviz.
"""

# %% Open a run: reads nothing yet but the folder listing
import sys
import tempfile
from pathlib import Path

import learnviz
from learnviz.errors import LearnvizError

path = sys.argv[1] if len(sys.argv) > 1 else "learnviz-demo"
run = learnviz.open_run(path)
print(run)
print(f"{len(run.steps)} checkpoints, steps {run.steps[0]}..{run.steps[-1]}, layers {run.layers}")

# %% The learning history: one row per step, nested dicts flattened to dotted columns
history = run.history
skills = [c for c in history.columns if c.startswith("skill_scores.")]
print(history[["step", "accuracy", *skills]].to_string(index=False))

# %% One row per checkpoint: stage states, accuracy per skill, ECE, drift and CKA of the last layer
checkpoints = run.checkpoints
print(checkpoints[["step", "extract", "analysis", "geometry", "accuracy", "ece", "drift_prev", "cka_prev"]]
      .to_string(index=False))

# %% The probes at the latest checkpoint: which skills improved, which probes are still wrong
last = run.steps[-1]
probes = run.probes(last)
print(f"probes at step {last}: {len(probes)} rows")
print(probes.groupby("skill")[["correct", "confidence", "mean_entropy"]].mean().round(3).to_string())
wrong = probes[~probes["correct"]].sort_values("answer_logprob")
print(wrong[["probe_id", "expected", "greedy_answer", "first_divergence"]].head(5).to_string(index=False))

# %% Every checkpoint at once (long format): accuracy per skill over training
every = run.probes("all")
print(every.pivot_table(index="step", columns="skill", values="correct", aggfunc="mean").round(2).to_string())

# %% The answer tokens of the hardest probe: teacher-forced logprob and entropy per position
if len(wrong):
    tokens = run.tokens(last)
    print(tokens[tokens["probe_id"] == wrong["probe_id"].iloc[0]]
          [["position", "token_text", "logprob", "entropy", "is_argmax"]].to_string(index=False))

# %% Embeddings and the aligned UMAP layout: plain numpy arrays
layer = run.layers[-1]
emb = run.embeddings(last, layer)
print(f"embeddings of decoder block {layer} at step {last}: {emb.shape} {emb.dtype}")
try:
    xy = run.coords(last, layer)
    print(f"UMAP layout: {xy.shape}, x in [{xy[:, 0].min():.2f}, {xy[:, 0].max():.2f}]")
except LearnvizError as exc:          # the geometry stage has not run yet
    print(f"no layout: {exc}")

# %% Across the run (series.h5): when each answer token is learned, and dataset cartography
try:
    traj = run.trajectories()
    print(f"{traj['learned'].mean():.0%} of {len(traj)} answer tokens learned; first learned:")
    print(traj.sort_values("rank").head(3)[["probe_id", "position", "learned_at"]].to_string(index=False))
    cart = run.cartography()
    print(cart.groupby("skill")["region"].value_counts().unstack(fill_value=0).to_string())
except LearnvizError as exc:          # no series.h5 yet
    print(f"no series: {exc}")

# %% Figures drawn by `learnviz visualize`: paths, or an error that lists what exists
try:
    print(run.figure("loss_curve"))
except LearnvizError as exc:
    print(exc)

# %% Two runs of the same probe set side by side (here: the run with itself)
cmp = run.compare(run)
print(f"compared with itself: {cmp.shape[0]} steps, {cmp.shape[1]} columns")

# %% Export: the same data for TensorBoard's projector, numpy, Parquet or CSV
from learnviz.export import export  # noqa: E402

with tempfile.TemporaryDirectory() as out:
    written = export(run, "npz", out, which="latest")
    print("npz:", ", ".join(str(Path(p).relative_to(out)) for p in written))

# %% A plot: accuracy per skill over training
import matplotlib  # noqa: E402

matplotlib.use("Agg")
ax = history.plot(x="step", y=skills, marker="o", title=f"{run.name}: accuracy per skill")
ax.figure.savefig("accuracy_per_skill.png", dpi=80)
print("wrote accuracy_per_skill.png")
