"""Built-in offline dataset: scikit-learn's bundled 8x8 digits, with four tasks.

The tasks share the images and differ in label space, which is the multi-task
setting in miniature: digit identity (10-way), parity (2), "at least five" (2),
the digit modulo 3 (3), and ``digit-value``, a regression: the digit as a
number (one output, Huber loss on standardized targets; MAE, RMSE, R²).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from fedmtl.data.registry import DATASETS, BaseData, DatasetEntry, DatasetSpec, TaskSpec


@lru_cache(maxsize=1)
def load_digits_data() -> BaseData:
    """Load the 1,797 images as float32 ``(N, 1, 8, 8)`` in [0, 1] and their digits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    return BaseData(x=x, y=y)


DIGIT_TASKS = {
    "digit": TaskSpec("digit", 10, lambda y: y, description="digit identity, 10 classes"),
    "parity": TaskSpec("parity", 2, lambda y: y % 2, description="odd (1) or even (0)"),
    "ge5": TaskSpec("ge5", 2, lambda y: (y >= 5).astype(np.int64), description="digit >= 5"),
    "mod3": TaskSpec("mod3", 3, lambda y: y % 3, description="digit modulo 3"),
    "digit-value": TaskSpec(
        "digit-value",
        1,
        lambda y: y.astype(np.float64),
        kind="regression",
        description="the digit as a number, regression (MAE in digits)",
        # Mean and population std of the digit over the clients' pool (the 1,258
        # images outside the pretraining source split), pinned so importing loads no
        # data: fedmtl.data.registry.regression_task gives exactly these (tests check).
        target_mean=4.48489666136725,
        target_std=2.893473418461518,
    ),
}

DIGITS = DatasetSpec(name="digits", load=load_digits_data, tasks=DIGIT_TASKS)

DATASETS.add(
    "digits",
    DatasetEntry(
        build=lambda options: DIGITS,
        description=(
            "scikit-learn's 1,797 8x8 digits; tasks digit, parity, ge5, mod3, "
            "digit-value (regression), offline"
        ),
    ),
)
