import pytest

from fora_core import ForaConfigError, ModelLoadError, ModelSource


def test_unreachable_hub_id_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError) as info:
        ModelSource("no-such-org/no-such-model").load()
    msg = str(info.value)
    assert "no-such-org/no-such-model" in msg and "\n" not in msg


def test_local_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        ModelSource(str(tmp_path)).load()


def test_bad_spec_and_dtype():
    with pytest.raises(ForaConfigError, match="'model'"):
        ModelSource("  ")
    with pytest.raises(ForaConfigError, match="'dtype'"):
        ModelSource("smollm2-135m", dtype="int8")


def test_local_folder_round_trip(tmp_path):
    from tiny_models import tiny_model
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tiny_model("llama").save_pretrained(tmp_path)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")),
                                  eos_token="[UNK]")
    tok.save_pretrained(tmp_path)
    model, tokenizer = ModelSource(str(tmp_path)).load()
    assert model.config.num_hidden_layers == 4
    assert tokenizer.pad_token == "[UNK]"
