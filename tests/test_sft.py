"""SFT with observation masking: the mask on WebDancer's samples, truncation accounting, the trainer's labels, a tiny
real training run that saves, resumes, reloads and generates."""

from __future__ import annotations

import json
import re

import pytest
import torch

from wdlib import config, models, params, plots, react, sft
from wdlib.trajectory import Trajectory, append_jsonl, load_webdancer

SAMPLES = config.REPO_ROOT.parent / "shared" / "data" / "webdancer-samples" / "sample_traj.jsonl"
MODEL = "embedded:smollm2-135m"

pytestmark = pytest.mark.skipif(not SAMPLES.is_file(), reason="WebDancer samples not found")


@pytest.fixture(scope="module")
def tok():
    return models.load_tokenizer(MODEL)


@pytest.fixture(scope="module")
def conversations():
    convs = [sft.to_conversation(t) for t in load_webdancer(SAMPLES)]
    assert all(c is not None for c in convs)
    return convs


def _cfg(tmp_path, **sft_overrides):
    data = params.load("params/ci.yaml").dump()
    data["run"].update(output_dir=str(tmp_path), name="t", device="cpu")
    data["wandb"]["mode"] = "disabled"
    data["sft"]["max_external"] = None  # every released sample, unless a test asks for fewer
    data["sft"].update(sft_overrides)
    return params.from_dict(data)


def _expected_mask(messages, tok):
    """Mask derived independently from character positions in the rendered text: 1 inside an assistant turn's
    generated part (from after `<|im_start|>assistant` through its `<|im_end|>\\n`), 0 elsewhere; also returns the
    token classes (assistant / observation / prompt) for the explicit checks."""
    text = tok.apply_chat_template(messages, tokenize=False, chat_template=sft.training_chat_template(tok))
    enc = tok(text, return_offsets_mapping=True, add_special_tokens=False)
    spans = {"assistant": [m.span(1) for m in re.finditer(r"<\|im_start\|>assistant(.*?<\|im_end\|>\n)", text, re.S)],
             "observation": [m.span() for m in re.finditer(r"<tool_response>.*?</tool_response>", text, re.S)]}
    classes = []
    for start, end in enc["offset_mapping"]:
        inside = [name for name, ss in spans.items() if any(a <= start and end <= b for a, b in ss)]
        straddles = any(a < end and start < b and not (a <= start and end <= b) for a, b in spans["assistant"])
        assert not straddles, f"a token straddles an assistant turn boundary at {start}:{end}"
        classes.append(inside[0] if inside else "prompt")
    return enc["input_ids"], classes, text


def test_mask_on_all_webdancer_samples(tok, conversations):
    n_obs_tokens = 0
    for conv in conversations:
        ids, mask = sft.loss_mask(conv, tok)
        ref_ids, classes, text = _expected_mask(conv, tok)
        assert ids == ref_ids
        assert len(mask) == len(ids)
        for tok_id, bit, cls in zip(ids, mask, classes):
            if cls == "observation":
                assert bit == 0
                n_obs_tokens += 1
            elif cls == "assistant":
                assert bit == 1, f"assistant token {tok.decode([tok_id])!r} not trained"
            else:
                assert bit == 0, f"prompt token {tok.decode([tok_id])!r} trained"
        # every assistant turn's <|im_end|> is trained; the other <|im_end|>s are not
        ends = [bit for tok_id, bit in zip(ids, mask) if tok_id == tok.eos_token_id]
        n_assistant = sum(m["role"] == "assistant" for m in conv)
        assert sum(ends) == n_assistant and len(ends) == len(conv)
        # what is trained is exactly the assistant messages (plus the template's newlines around them)
        trained = tok.decode([i for i, b in zip(ids, mask) if b])
        assert trained == "".join(f"\n{m['content']}<|im_end|>\n" for m in conv if m["role"] == "assistant")
    assert n_obs_tokens > 100_000  # the samples really have observations, and all of them were checked


def test_truncation_keeps_answer_and_is_counted(tok, conversations):
    limit = 2048
    statuses = []
    for conv in conversations[:20]:
        full_ids, _ = sft.loss_mask(conv, tok)
        assert len(full_ids) > limit  # every released sample is longer than this
        enc = sft.encode(conv, tok, max_length=limit)
        statuses.append(enc.status)
        if enc.status == "dropped":
            assert enc.input_ids == [] and enc.tokens_removed == len(full_ids)
            continue
        assert len(enc.input_ids) <= limit
        assert enc.tokens_removed == len(full_ids) - len(enc.input_ids) > 0
        ref_ids, classes, _ = _expected_mask(enc.messages, tok)  # the mask rules still hold after fitting
        assert ref_ids == enc.input_ids
        assert all((c == "assistant") == bool(b) for c, b in zip(classes, enc.mask))
        if enc.status == "truncated":
            assert enc.messages[-1] == conv[-1]  # the final answer kept
            assert len(enc.messages) == len(conv)
            assert sft.TRUNCATION_MARK in enc.messages[-2]["content"]  # the last observation shortened first
        else:
            assert enc.status == "cut" and enc.messages[-1]["role"] == "assistant" and len(enc.messages) < len(conv)
    assert "truncated" in statuses and "cut" in statuses

    # a conversation whose observations alone are too long: the last one is shortened, the answer kept
    long_obs = conversations[0][:2] + [{"role": "assistant", "content": "<think>look</think>\n<tool_call>\n{}\n</tool_call>"},
                           {"role": "user", "content": "<tool_response>\n" + "word " * 3000 + "\n</tool_response>"},
                           {"role": "assistant", "content": "<think>done</think>\n<answer>42</answer>"}]
    enc = sft.encode(long_obs, tok, max_length=1400)
    assert enc.status == "truncated" and len(enc.input_ids) <= 1400
    assert enc.messages[-1]["content"].endswith("<answer>42</answer>")
    assert enc.messages[-2]["content"].startswith("<tool_response>\nword word")
    assert enc.messages[-2]["content"].endswith(sft.TRUNCATION_MARK + "\n</tool_response>")

    # build_dataset reports every case: whole, truncated/cut, dropped (the prompt alone is over 300 tokens)
    short = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    conv = conversations[0]
    ds, stats = sft.build_dataset([short, conv, long_obs], tok, max_length=1400)
    assert stats["conversations"] == 3 and stats["examples"] == len(ds) == 3 - stats["dropped"]
    assert stats["full"] == 1 and stats["truncated"] >= 1 and stats["tokens_removed"] > 0
    assert stats["full"] + stats["truncated"] + stats["cut"] + stats["dropped"] == 3
    assert stats["dropped"] == (sft.encode(conv, tok, 1400).status == "dropped")
    ds, stats = sft.build_dataset([short, conv], tok, max_length=300)
    assert stats["dropped"] == 1 and stats["examples"] == 1 and len(ds) == 1
    ds, stats = sft.build_dataset([short, long_obs], tok, max_length=1400, truncation="drop")
    assert stats["dropped"] == 1 and stats["truncated"] == 0
    assert "1 dropped" in sft.format_stats(stats)


def test_load_conversations_sources_and_no_data(tmp_path):
    cfg = _cfg(tmp_path, include_external=False)
    with pytest.raises(sft.NoSFTData, match="notebook 01"):
        sft.load_conversations(cfg)
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
            {"role": "assistant", "content": "<think>t</think>\n<tool_call>\n{}\n</tool_call>"},
            {"role": "tool", "content": "obs"}]
    append_jsonl(cfg.paths.sft_data, [
        Trajectory(question="q", messages=msgs + [{"role": "assistant", "content": "<answer>a</answer>"}]),
        Trajectory(question="q2", messages=msgs, finish_reason="max_turns"),  # ends on an observation
        Trajectory(question="q3", messages=msgs[:2]),  # no assistant turn at all
        Trajectory(question="q4", messages=msgs, filters={"kept": False}),
    ])
    convs, stats = sft.load_conversations(cfg)
    assert len(convs) == 2 and stats["sources"]["run"] == 2
    assert stats["skipped"] == {"no_assistant_turn": 1, "filtered_out": 1}
    assert convs[0][3] == {"role": "user", "content": "<tool_response>\nobs\n</tool_response>"}  # tool → user turn
    assert convs[1][-1]["role"] == "assistant"  # the trailing observation is not kept
    cfg_ext = _cfg(tmp_path, include_external=True)
    convs, stats = sft.load_conversations(cfg_ext)
    assert len(convs) == 102 and stats["sources"]["external:sample_traj.jsonl"] == 100
    # imported samples get the prompts our agent runs with; their turns are untouched
    released = load_webdancer(SAMPLES)[0]
    date = re.search(r"Current date: (\S+)", released.messages[0]["content"]).group(1)
    assert convs[2][0]["content"] == react.system_prompt(date, cfg_ext.agent.prompt)
    assert convs[2][1]["content"] == react.user_prompt(released.question, cfg_ext.agent.prompt)
    assert convs[2][2:] == released.messages[2:]
    convs, _ = sft.load_conversations(_cfg(tmp_path, include_external=True, reprompt_external=False))
    assert convs[2] == released.messages
    # under agent.prompt: webdancer, re-prompting gives the released samples back exactly their own prompts
    cfg = _cfg(tmp_path, include_external=True)
    cfg.agent.prompt = "webdancer"
    convs, _ = sft.load_conversations(cfg)
    assert convs[2] == released.messages
    compact = _cfg(tmp_path, include_external=True)
    compact.agent.prompt = "compact"  # re-prompted under the configured prompt style
    convs, _ = sft.load_conversations(compact)
    assert convs[2][:2] == react.prompt_messages(released.question, style="compact")
    assert convs[2][2:] == released.messages[2:]
    # max_external takes a seeded subset of each external file
    convs, stats = sft.load_conversations(_cfg(tmp_path, include_external=True, max_external=3))
    assert stats["sources"] == {"run": 2, "external:sample_traj.jsonl": 3} and len(convs) == 5
    again, _ = sft.load_conversations(_cfg(tmp_path, include_external=True, max_external=3))
    assert again == convs


def _short(conv):
    """A WebDancer sample made small enough for a short max_length: a one-line system prompt, the bare question,
    and each <think> cut to its first 30 words (tool calls, observations and answers as released)."""
    question = conv[1]["content"].rsplit("\nUser:", 1)[-1].strip()

    def clip(m):
        return "<think>" + " ".join(m.group(1).split()[:30]) + "</think>"

    turns = [dict(m, content=re.sub(r"<think>(.*?)</think>", clip, m["content"], flags=re.S))
             if m["role"] == "assistant" else m for m in conv[2:]]
    return [{"role": "system", "content": "You are a web agent."}, {"role": "user", "content": question}] + turns


def test_trainer_labels_are_loss_mask(tmp_path, tok, conversations):
    cfg = _cfg(tmp_path, max_length=384, per_device_train_batch_size=3)  # one padded batch of all three
    convs = [_short(c) for c in conversations[:3]]
    dataset, _ = sft.build_dataset(convs, tok, cfg.sft.max_length)
    model = models.load_model(MODEL, dtype="float32", device="cpu")
    trainer = sft.make_trainer(cfg, dataset, model, tok)
    expected = {}
    for conv in convs:
        ids, mask = sft.loss_mask(conv, tok, max_length=cfg.sft.max_length)
        expected[tuple(ids)] = [i if m else -100 for i, m in zip(ids, mask)]
    assert len(trainer.train_dataset) == 3
    for row in trainer.train_dataset:
        assert row["labels"] == expected[tuple(row["input_ids"])]
    batch = next(iter(trainer.get_train_dataloader()))  # what compute_loss receives
    assert len(batch["input_ids"]) == 3
    for ids, labels, attn in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        n = int(attn.sum())
        assert labels[:n].tolist() == expected[tuple(ids[:n].tolist())]
        assert (labels[n:] == -100).all()


def test_tiny_training_run_saves_resumes_reloads_generates(tmp_path, tok, conversations):
    torch.set_num_threads(2)
    # 3 examples, 2 steps: the run ends mid-epoch, where a resumed Trainer would take one more step
    cfg = _cfg(tmp_path, max_length=320, max_steps=2, save_steps=2, per_device_train_batch_size=1,
               gradient_accumulation_steps=1, learning_rate=1e-4, max_examples=3)
    convs = [_short(c) for c in conversations[:4]]
    result = sft.train(cfg, conversations=convs)
    final = cfg.paths.checkpoint_dir("sft")
    assert result.checkpoint == final and (final / "config.json").is_file()
    assert result.data["examples_used"] == 3 and result.data["conversations"] == 4
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert len(losses) == 2 and all(l == l and l > 0 for l in losses)  # finite, real losses
    stats = json.loads(cfg.paths.summary_path("sft").read_text())
    assert stats["data"]["examples"] >= 2 and stats["resumed_from"] is None
    assert sft.load_result(cfg).log_history == result.log_history
    again = sft.train(cfg, conversations=convs)  # finished: nothing more is trained
    assert again.log_history == result.log_history and not (cfg.paths.trainer_dir("sft") / "checkpoint-3").exists()

    # resume: a longer run continues from checkpoint-2 instead of starting over
    cfg.sft.max_steps = 3
    resumed = sft.train(cfg, conversations=convs)
    state = json.loads((final / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert json.loads(cfg.paths.summary_path("sft").read_text())["resumed_from"].endswith("checkpoint-2")
    assert [h["step"] for h in resumed.log_history if "loss" in h] == [1, 2, 3]

    # the saved checkpoint reloads (as DAPO/eval will) and generates; training changed the weights
    model = models.load_model(str(final), dtype="float32", device="cpu")
    base = models.load_model(MODEL, dtype="float32", device="cpu")
    changed = any(not torch.equal(p, q) for p, q in zip(model.parameters(), base.parameters()))
    assert changed
    reloaded_tok = models.load_tokenizer(str(final))
    assert reloaded_tok.eos_token == "<|im_end|>" and reloaded_tok.chat_template == tok.chat_template
    prompt = reloaded_tok.apply_chat_template(convs[0][:2], add_generation_prompt=True, return_tensors="pt",
                                              return_dict=True)
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]

    fig = plots.sft_loss(resumed.log_history)
    assert list(fig.data[0].y) == [h["loss"] for h in resumed.log_history if "loss" in h]
    assert plots.save(fig, cfg.run_dir / "figures" / "sft_loss.html").is_file()


def test_lora_run_saves_a_merged_model(tmp_path, tok, conversations):
    torch.set_num_threads(2)
    cfg = _cfg(tmp_path, lora=True, lora_r=4, lora_alpha=8, max_length=192, max_steps=1, learning_rate=1e-3,
               warmup_ratio=0.0,
               max_examples=1, resume=False)
    result = sft.train(cfg, conversations=[_short(c) for c in conversations[:2]])
    files = {p.name for p in result.checkpoint.iterdir()}
    assert "config.json" in files and "adapter_config.json" not in files  # a plain model, LoRA merged in
    model = models.load_model(str(result.checkpoint), dtype="float32", device="cpu")
    base = models.load_model(MODEL, dtype="float32", device="cpu")
    base_params = dict(base.named_parameters())
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, base_params[n])]
    assert changed and all("proj" in n for n in changed)  # only the adapted linear layers moved


def test_mask_html_highlights_trained_tokens(tok):
    conv = [{"role": "user", "content": "q <b>"}, {"role": "assistant", "content": "<answer>x</answer>"}]
    ids, mask = sft.loss_mask(conv, tok)
    page = sft.mask_html(ids, mask, tok)
    assert page.count("background:#c8f7c5") == 1  # one trained run: the assistant turn
    assert "&lt;answer&gt;x&lt;/answer&gt;" in page and "q &lt;b&gt;" in page


def test_launch_command_and_cli(tmp_path):
    from wdlib.launch import accelerate_command

    cfg = _cfg(tmp_path, num_processes=8)
    cmd = accelerate_command(cfg, "sft", tmp_path / "p.yaml")
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--config_file") + 1].endswith("params/accelerate/zero3.yaml")
    assert cmd[cmd.index("--num_processes") + 1] == "8"
    assert cmd[-4:] == ["-m", "wdlib.sft", "--params", str(tmp_path / "p.yaml")]
    with pytest.raises(SystemExit):
        sft.main(["--help"])


def test_trainer_kwargs_pass_any_further_trl_argument_through(tmp_path):
    from wdlib.config import ParamsError

    args = sft.training_args(_cfg(tmp_path, trainer_kwargs={"weight_decay": 0.1, "lr_scheduler_type": "cosine",
                                                            "optim": "adamw_torch"}), "cpu")
    assert (args.weight_decay, args.lr_scheduler_type.value, args.optim.value) == (0.1, "cosine", "adamw_torch")
    assert args.learning_rate == _cfg(tmp_path).sft.learning_rate  # the mapped fields are still there
    assert sft.training_args(_cfg(tmp_path), "cpu").weight_decay == 0.0  # nothing passed: TRL's default
    with pytest.raises(ParamsError, match=r"sft\.trainer_kwargs\.weight_decai: not an argument of trl\.SFTConfig"):
        sft.training_args(_cfg(tmp_path, trainer_kwargs={"weight_decai": 0.1}), "cpu")
    with pytest.raises(ParamsError, match=r"sft\.trainer_kwargs\.learning_rate: set sft\.learning_rate instead"):
        sft.training_args(_cfg(tmp_path, trainer_kwargs={"learning_rate": 1.0}), "cpu")
    with pytest.raises(ParamsError, match=r"<params>: sft\.trainer_kwargs\.lr_scheduler_type: trl\.SFTConfig rejected"):
        sft.training_args(_cfg(tmp_path, trainer_kwargs={"lr_scheduler_type": "sideways"}), "cpu")


def test_unsloth_refused_on_cpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    with pytest.raises(RuntimeError, match="CUDA"):
        sft.prepare_backend(_cfg(tmp_path, backend="unsloth"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="unsloth needs a CUDA GPU")
def test_unsloth_backend_trains_on_gpu(tmp_path, conversations):
    cfg = _cfg(tmp_path, backend="unsloth", max_length=512, max_steps=2, lora=True, lora_r=8, lora_alpha=16)
    cfg.run.device = "cuda"
    result = sft.train(cfg, conversations=[_short(c) for c in conversations[:4]])
    assert (result.checkpoint / "config.json").is_file()
    model = models.load_model(str(result.checkpoint), device="cuda")
    assert model is not None
