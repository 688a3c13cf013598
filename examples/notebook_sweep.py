# %% [markdown]
# # A tiny sweep from a notebook
#
# How does label skew (`dirichlet-alpha`: small = each client sees few classes) change what
# FedAvg reaches on the digits experiment? A deliberately tiny sweep (2 clients, 1 round,
# 1 seed: well under a minute on a laptop CPU) run through the Python API, its table as a
# DataFrame, and a plot. Needs `pip install "fedmtl[api]"` (pandas).
#
# Open it as a notebook (VS Code, Jupytext) or run it: `python examples/notebook_sweep.py`.
# Running it again reuses the finished runs: the sweep folder is found from the arguments.

# %%
import os

import matplotlib.pyplot as plt

import fedmtl

OUTPUT_DIR = os.environ.get("FEDMTL_EXAMPLE_OUTPUT", "runs")

# %% [markdown]
# ## Run the sweep
# Every grid point's config is validated before the first run; a typo in a key stops here.

# %%
sweep = fedmtl.sweep(
    "digits",
    grid={"dirichlet-alpha": [0.1, 1.0]},
    seeds=[0],
    output_dir=OUTPUT_DIR,
    num_clients=2,
    num_rounds=1,
    tasks=["digit"],
    max_examples_per_task=200,
)
print(sweep.sweep_dir)

# %% [markdown]
# ## The results table
# One row per grid point and task: mean over clients (then over seeds), its sd over seeds,
# the worst client, and how many seeds finished.

# %%
table = sweep.table
print(table.to_string(index=False))

# %% [markdown]
# ## Curves: every run's per-round accuracy, one line per grid point

# %%
rounds = sweep.rounds
evaluated = rounds[rounds["phase"] == "evaluate"]
curves = evaluated.groupby(["dirichlet-alpha", "round"], as_index=False)["accuracy-mean"].mean()
print(curves.to_string(index=False))

# %% [markdown]
# ## Plot: final accuracy against dirichlet-alpha (error bar: sd over seeds)

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
for task, rows in table.groupby("task"):
    left.errorbar(rows["dirichlet-alpha"], rows["mean"], yerr=rows["sd"], marker="o", label=task)
    left.scatter(rows["dirichlet-alpha"], rows["worst"], marker="_", color="black")
left.set(xscale="log", xlabel="dirichlet-alpha", ylabel="final accuracy (-: worst client)")
left.legend()
for alpha, rows in curves.groupby("dirichlet-alpha"):
    right.plot(rows["round"], rows["accuracy-mean"], marker="o", label=f"alpha={alpha}")
right.set(xlabel="round", ylabel="mean client accuracy")
right.legend()
figure_path = sweep.sweep_dir / "plots" / "notebook.png"
fig.savefig(figure_path, dpi=100)
print(f"saved {figure_path}")
