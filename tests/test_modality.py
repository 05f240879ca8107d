"""The modality seam: modalities come from a registry, detect their runs and own their models."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from freezetune.cli import main
from freezetune.config import RunConfig
from freezetune.errors import UserError
from freezetune.inputs import check_inputs
from freezetune.modality import (
    MODALITIES,
    TEXT,
    Loaded,
    modality_of,
    model_modality,
    register_modality,
)
from freezetune.testing import assert_one_line_error, tiny_run_config
from freezetune.training import train
from freezetune.vision.modality import IMAGE
from test_plugins import _install

GROUP = "freezetune.modalities"


def _as_sst2(config: RunConfig) -> RunConfig:
    """The text run that the toy modality's ``words-sst2`` task stands for (``--max-length``
    is declared for text alone, so its run sets none: 24 tokens fit the tiny model)."""
    data = dataclasses.replace(config.data, task="sst2", max_length=24)
    return dataclasses.replace(config, data=data)


class Words:
    """A plugin's modality: text under another name, for its own task and model type; every
    call is recorded, so a test sees which parts of freezetune went through it."""

    name = "words"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def owns(self, model_config: Any) -> bool:
        return getattr(model_config, "model_type", None) == "words-bert"

    def detect(self, config: RunConfig) -> bool:
        return config.data.task == "words-sst2"

    def __getattr__(self, method: str) -> Any:
        """Every other method is text's, on the sst2 run this one stands for."""
        if method.startswith("__"):
            raise AttributeError(method)
        text = getattr(TEXT, method)

        def delegate(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(method)
            shown = [_as_sst2(a) if isinstance(a, RunConfig) else a for a in args]
            return text(*shown, **kwargs)

        return delegate


@pytest.fixture
def words():
    modality = Words()
    register_modality(modality, source="freezetune-words")
    yield modality
    MODALITIES.unregister("words")


def test_builtins_detect_their_runs_and_own_their_models(tiny_image_folders):
    assert modality_of(RunConfig()) is TEXT
    assert modality_of(RunConfig.from_dict({"data": {"task": "fashion-mnist"}})) is IMAGE
    folder = RunConfig.from_dict({"data": {"train_file": tiny_image_folders[0]}})
    assert modality_of(folder) is IMAGE
    vit = SimpleNamespace(model_type="vit", num_channels=3)
    assert model_modality(vit) is IMAGE
    assert model_modality(SimpleNamespace(model_type="bert", vocab_size=9)) is TEXT
    assert model_modality(SimpleNamespace(model_type="freezetune-image")) is IMAGE
    assert model_modality(None) is TEXT  # an unreadable config: text's loader says why
    assert MODALITIES.source("image") == "freezetune"


def test_a_registered_modality_reads_its_runs_end_to_end(words, tiny_bert, tmp_path):
    assert modality_of(RunConfig.from_dict({"data": {"task": "words-sst2"}})) is words
    assert modality_of(RunConfig()) is TEXT  # the others' runs stay theirs
    assert model_modality(SimpleNamespace(model_type="words-bert", vocab_size=9)) is words
    assert "words" in MODALITIES and MODALITIES.source("words") == "freezetune-words"
    config = tiny_run_config(
        tiny_bert, tmp_path / "run", "bottom:2", task="words-sst2", train={"epochs": 2}
    )
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, max_length=128))
    setup = check_inputs(config)
    assert setup.modality is words and isinstance(setup.loaded, Loaded)
    assert setup.loaded.processor.pad_token_id is not None  # text's tokenizer, via words
    result = train(config)
    assert result.status == "succeeded"
    # the frozen prefix was cached through the modality's shapes, not by reading the batch
    assert {"load_data", "load_model", "features", "collator", "lengths", "input_shape"} <= set(
        words.calls
    )
    assert result.cache is not None and result.cache["train"]["hits"] > 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model_type"] == "freezetune"


def test_a_wrong_modality_is_refused_in_one_line():
    with pytest.raises(UserError, match=r"^unknown modality 'audio'; choose one of: text, image"):
        MODALITIES.get("audio")
    with pytest.raises(UserError, match=r"'half' from package 'tests' is not a Modality \(no "):
        MODALITIES.register("half", SimpleNamespace(name="half", owns=len), source="tests")
    with pytest.raises(UserError, match=r"'text' from package 'mine' clashes with the one from"):
        register_modality(TEXT, source="mine")
    assert MODALITIES.names() == ["text", "image"]


def test_image_stand_ins_have_the_recorded_shape():
    batch = {"pixel_values": torch.ones(4, 3, 8, 8)}
    shape = IMAGE.input_shape(batch)
    assert shape == (3, 8, 8) and IMAGE.lengths([{"pixel_values": None}]) is None
    assert IMAGE.stand_in(2, shape, None, torch.device("cpu"))["pixel_values"].shape == (2, 3, 8, 8)
    lengths = torch.tensor([2, 4])
    text = TEXT.stand_in(2, (4,), lengths, torch.device("cpu"))
    assert text["attention_mask"].sum(1).tolist() == [2, 4]
    assert TEXT.input_shape(text) == (4,)


AUDIO = """
    from freezetune.modality import TEXT

    class Audio:
        name = "audio"

        def detect(self, config):
            return config.data.task == "speech-commands"

        def owns(self, model_config):
            return getattr(model_config, "model_type", None) == "wav2vec2"

        def __getattr__(self, method):
            return getattr(TEXT, method)

    PLUGIN = Audio()
"""


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Plugins installed in ``tmp_path``, found by a fresh look at the entry points."""
    monkeypatch.syspath_prepend(str(tmp_path))
    MODALITIES.refresh()
    yield tmp_path
    for name in ("audio", "broken"):
        MODALITIES.unregister(name)
    MODALITIES.refresh()


def test_an_installed_modality_is_found_through_its_entry_point(installed):
    _install(installed, "freezetune-audio", "ft_audio", AUDIO, GROUP, "audio")
    speech = RunConfig.from_dict({"data": {"task": "speech-commands"}})
    assert modality_of(speech).name == "audio"
    assert MODALITIES.source("audio") == "freezetune-audio"
    wav2vec2 = SimpleNamespace(model_type="wav2vec2", vocab_size=32)  # asked before text
    assert model_modality(wav2vec2).name == "audio"
    assert modality_of(RunConfig()) is TEXT


def test_a_broken_modality_plugin_is_one_line_naming_its_package(installed, tiny_bert, capsys):
    broken = "raise ImportError('No module named torchaudio')\n"
    _install(installed, "freezetune-broken", "ft_broken", broken, GROUP, "broken")
    code = main(["inspect", "--model", tiny_bert])
    assert assert_one_line_error(code, capsys.readouterr().err).endswith(
        "modality 'broken' from package 'freezetune-broken' failed to load: "
        "ImportError: No module named torchaudio; reinstall it or uninstall it"
    )
