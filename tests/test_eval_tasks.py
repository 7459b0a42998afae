"""lm-eval tasks: the registry (with its gaps), local task data, and real runs of udhr_mc and MKQA."""

from __future__ import annotations

import json
import random

import pytest

from langprune.cli import main
from langprune.errors import LangpruneError
from langprune.evaluate import harness
from langprune.evaluate.harness import evaluate_tasks, local_data_files
from langprune.evaluate.mc import build_items, passages
from langprune.evaluate.registry import TaskEntry, load_registry, select
from langprune.evaluate.units import item_fingerprint, item_units, record_fingerprint
from langprune.io import read_json

PAPER = ["ar", "de", "en", "es", "ru", "sw", "zh"]


def test_registry_maps_the_papers_pairs():
    tasks = {(e.benchmark, e.label): e.task for e in select(["arc", "hellaswag", "mmlu", "belebele", "mkqa"], PAPER)}
    assert tasks[("arc", "en-e")] == "arc_easy" and tasks[("arc", "en-c")] == "arc_challenge"
    assert tasks[("arc", "zh")] == "arc_zh" and tasks[("hellaswag", "en")] == "hellaswag"
    assert tasks[("mmlu", "de")] == "m_mmlu_de" and tasks[("belebele", "sw")] == "belebele_swh_Latn"
    assert tasks[("belebele", "zh")] == "belebele_zho_Hans" and tasks[("mkqa", "zh")] == "mkqa_zh"
    missing = sorted(k for k, task in tasks.items() if task is None)
    assert missing == [("arc", "sw"), ("hellaswag", "sw"), ("hellaswag", "zh"), ("mkqa", "sw"), ("mmlu", "sw")]


def test_every_registered_task_exists_in_lm_eval():
    index = harness.task_manager().task_index
    names = {e.base or e.task for e in load_registry() if e.task}
    assert sorted(n for n in names if n not in index) == []
    assert harness.task_manager() is harness.task_manager()  # one TaskManager per process


def test_unlisted_languages_are_reported_not_dropped():
    entries = select(["mmlu", "udhr_mc"], ["fr"])
    assert [(e.benchmark, e.language, e.available) for e in entries] == [("mmlu", "fr", False),
                                                                         ("udhr_mc", "fr", True)]
    with pytest.raises(LangpruneError, match="unknown benchmark.*known: arc"):
        select(["piqa"], ["en"])


def test_local_data_is_found_per_split_per_file_or_by_registry_name(tmp_path):
    entry = TaskEntry("arc", "de", "de", "arc_de", None, "acc", None)
    (tmp_path / "a" / "arc_de").mkdir(parents=True)
    (tmp_path / "a" / "arc_de" / "test.jsonl").write_text("{}\n")
    assert local_data_files(entry, ["test", "validation"], [tmp_path / "a"]) == (
        "json", {"test": str(tmp_path / "a" / "arc_de" / "test.jsonl")})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "arc_de.parquet").write_text("")
    assert local_data_files(entry, ["test"], [tmp_path / "none", tmp_path / "b"]) == (
        "parquet", {"test": str(tmp_path / "b" / "arc_de.parquet")})
    mkqa = select(["mkqa"], ["de"])[0]
    (tmp_path / "b" / "mkqa.jsonl").write_text("")
    assert local_data_files(mkqa, ["test"], [tmp_path / "b"])[1] == {"test": str(tmp_path / "b" / "mkqa.jsonl")}
    assert local_data_files(entry, ["test"], [tmp_path]) is None


def test_limit_zero_and_unknown_languages_are_errors(tmp_path, tiny_llama_dir):
    with pytest.raises(LangpruneError, match="--limit must be a positive"):
        evaluate_tasks(str(tiny_llama_dir), ["udhr_mc"], ["de"], tmp_path / "x.json", limit=0)
    with pytest.raises(LangpruneError, match="unknown language code.*xx"):
        evaluate_tasks(str(tiny_llama_dir), ["arc"], ["xx"], tmp_path / "x.json")


def test_hub_task_data_missing_offline_is_one_clear_error(tmp_path, tiny_llama_dir):
    with pytest.raises(LangpruneError, match="'belebele_deu_Latn'.*facebook/belebele config deu_Latn.*prefetch"):
        evaluate_tasks(str(tiny_llama_dir), ["belebele"], ["de"], tmp_path / "x.json", limit=1)
    with pytest.raises(LangpruneError, match="udhr_mc has no hub data.*make-mc"):
        evaluate_tasks(str(tiny_llama_dir), ["udhr_mc"], ["de"], tmp_path / "x.json", limit=1)


def test_mc_items_come_from_consecutive_passages():
    docs = [" ".join(f"w{i}" for i in range(40)), " ".join(f"v{i}" for i in range(20)),
            "人人生而自由在尊严和权利上一律平等。"]
    assert passages(docs[0], 8)[:2] == ["w0 w1 w2 w3 w4 w5 w6 w7", "w8 w9 w10 w11 w12 w13 w14 w15"]
    assert passages(docs[2], 4) == ["人人生而自由在尊", "严和权利上一律平", "等。"]
    items = build_items(docs, 6, random.Random(0), "xx")
    pairs = {(a, b) for d in docs for a, b in zip(passages(d), passages(d)[1:])}
    assert len(pairs) == 4 + 2 + 1 and len({it["context"] for it in items}) == 6
    for item in items:
        assert len(item["choices"]) == 4 and len(set(item["choices"])) == 4
        assert (item["context"], item["choices"][item["label"]]) in pairs
    assert build_items(docs, 6, random.Random(0), "xx") == items
    with pytest.raises(LangpruneError, match="7 consecutive passage pairs.*--n-items"):
        build_items(docs, 8, random.Random(0), "xx")


MKQA_ROWS = [
    {"example_id": i, "query": q, "queries": {"de": q, "en": q}, "answers": {
        lang: [{"type": t, "entity": None, "text": a, "aliases": []}] for lang in ("de", "en")}}
    for i, (q, a, t) in enumerate([("capital of germany", "Berlin", "entity"), ("why", None, "unanswerable"),
                                   ("legs of a spider", "8", "number")])]


def write_arc_copies(root) -> None:
    """Local copies in the hub datasets' columns: Okapi m_arc (German) and ai2_arc (English)."""
    okapi = [{"id": str(i), "instruction": f"Frage {i}?", "option_a": "ja", "option_b": "nein",
              "option_c": "vielleicht", "option_d": "nie", "option_e": None, "answer": "ABCD"[i % 4]} for i in range(3)]
    (root / "arc_de").mkdir(parents=True)
    (root / "arc_de" / "test.jsonl").write_text("".join(json.dumps(d) + "\n" for d in okapi))
    ai2 = [{"id": str(i), "question": f"Question {i}?", "answerKey": "B",
            "choices": {"text": ["yes", "no", "maybe"], "label": ["A", "B", "C"]}} for i in range(3)]
    for task in ("arc_easy", "arc_challenge"):
        (root / f"{task}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in ai2))


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_llama_dir, text_splits):
    """One lm-eval run: udhr_mc, MKQA and ARC (local copies) in de, en, sw (no sw for MKQA, ARC), call spied on."""
    root = tmp_path_factory.mktemp("tasks")
    assert main(["evaluate", "make-mc", "--source", f"text:{text_splits['eval']}", "--languages", "de,en,sw",
                 "--n-items", "6", "--seed", "0", "--out", str(root / "mc")]) == 0
    (root / "mkqa").mkdir()
    (root / "mkqa" / "mkqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in MKQA_ROWS))
    write_arc_copies(root / "hub")
    calls = []
    real = __import__("lm_eval").simple_evaluate

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(harness, "simple_evaluate", spy)  # where harness calls it (bound at import)
        out = root / "tasks.json"
        assert main(["evaluate", "tasks", "--model", str(tiny_llama_dir), "--tasks", "udhr_mc,mkqa,arc",
                     "--languages", "de,en,sw", "--task-data", str(root / "mc"), "--task-data", str(root / "mkqa"),
                     "--task-data", str(root / "hub"),
                     "--limit", "4", "--batch-size", "2", "--max-length", "128", "--tag", "model=tiny",
                     "--out", str(out)]) == 0
    return {"doc": read_json(out), "calls": calls, "mc": root / "mc"}


def test_lm_eval_runs_zero_shot_without_cache_or_bootstrap(run):
    (kwargs,) = run["calls"]
    assert kwargs["num_fewshot"] == 0 and kwargs["bootstrap_iters"] == 0 and kwargs["log_samples"] is True
    assert kwargs["use_cache"] is None and kwargs["cache_requests"] is False and kwargs["batch_size"] == 2
    assert kwargs["limit"] == 4 and kwargs["task_manager"] is harness.manager_for(
        select(["udhr_mc", "mkqa", "arc"], ["de", "en", "sw"]))


def test_per_item_scores_are_kept_and_average_to_the_score(run):
    for rec in run["doc"]["records"]:
        if not rec["available"]:
            assert "units" not in rec
            continue
        units = rec["units"]
        assert units["unit"] == "item" and units["ids"] == sorted(units["ids"]) and len(units["ids"]) == rec["n"]
        assert sum(units["score"]) / len(units["score"]) == pytest.approx(rec["value"], abs=1e-12)
        if rec["metric"] == "acc":
            assert set(units["score"]) <= {0.0, 1.0}
        # one fingerprint per item, of its content (distinct items differ), and one for the record
        assert len(units["fingerprints"]) == len(units["ids"]) == len(set(units["fingerprints"]))
        assert rec["fingerprint"] == record_fingerprint(units)


def test_item_fingerprints_hash_the_content_not_the_model_output():
    sample = {"doc_id": 3, "doc": {"context": "a", "choices": ["b", "c"]}, "target": 0,
              "arguments": [["a", " b"], ["a", " c"]], "resps": [[-1.0]], "filtered_resps": [-1.0], "acc": 1.0}
    answered_otherwise = {**sample, "resps": [[-9.0]], "filtered_resps": [-9.0], "acc": 0.0}
    other_item = {**sample, "doc": {"context": "a", "choices": ["b", "d"]}}
    assert item_fingerprint(sample) == item_fingerprint(answered_otherwise) != item_fingerprint(other_item)
    units = item_units([answered_otherwise, {**other_item, "doc_id": 1}], "acc")
    assert units["ids"] == [1, 3] and units["fingerprints"] == [item_fingerprint(other_item), item_fingerprint(sample)]


def test_records_cover_every_pair_with_gaps_marked(run):
    records = {(r["benchmark"], r["language"]): r for r in run["doc"]["records"]}
    assert sorted(records) == sorted([("udhr_mc", "de"), ("udhr_mc", "en"), ("udhr_mc", "sw"), ("mkqa", "de"),
                                      ("mkqa", "en"), ("mkqa", "sw"), ("arc", "de"), ("arc", "en-e"),
                                      ("arc", "en-c"), ("arc", "sw")])
    for key in [("udhr_mc", "de"), ("udhr_mc", "en"), ("udhr_mc", "sw")]:
        assert records[key]["available"] and records[key]["n"] == 4 and 0 <= records[key]["value"] <= 1
        assert records[key]["metric"] == "acc"
    assert records[("mkqa", "en")]["metric"] == "f1" and records[("mkqa", "en")]["n"] == 2
    assert 0 <= records[("mkqa", "en")]["value"] <= 1
    for key, task in [(("arc", "de"), "arc_de"), (("arc", "en-e"), "arc_easy"), (("arc", "en-c"), "arc_challenge")]:
        assert records[key]["task"] == task and records[key]["n"] == 3 and records[key]["available"]
    for key in [("mkqa", "sw"), ("arc", "sw")]:
        assert records[key]["available"] is False and records[key]["value"] is None and records[key]["n"] == 0
    assert run["doc"]["tags"] == {"model": "tiny"} and run["doc"]["checkpoint"] is None


def test_udhr_mc_accuracy_matches_our_own_loglikelihoods(run, tiny_llama_dir):
    """The acc lm-eval reports is the fraction of items whose answer has the highest log-likelihood."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()

    def loglik(context: str, continuation: str) -> float:
        ctx = tok(context, add_special_tokens=False)["input_ids"]
        whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
        cont = whole[len(ctx):]
        with torch.no_grad():
            logp = model(input_ids=torch.tensor([whole])).logits[0].log_softmax(-1)
        return sum(logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont))

    items = [json.loads(line) for line in (run["mc"] / "en.jsonl").read_text().splitlines()][:4]
    correct = [max(range(4), key=lambda c: loglik(it["context"], " " + it["choices"][c])) == it["label"]
               for it in items]
    record = next(r for r in run["doc"]["records"] if r["benchmark"] == "udhr_mc" and r["language"] == "en")
    assert record["value"] == pytest.approx(sum(correct) / len(correct))


def test_project_tasks_alone_skip_indexing_lm_evals_own():
    own = harness.task_manager(include_defaults=False)
    assert "arc_easy" not in own.task_index  # lm-eval's YAMLs were not indexed
    assert harness.manager_for(select(["udhr_mc", "mkqa"], ["de", "zh"])) is own
    # Tasks of lm-eval's own: only the folders that define them are indexed (arc_de's, not HellaSwag's).
    mixed = harness.manager_for(select(["udhr_mc", "arc"], ["de"]))
    assert {"udhr_mc", "arc_de"} <= mixed.task_index.keys() and "hellaswag" not in mixed.task_index
