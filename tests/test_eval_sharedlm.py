"""The shared-context backend scores every request as lm-eval's HFLM does (1e-4, same is_greedy)."""

from __future__ import annotations

import random

import pytest
import torch

from conftest import SAMPLE_TEXT, build_model

TOL = 1e-4


def words(rng: random.Random, n: int) -> str:
    vocab = " ".join(SAMPLE_TEXT[k] for k in ("en", "de", "es", "ru")).split()
    return " ".join(rng.choice(vocab) for _ in range(n))


def items(seed: int = 0) -> list[tuple[str, list[str]]]:
    """(context, continuations) in the shapes of the paper's tasks."""
    rng = random.Random(seed)
    out = []
    for _ in range(3):  # HellaSwag: a long context, four endings of 10-25 words
        out.append((f"{words(rng, 3)}: {words(rng, rng.randint(20, 40))}",
                    [" " + words(rng, rng.randint(10, 25)) for _ in range(4)]))
    for n in (4, 5, 4):  # ARC: a question, 4-5 answer texts of 1-8 words
        out.append((f"Question: {words(rng, rng.randint(8, 20))}?\nAnswer:",
                    [" " + words(rng, rng.randint(1, 8)) for _ in range(n)]))
    for _ in range(2):  # Belebele: passage, question, lettered answers, one-token continuations
        options = "\n".join(f"{x}: {words(rng, 4)}" for x in "ABCD")
        out.append((f"P: {words(rng, 60)}\nQ: {words(rng, 10)}?\n{options}\nAnswer:", [" A", " B", " C", " D"]))
    for _ in range(2):  # MMLU (Okapi): letters after a trailing space, which lm-eval moves to the continuation
        out.append((f"{words(rng, 15)}\nA. {words(rng, 3)}\nB. {words(rng, 3)}\nAnswer: ", ["A", "B", "C", "D"]))
    out.append(("", [words(rng, 6), words(rng, 3)]))  # empty context: lm-eval's prefix token
    return out


def instances(pairs):
    from lm_eval.api.instance import Instance

    return [Instance("loglikelihood", {}, (ctx, cont), i) for i, (ctx, conts) in enumerate(pairs) for cont in conts]


def load(path, attn="sdpa"):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn).eval()


def both(model, tokenizer_dir, **kwargs):
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer

    from langprune.evaluate.sharedlm import SharedContextLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    plain = HFLM(pretrained=model, tokenizer=tok, batch_size=3, max_length=kwargs.pop("max_length", None))
    kwargs.setdefault("batch_size", 8)  # the padding allowance of its token-budget batches: several rows a batch
    shared = SharedContextLM(pretrained=model, tokenizer=tok, max_length=plain.max_length, **kwargs)
    return plain, shared


def assert_same_scores(plain, shared, reqs):
    expected, got = plain.loglikelihood(reqs), shared.loglikelihood(reqs)
    assert len(got) == len(expected)
    for (lp, greedy), (lp2, greedy2) in zip(expected, got, strict=True):
        assert abs(lp - lp2) <= TOL and greedy == greedy2


@pytest.fixture(scope="module")
def arch_dirs(tmp_path_factory, tiny_tokenizer_dir, tiny_llama_dir, tiny_cohere_dir):
    qwen = build_model(tmp_path_factory.mktemp("qwen2"), "qwen2", tokenizer_dir=tiny_tokenizer_dir)
    return {"llama": tiny_llama_dir, "qwen2": qwen, "cohere": tiny_cohere_dir}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "cohere"])
@pytest.mark.parametrize("budget", [64, 4096])
def test_every_task_shape_scores_as_hflm(arch, budget, arch_dirs):
    plain, shared = both(load(arch_dirs[arch]), arch_dirs[arch], batch_tokens=budget)
    assert_same_scores(plain, shared, instances(items()))
    if budget > 64:  # right-padded rows of several lengths shared a batch
        assert shared.stats["padded_tokens"] > shared.stats["row_tokens"]


def test_eager_attention_takes_an_additive_mask(tiny_llama_dir):
    plain, shared = both(load(tiny_llama_dir, "eager"), tiny_llama_dir, batch_tokens=512)
    assert_same_scores(plain, shared, instances(items(1)))


def test_model_without_logits_to_keep_selects_kept_positions_after(tiny_llama_dir, monkeypatch):
    """A forward without ``logits_to_keep`` returns every position; the kept ones are picked after."""
    from langprune.evaluate.sharedlm import SharedContextLM

    monkeypatch.setattr(SharedContextLM, "_keeps_logits", property(lambda self: False))
    plain, shared = both(load(tiny_llama_dir), tiny_llama_dir, batch_tokens=512)
    assert_same_scores(plain, shared, instances(items(6)))


def test_requests_hflm_truncates_fall_back_to_it(tiny_llama_dir, monkeypatch):
    """Over max_length, HFLM cuts each request from the left; those requests take HFLM's path."""
    from lm_eval.models.huggingface import HFLM

    plain, shared = both(load(tiny_llama_dir), tiny_llama_dir, max_length=150, batch_tokens=256)
    reqs = instances(items(2))
    seen = []
    real = HFLM._loglikelihood_tokens

    def spy(self, requests, *args, **kwargs):
        seen.append(len(requests))
        return real(self, requests, *args, **kwargs)

    expected = plain.loglikelihood(reqs)
    monkeypatch.setattr(HFLM, "_loglikelihood_tokens", spy)
    got = shared.loglikelihood(reqs)
    assert seen and 0 < seen[0] < len(reqs)
    for (lp, greedy), (lp2, greedy2) in zip(expected, got, strict=True):
        assert abs(lp - lp2) <= TOL and greedy == greedy2


def test_sliding_window_layers_are_respected(tmp_path, tiny_tokenizer_dir):
    """Mistral with a 120-token window: short requests pack, longer ones go HFLM's way; all agree."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from langprune.evaluate.sharedlm import sliding_window

    torch.manual_seed(0)
    config = AutoConfig.for_model("mistral", vocab_size=320, hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                                  max_position_embeddings=512, sliding_window=120, bos_token_id=0, eos_token_id=1,
                                  pad_token_id=2)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    assert sliding_window(model.config) == 120
    plain, shared = both(model, tiny_tokenizer_dir, batch_tokens=512)
    assert_same_scores(plain, shared, instances(items(3)))


def test_gemma3_softcapped_head_scores_as_hflm(tiny_tokenizer_dir):
    """Gemma 3 caps its logits after the LM head (final_logit_softcapping): the kept-position logits
    must go through the model's own head, cap included (a cap of 2 changes every score), and its
    sliding-window layers (window 200 of max 512) pack the requests that fit, HFLM the rest."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model("gemma3_text", vocab_size=320, hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=128,
                                  max_position_embeddings=512, sliding_window=200, final_logit_softcapping=2.0,
                                  layer_types=["sliding_attention", "full_attention"], bos_token_id=0,
                                  eos_token_id=1, pad_token_id=2)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    plain, shared = both(model, tiny_tokenizer_dir, batch_tokens=512)
    reqs = instances(items(5))
    assert_same_scores(plain, shared, reqs)
    assert shared.stats["rows"] > 0  # the packed path ran, not only the HFLM fallback
    model.config.final_logit_softcapping = None
    uncapped = shared.loglikelihood(reqs[:4])
    model.config.final_logit_softcapping = 2.0
    assert all(abs(a[0] - b[0]) > 1e-3 for a, b in zip(uncapped, plain.loglikelihood(reqs[:4]), strict=True))


def test_each_context_runs_once(tiny_llama_dir, monkeypatch):
    """Four HellaSwag endings and five ARC answers: one packed row per item."""
    from langprune.evaluate import sharedlm

    _, shared = both(load(tiny_llama_dir), tiny_llama_dir, batch_tokens=100_000)
    pairs = items()[:6]
    rows = []
    real = sharedlm.SharedContextLM._score_batch

    def spy(self, batch):
        rows.append(len(batch))
        return real(self, batch)

    monkeypatch.setattr(sharedlm.SharedContextLM, "_score_batch", spy)
    shared.loglikelihood(instances(pairs))
    assert sum(rows) == len(pairs) and len(rows) < len(pairs)


def test_token_budget_batches_pad_no_more_than_hflm():
    """Longest first, within the budget, and never more padding than HFLM's sorted batches of 4."""
    from langprune.evaluate.sharedlm import ContextRow, token_budget_batches

    def padding(batches):
        return sum(b[0].length - r.length for b in batches for r in b)

    rng = random.Random(0)
    lengths = [rng.randint(30, 90) for _ in range(60)] + [50] * 20
    rows = [ContextRow([1] * (n - 1), [[5, 6]], [i]) for i, n in enumerate(lengths)]
    ordered = sorted(rows, key=lambda r: -r.length)
    hflm = [ordered[i:i + 4] for i in range(0, len(ordered), 4)]
    batches = token_budget_batches(rows, 1000, pad_like=4)
    assert [r for b in batches for r in b] == ordered
    assert all(len(b) * b[0].length <= 1000 for b in batches)
    assert 0 < padding(batches) <= padding(hflm)
    assert max(map(len, batches)) == 1000 // 50  # equal lengths fill the budget
    assert len(batches) < len(hflm)
    assert all(len(b) == 1 or b[0].length == b[-1].length for b in token_budget_batches(rows, 1000, pad_like=1))
    rows = [ContextRow([1] * n, [[5, 6]], [i]) for i, n in enumerate([39, 79, 40, 39, 79, 160, 40, 39])]
    assert [[r.length for r in b] for b in token_budget_batches(rows, 130, pad_like=8)] == \
        [[161], [80], [80], [41, 41, 40], [40, 40]]
    mixed = rows + [ContextRow([1] * 39, [[5, 6], [7, 8]], [8])]  # two endings: needs the block mask
    assert [[r.length for r in b] for b in token_budget_batches(mixed, 130, pad_like=8)][-1] == [41]


def test_block_causal_mask_separates_continuations():
    from langprune.evaluate.sharedlm import ContextRow, block_causal_mask, pack_rows

    ids, positions, segments = pack_rows([ContextRow([7, 8], [[1, 2, 3], [4, 5]], [0, 1]), ContextRow([9], [[6]], [2])],
                                         pad_id=0)
    assert ids.tolist() == [[7, 8, 1, 2, 4], [9, 0, 0, 0, 0]]
    assert positions.tolist()[0] == [0, 1, 2, 3, 2]
    mask = block_causal_mask(segments)[:, 0].int().tolist()
    assert mask[0][4] == [1, 1, 0, 0, 1]  # the second continuation sees the context, not the first one
    assert mask[0][3] == [1, 1, 1, 1, 0]
    assert mask[1][2] == [0, 0, 1, 0, 0]  # padding sees itself only


def test_continuations_differing_in_their_last_token_share_one_body(tiny_llama_dir):
    """" A".." D" as " " + letter: one row ``context | " "`` (HFLM's one-token sharing), a causal one."""
    from langprune.evaluate.sharedlm import ContextRow, continuation_positions, pack_rows

    row = ContextRow([7, 8, 9], [[3, 10], [3, 11], [3, 12], [4, 5, 6]], [0, 1, 2, 3])
    assert row.bodies == [(3,), (4, 5)] and row.length == 6 and not row.causal
    assert continuation_positions(row) == [[2, 3], [2, 3], [2, 3], [2, 4, 5]]
    assert pack_rows([row], pad_id=0)[0].tolist() == [[7, 8, 9, 3, 4, 5]]
    letters = ContextRow([7, 8, 9], [[3, 10], [3, 11]], [0, 1])
    assert letters.causal and letters.length == 4
    plain, shared = both(load(tiny_llama_dir), tiny_llama_dir, batch_tokens=512)
    tok = shared.tokenizer
    space = tok(" ", add_special_tokens=False).input_ids
    reqs = [(None, tok("Question: why?\nAnswer:", add_special_tokens=False).input_ids, space + [t])
            for t in (10, 11, 12, 13)]
    expected, got = plain._loglikelihood_tokens(reqs), shared._loglikelihood_tokens(reqs)
    for (lp, greedy), (lp2, greedy2) in zip(expected, got, strict=True):
        assert abs(lp - lp2) <= TOL and greedy == greedy2
    assert shared.stats["padded_tokens"] == shared.stats["hflm_tokens"] == len(reqs[0][1]) + len(space)


def test_rolling_and_generation_are_hflm_s(tiny_llama_dir):
    """loglikelihood_rolling (through the packed path) and MKQA-style greedy generation."""
    from lm_eval.api.instance import Instance

    plain, shared = both(load(tiny_llama_dir), tiny_llama_dir, max_length=32, batch_tokens=128)
    rng = random.Random(4)
    texts = [words(rng, 50), words(rng, 7)]
    rolling = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
    for a, b in zip(plain.loglikelihood_rolling(rolling), shared.loglikelihood_rolling(rolling), strict=True):
        assert abs(a - b) <= TOL
    kwargs = {"until": ["\n"], "do_sample": False, "max_gen_toks": 8}
    gen = [Instance("generate_until", {}, (f"Question: {words(rng, 6)}?\nAnswer:", kwargs), i) for i in range(3)]
    assert plain.generate_until(gen) == shared.generate_until(gen)


def test_evaluate_tasks_backends_give_identical_records(tmp_path, tiny_llama_dir, text_splits):
    """`langprune evaluate tasks` (shared by default) and `--backend hflm`: udhr_mc, ARC and MKQA."""
    import json

    from langprune.cli import main
    from langprune.io import read_json
    from test_eval_tasks import MKQA_ROWS, write_arc_copies

    assert main(["evaluate", "make-mc", "--source", f"text:{text_splits['eval']}", "--languages", "de,en",
                 "--n-items", "6", "--out", str(tmp_path / "mc")]) == 0
    (tmp_path / "mkqa").mkdir()
    (tmp_path / "mkqa" / "mkqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in MKQA_ROWS))
    write_arc_copies(tmp_path / "hub")
    common = ["evaluate", "tasks", "--model", str(tiny_llama_dir), "--tasks", "udhr_mc,arc,mkqa", "--languages",
              "de,en", "--batch-size", "2", "--task-data", str(tmp_path / "mc"), "--task-data", str(tmp_path / "hub"),
              "--task-data", str(tmp_path / "mkqa")]
    assert main([*common, "--batch-tokens", "300", "--out", str(tmp_path / "shared.json")]) == 0
    assert main([*common, "--backend", "hflm", "--out", str(tmp_path / "hflm.json")]) == 0
    shared, plain = read_json(tmp_path / "shared.json"), read_json(tmp_path / "hflm.json")
    assert shared["records"] == plain["records"] and len(shared["records"]) == 7
    assert shared["settings"]["backend"] == "shared" and plain["settings"]["backend"] == "hflm"
