"""The runtime: generation, sampling, streaming, slot reuse, classification, compare, bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import hf_greedy, load_hf, random_ids

from gptoss.runtime import Engine, GptOssError
from gptoss.runtime.chat import Message, parse_reply, render

BACKENDS = ["onnxruntime", "torch"]


def prompts() -> list[list[int]]:
    return [random_ids(1, n, seed=50 + n)[0].tolist() for n in (7, 23, 13)]  # 23 > the window of 16


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_greedy_equals_hf_generate_prompt_by_prompt(engines, backend):
    engine = Engine.load(engines["causal"], backend)
    results = engine.generate(prompts(), max_new_tokens=48, stop=[])
    hf = load_hf(engines["checkpoint"])
    for prompt, result in zip(prompts(), results, strict=True):
        assert result.token_ids == hf_greedy(hf, torch.tensor([prompt]), 48)[0]
        assert result.finish_reason == "length" and result.prompt_ids == prompt


def test_sampling_is_seeded_and_top_k_1_is_greedy(engines):
    engine = Engine.load(engines["causal"])
    sample = dict(max_new_tokens=20, do_sample=True, temperature=1.3, top_p=0.9, stop=[])
    first = [r.token_ids for r in engine.generate(prompts(), seed=7, **sample)]
    again = [r.token_ids for r in engine.generate(prompts(), seed=7, **sample)]
    other = [r.token_ids for r in engine.generate(prompts(), seed=8, **sample)]
    greedy = [r.token_ids for r in engine.generate(prompts(), max_new_tokens=20, stop=[])]
    top1 = [r.token_ids for r in engine.generate(prompts(), seed=3, top_k=1, **sample)]
    assert first == again and first != other and first != greedy
    assert top1 == greedy


def test_seeded_sampling_does_not_depend_on_batching(engines):
    sample = dict(max_new_tokens=12, do_sample=True, top_k=50, seed=11, stop=[])
    together = [r.token_ids for r in Engine.load(engines["causal"]).generate(prompts(), **sample)]
    in_pairs = [r.token_ids for r in Engine.load(engines["batch2"]).generate(prompts(), **sample)]
    assert together == in_pairs


@pytest.mark.parametrize("do_sample", [False, True])
def test_streaming_yields_the_same_tokens(engines, do_sample):
    engine = Engine.load(engines["causal"])
    options = dict(max_new_tokens=16, do_sample=do_sample, seed=5, stop=[])
    expected = engine.generate(prompts(), **options)
    streamed = {i: [] for i in range(3)}
    texts = {i: "" for i in range(3)}
    for increment in engine.generate(prompts(), stream=True, **options):
        streamed[increment.index] += increment.token_ids
        texts[increment.index] += increment.text
    assert [streamed[i] for i in range(3)] == [r.token_ids for r in expected]
    assert [texts[i] for i in range(3)] == [r.text for r in expected]


def test_finished_row_takes_a_new_prompt_and_matches_it_alone(engines):
    first, second, third = prompts()
    alone = Engine.load(engines["causal"])
    solo_first = alone.generate(first, max_new_tokens=30, stop=[])[0].token_ids
    stop_token = solo_first[4]  # the first prompt stops after 5 tokens, freeing its row early
    stop = [stop_token]
    expected = [alone.generate(p, max_new_tokens=30, stop=stop)[0].token_ids for p in (first, second, third)]
    assert len(expected[0]) == 5 and len(expected[1]) > 5
    results = Engine.load(engines["batch2"]).generate([first, second, third], max_new_tokens=30, stop=stop)
    # batch 2: the third prompt waits for a row; it gets the first one while the second is still decoding.
    assert [r.token_ids for r in results] == expected


def test_stop_strings_cut_the_text(engines):
    engine = Engine.load(engines["causal"])
    full = engine.generate("Hello world", max_new_tokens=12, stop=[])[0]
    marker = full.text[3:6]
    cut = engine.generate("Hello world", max_new_tokens=12, stop=[marker])[0]
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.find(marker)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("head", ["sequence-classification", "token-classification"])
def test_classification_matches_hf_heads(engines, checkpoint_factory, head, backend):
    engine = Engine.load(engines[head], backend)
    inputs = [random_ids(1, n, seed=60 + n)[0].tolist() for n in (9, 31, 4)]
    results = engine.classify(inputs)
    hf = load_hf(checkpoint_factory("demo", expert_format="bf16", head=head), head)
    for ids, result in zip(inputs, results, strict=True):
        with torch.no_grad():
            expected = hf(torch.tensor([ids])).logits[0].numpy()
        # float32 through different kernels: ~1e-6 observed (see test_model_vs_hf).
        assert np.abs(result.scores - expected).max() < 1e-4
        assert result.labels == (
            [f"label_{i}" for i in expected.argmax(-1)]
            if head == "token-classification"
            else f"label_{expected.argmax()}"
        )


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gptoss.exporter", *args], capture_output=True, text=True)


def test_compare_reports_every_metric(engines, tmp_path):
    report_path = tmp_path / "report.json"
    result = cli(
        "compare", str(engines["causal"]), "--reference", str(engines["checkpoint"]), "--json", str(report_path)
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report["top1_agreement"] == 1.0 and report["max_abs_error"] < 1e-4 and report["greedy_identical"]
    for key in ("max_rel_error", "kl_mean", "kl_max", "greedy_first_divergence", "per_position_max_abs"):
        assert key in report
    assert len(report["per_position_max_abs"]) == 3


def test_compare_plot_and_hf_reference(engines, tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    plot = tmp_path / "errors.png"
    result = cli(
        "compare", str(engines["causal"]), "--reference", str(engines["checkpoint"]), "--hf", "--plot", str(plot)
    )
    assert result.returncode == 0, result.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "per-layer max abs" in result.stdout


def corrupt_one_weight(engine_dir, rehash: bool) -> None:
    """Change one float of the LM head in model.onnx.data; optionally re-record its checksum."""
    import onnx

    model = onnx.load(str(engine_dir / "model.onnx"), load_external_data=False)
    lm_head = next(t for t in model.graph.initializer if t.name.endswith("lm_head.weight"))
    offset = int(next(e.value for e in lm_head.external_data if e.key == "offset"))
    data = engine_dir / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    value = np.frombuffer(raw, dtype=np.float32, count=1, offset=offset + 4 * 1000)[0]
    raw[offset + 4000 : offset + 4004] = np.float32(value + 0.5).tobytes()
    data.write_bytes(bytes(raw))
    if rehash:
        from gptoss.runtime.manifest import file_entry

        manifest_path = engine_dir / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["files"]["onnx_data"] = file_entry(data)
        manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("rehash", [False, True])
def test_corrupted_engine_is_caught(engines, tmp_path, rehash):
    import shutil

    engine_dir = tmp_path / "engine"
    shutil.copytree(engines["causal"], engine_dir)
    corrupt_one_weight(engine_dir, rehash)
    result = cli("compare", str(engine_dir), "--reference", str(engines["checkpoint"]))
    assert result.returncode == 1
    expected = "engine disagrees with the reference" if rehash else "sha256 differs from manifest.json"
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def edited_manifest(engines, tmp_path, edit):
    import shutil

    engine_dir = tmp_path / "engine"
    shutil.copytree(engines["causal"], engine_dir)
    path = engine_dir / "manifest.json"
    path.write_text(edit(path.read_text()))
    return engine_dir


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: "{not json", "manifest.json: not valid JSON"),
        (lambda text: text.replace('"contract_version": 1', '"contract_version": 7'), "I/O contract version 7"),
        (lambda text: text.replace('"plugin_version": "1"', '"plugin_version": "2"'), "built for plugin version '2'"),
        (lambda text: text.replace('"head": "causal-lm"', '"hed": "causal-lm"'), "missing or unexpected field"),
    ],
)
def test_bad_manifests_are_one_line_errors(engines, tmp_path, edit, message):
    engine_dir = edited_manifest(engines, tmp_path, edit)
    with pytest.raises(GptOssError, match=message):
        Engine.load(engine_dir)
    result = cli("generate", str(engine_dir), "-p", "Hello")
    assert result.returncode == 1 and message.split("'")[0] in result.stderr


def test_missing_manifest(tmp_path):
    result = cli("generate", str(tmp_path), "-p", "Hello")
    assert result.returncode == 1 and "manifest.json: not found" in result.stderr


@pytest.mark.parametrize(
    ("prompt", "message"),
    [([], "prompt 0 is empty"), ("", "prompt 0 is empty"), ([5, 512], "token id 512 is outside the vocabulary"),
     ([5] * 256, "prompt 0 has 256 tokens; this engine's maximum sequence is 256"),
     ([5, 1.7], "token ids must be integers, got 1.7"), ([5, True], "token ids must be integers, got True"),
     ([[5, 6], None], "prompt 1: expected text or a list of token ids, got NoneType"),
     ("caf\udce9", "prompt 0: not valid UTF-8 text")],
)  # fmt: skip
def test_bad_prompts_are_clear_errors(engines, prompt, message):
    with pytest.raises(GptOssError, match=message):
        Engine.load(engines["causal"]).generate(prompt if prompt else [prompt], max_new_tokens=2)


def test_generation_stops_at_the_maximum_length(engines):
    result = Engine.load(engines["causal"]).generate([7] * 248, max_new_tokens=50, stop=[])[0]
    assert len(result.token_ids) == 8 and result.finish_reason == "length"  # 248 + 8 = max_seq_len 256


def test_chat_renders_and_parses_harmony():
    text = render([Message("developer", "Be brief."), Message("user", "Hi")])
    assert text.startswith("<|start|>system<|message|>You are ChatGPT")
    assert "<|start|>developer<|message|># Instructions\n\nBe brief.<|end|>" in text
    assert text.endswith("<|start|>user<|message|>Hi<|end|><|start|>assistant")
    reply = parse_reply(
        "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final<|message|>Hi!<|return|>"
    )
    assert (reply.analysis, reply.final) == ("Think.", "Hi!")
    history = render([Message("user", "a"), Message("assistant", "x", "analysis"), Message("assistant", "y", "final"),
                      Message("user", "b")])  # fmt: skip
    assert "x" not in history.split("<|start|>user<|message|>a<|end|>")[1].split("final")[0]


def test_cli_generate_chat_and_classify(engines):
    result = cli("generate", str(engines["causal"]), "-p", "Hi", "--chat", "--max-new-tokens", "8")
    assert result.returncode == 0 and "[final]" in result.stdout
    result = cli("classify", str(engines["sequence-classification"]), "-t", "Hello world", "-t", "GPT-OSS")
    assert result.returncode == 0 and result.stdout.count("label_") == 2


def test_bench_repeat_shows_the_median_run(engines):
    """`--repeat 3`: every run's share of its bandwidth limit is printed, and the run shown is the median one."""
    from gptoss.tools.cpu_kernels import build as build_cpu_kernels

    build_cpu_kernels()
    args = ("bench", str(engines["causal"]), "-b", "1", "--prompt-len", "8", "--new-tokens", "4")
    result = cli(*args, "--repeat", "3")
    assert result.returncode == 0, result.stderr
    shown = re.search(r"decode at (\d+)% of it", result.stdout).group(1)
    runs = re.search(r"\(3 runs at (\d+)% (\d+)% (\d+)% of their limits", result.stdout).groups()
    assert [int(r) for r in runs] == sorted(int(r) for r in runs) and runs[1] == shown
    refused = cli(*args, "--repeat", "0")
    assert refused.returncode != 0 and "--repeat must be at least 1" in refused.stderr


def test_bench_vs_hf_prints_ratios(engines):
    from gptoss.tools.cpu_kernels import build as build_cpu_kernels

    build_cpu_kernels()  # its streaming read measures the memory bandwidth behind the limit line
    result = cli("bench", str(engines["causal"]), "-b", "1", "--prompt-len", "8", "--new-tokens", "4", "--vs-hf")
    assert result.returncode == 0, result.stderr
    assert "huggingface" in result.stdout and "ratio" in result.stdout
    assert "limit" in result.stdout and "memory bandwidth" in result.stdout
