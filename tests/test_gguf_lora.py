"""A LoRA adapter of the embedded model, converted to GGUF (gguf_lora.py), changes llama.cpp's
next-token log-probabilities as it changes transformers': the retrained Self-Lengthen roles that
llama.cpp serves are the roles TRL trained."""

import shutil

import numpy as np
import pytest

from longform.errors import LongformError
from longform.models import gguf_lora
from longform.models.embedded import gguf_path
from longform.models.hf_model import load_causal_lm, resolve

pytestmark = pytest.mark.embedded

TEXT = "The history of tea in China began long ago, when travellers carried leaves along the roads"


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """An adapter on every linear module with B drawn at random (a trained one starts from B = 0 and
    after a step or two barely moves the model): a mapping error shows in the log-probabilities."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("adapter") / "random-lora"
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(resolve("embedded")),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
    for name, weight in model.named_parameters():
        if "lora_B" in name:
            weight.data.normal_(0, 0.3)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve("embedded")).save_pretrained(folder)   # as training saves it
    return folder


@pytest.fixture(scope="module")
def transformers_delta(adapter):
    """What the adapter changes in transformers' log-probabilities, at the base model's 50 likeliest
    next tokens after each position; and the token ids."""
    import torch

    base, tokenizer = load_causal_lm("embedded")
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    adapted, _ = load_causal_lm(str(adapter))   # merged into the base weights
    with torch.no_grad():
        before = _log_softmax(base(torch.tensor([ids])).logits[0].numpy())
        after = _log_softmax(adapted(torch.tensor([ids])).logits[0].numpy())
    top = np.argsort(-before, -1)[:, :50]
    return np.take_along_axis(after - before, top, 1), top, ids


def _llama_delta(lora, top, ids):
    from llama_cpp import Llama

    # llama.cpp's own eval, with a row of logits per token: importing llama_server (as other tests
    # in this process may have) replaces Llama.eval with one that keeps the last row only.
    from longform.models.llama_server import _eval_every_row

    def scores(path):
        llm = Llama(model_path=str(gguf_path()), lora_path=path, logits_all=True, n_ctx=128, verbose=False)
        _eval_every_row(llm, ids)
        return _log_softmax(np.array(llm.scores[:len(ids)]))
    return np.take_along_axis(scores(str(lora)) - scores(None), top, 1)


def test_llama_cpp_applies_the_converted_adapter_as_transformers_does(adapter, transformers_delta):
    expected, top, ids = transformers_delta
    lora = gguf_lora.lora_gguf(adapter)
    assert lora == adapter / "adapter.gguf" and gguf_lora.lora_gguf(adapter) == lora  # written once
    got = _llama_delta(lora, top, ids)
    scale = np.abs(expected).mean()
    assert scale > 1          # the adapter moves the model a lot
    # The same change, up to the quantised base's and the two runtimes' rounding.
    assert np.corrcoef(expected.ravel(), got.ravel())[0, 1] > 0.99
    assert np.abs(expected - got).mean() < 0.15 * scale, (np.abs(expected - got).mean(), scale)


def test_without_llama_cpps_query_and_key_row_order_the_check_above_fails(adapter, transformers_delta, tmp_path,
                                                                          monkeypatch):
    expected, top, ids = transformers_delta
    unpermuted = tmp_path / "unpermuted"
    shutil.copytree(adapter, unpermuted, ignore=shutil.ignore_patterns("*.gguf"))
    monkeypatch.setattr(gguf_lora, "_permute", lambda rows, n_head: rows)
    got = _llama_delta(gguf_lora.lora_gguf(unpermuted), top, ids)
    assert np.abs(expected - got).mean() > 0.2 * np.abs(expected).mean()


def test_an_adapter_llama_cpp_cannot_apply_is_refused_in_one_line(adapter, tmp_path):
    dora = tmp_path / "dora"
    shutil.copytree(adapter, dora, ignore=shutil.ignore_patterns("*.gguf"))
    config = (dora / "adapter_config.json").read_text().replace('"use_dora": false', '"use_dora": true')
    (dora / "adapter_config.json").write_text(config)
    with pytest.raises(LongformError, match="DoRA.*cannot be served by llama.cpp"):
        gguf_lora.lora_gguf(dora)
    assert not (dora / "adapter.gguf").exists()
