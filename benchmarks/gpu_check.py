"""CUDA check of the plain-torch path: feature extraction, cached-feature and LoRA training.

Runs without Flower or Ray (for a GPU machine that has torch and transformers but
not fedmtl's simulation stack): the same functions the ClientApp calls.

1. ``extract_features`` on CUDA matches the CPU result (digits CNN, a 6-layer BERT
   with MiniLM's shape, random weights).
2. ``train_local`` / ``evaluate`` with cached features move only the heads to CUDA;
   the (shared, frozen) backbone stays where it was.
3. ``train_local`` of LoRA adapters on a transformer runs on CUDA and lowers the loss.
4. Feature-extraction throughput (texts per second), CPU vs CUDA, MiniLM-sized encoder.

    python benchmarks/gpu_check.py

Writes results/gpu_check.json and results/gpu_check.md.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fedmtl.features import extract_features
from fedmtl.models import build_backbone, build_model
from fedmtl.models.lora import apply_lora
from fedmtl.training import TrainSettings, evaluate, train_local

RESULTS = Path(__file__).resolve().parent / "results"


def _texts(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    words = [
        "the",
        "cat",
        "dog",
        "sat",
        "on",
        "a",
        "mat",
        "market",
        "fell",
        "sharply",
        "today",
        "weather",
        "is",
        "sunny",
    ]
    return np.array([" ".join(rng.choice(words, size=12)) for _ in range(n)], dtype=object)


def _bert_dir(hidden: int, layers: int, heads: int, where: Path) -> Path:
    """A random BERT of the given shape and a word-level vocabulary, saved under ``where``."""
    from transformers import BertConfig, BertModel, BertTokenizer

    words = sorted({w for t in _texts(200) for w in str(t).split()})
    where.mkdir(parents=True, exist_ok=True)
    vocab = where / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizer(vocab_file=str(vocab)).save_pretrained(where)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
    )
    BertModel(config).save_pretrained(where)
    return where


def check_feature_parity(cuda: torch.device, bert: str) -> dict[str, float]:
    """Max |CPU - CUDA| of extracted features per backbone."""
    out = {}
    torch.manual_seed(0)
    cnn = build_backbone("digits-cnn")
    images = np.random.default_rng(0).random((300, 1, 8, 8), dtype=np.float32)
    cpu = extract_features(cnn, images)
    gpu = extract_features(cnn, images, cuda)
    out["digits-cnn"] = float((cpu - gpu).abs().max())
    encoder = build_backbone(f"hf:{bert}", "builtin", {"max-length": 32})
    texts = _texts(300)
    cpu = extract_features(encoder.cpu(), texts)
    gpu = extract_features(encoder, texts, cuda)
    out["bert-6x384"] = float((cpu - gpu).abs().max())
    return out


def check_cached_training(cuda: torch.device) -> dict[str, Any]:
    """Heads train on CUDA from cached CPU features; the backbone is not moved."""
    model = build_model("digits-cnn", {"digit": 10}, "none", seed=0)
    rng = np.random.default_rng(1)
    x = rng.random((256, 1, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, 256)
    features = extract_features(model.backbone, x)
    trainable = {"heads.digit.weight", "heads.digit.bias"}
    settings = TrainSettings(epochs=3, batch_size=32, learning_rate=0.05, seed=0)
    result = train_local(model, "digit", x, y, settings, trainable, device=cuda, features=features)
    metrics = evaluate(model, "digit", x, y, cuda, features=features)
    return {
        "train-loss": result["loss"],
        "eval-accuracy": metrics["accuracy"],
        "head-device": str(model.heads["digit"].weight.device),
        "backbone-device": str(next(model.backbone.parameters()).device),
    }


def check_lora_training(cuda: torch.device, bert: str) -> dict[str, Any]:
    """LoRA adapters of a transformer train on CUDA: the loss goes down."""
    model = build_model(f"hf:{bert}", {"topic": 2}, "builtin", 0, {"max-length": 32})
    apply_lora(model.backbone, rank=4, alpha=8.0, seed=0)
    texts = _texts(128, seed=2)
    y = np.array([int("market" in str(t)) for t in texts])
    trainable = {n for n, _ in model.named_parameters() if ".lora_" in n or n.startswith("heads.")}
    losses = []
    for epoch in range(3):
        settings = TrainSettings(
            epochs=1, batch_size=16, learning_rate=0.003, optimizer="adam", seed=epoch
        )
        losses.append(
            train_local(model, "topic", texts, y, settings, trainable, device=cuda)["loss"]
        )
    return {"epoch-losses": losses, "lora-device": str(next(model.backbone.parameters()).device)}


def throughput(device: torch.device, bert: str, n: int) -> float:
    """Texts per second of feature extraction on ``device`` (after one warm-up batch)."""
    encoder = build_backbone(f"hf:{bert}", "builtin", {"max-length": 64})
    texts = _texts(n, seed=3)
    extract_features(encoder, texts[:64], device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    extract_features(encoder, texts, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def main() -> None:
    """Run the checks and write the results."""
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible: run this on a GPU machine")
    cuda = torch.device("cuda")
    bert = str(_bert_dir(384, 6, 12, Path("/tmp/fedmtl-bert-6x384")))
    payload: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu-threads": torch.get_num_threads(),
        "feature-max-abs-diff": check_feature_parity(cuda, bert),
        "cached-feature-training": check_cached_training(cuda),
        "lora-training": check_lora_training(cuda, bert),
        "texts-per-s": {
            "cpu": throughput(torch.device("cpu"), bert, 512),
            "cuda": throughput(cuda, bert, 4096),
        },
    }
    lora_losses = payload["lora-training"]["epoch-losses"]
    ok = (
        max(payload["feature-max-abs-diff"].values()) < 1e-3
        and payload["cached-feature-training"]["backbone-device"] == "cpu"
        and payload["cached-feature-training"]["head-device"].startswith("cuda")
        and payload["lora-training"]["epoch-losses"][-1]
        < payload["lora-training"]["epoch-losses"][0]
    )
    payload["all-checks-pass"] = ok
    speed = payload["texts-per-s"]
    table = "\n".join(
        [
            f"GPU check on {payload['device']} (torch {payload['torch']}):",
            "",
            "| check | result |",
            "|---|---|",
            f"| features CPU vs CUDA, max abs diff | {payload['feature-max-abs-diff']} |",
            f"| cached-feature training | {payload['cached-feature-training']} |",
            f"| LoRA training on CUDA, loss per epoch | {lora_losses} |",
            f"| MiniLM-sized encoder, texts/s | CPU ({payload['cpu-threads']} threads) "
            f"{speed['cpu']:.0f}, CUDA {speed['cuda']:.0f} |",
            f"| all checks pass | {ok} |",
        ]
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gpu_check.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / "gpu_check.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
