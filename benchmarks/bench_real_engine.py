"""Real-engine generation speed on the demo's workload: tokens/s against the engine's settings.

The workload is `make demo`'s: the first BENCH_REAL_ROWS (default 200) DialogSum conversations of
infra/demo/dialogsum_sample.jsonl, each a user turn under the summarize profile's system prompt,
max_tokens 60, temperature 0, repetition penalty 1.1 (what the demo sets). Each configuration
runs in child processes of its own (one model load each, not timed); a configuration of two
processes splits the rows between two one-thread processes that start generating together.
Configurations run in turn, the whole round BENCH_REAL_REPEATS times (default 2) so that each
is measured under the other engineers' load at several moments; the load average is printed
with every figure. `before` is the engine as it was at BEFORE_COMMIT (transformers' generate(),
batch 32), loaded from git, so the comparison can be rerun on any machine.

    python benchmarks/bench_real_engine.py [config ...]      # default: the DEFAULT set below
    BENCH_REAL_ROWS=64 python benchmarks/bench_real_engine.py before now

After the configurations, the ceiling: this CPU's matmul rate at the model's shapes and dtype,
and the fastest the workload could go if the engine did nothing but its matmuls at that rate
(prompt tokens cost 2 FLOPs per non-embedding parameter, answer tokens 2 per parameter, the
tied output projection included; attention and everything else counted as free).

Output tokens per second of wall time is the figure (what a batch job's duration depends on);
CPU-seconds are printed too. Outputs are compared with the first configuration's (identical
texts, of rows), and with `reference` (fp32, one request at a time) when that is in the set.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE = ROOT / "infra" / "demo" / "dialogsum_sample.jsonl"
SYSTEM = "You summarise conversations in one short sentence."  # profiles.yaml, summarize
MAX_TOKENS = 60
PENALTY = 1.1  # infra/demo/__main__.py sets LOCAL_BEDROCK_REAL_REPETITION_PENALTY=1.1
BEFORE_COMMIT = "44e1df0910f969a080f0fd246dfca39eb886d214"

# name -> engine settings. engine: "before" (BEFORE_COMMIT's generate()) or "now".
CONFIGS: dict[str, dict] = {
    "before": {"engine": "before", "batch": 32},
    "now": {"engine": "now"},
    "reference": {"engine": "before", "batch": 1, "dtype": "float32"},
    "now-fp32": {"engine": "now", "dtype": "float32"},
    "now-bf16": {"engine": "now", "dtype": "bfloat16"},
    "now-b8": {"engine": "now", "batch": 8},
    "now-b16": {"engine": "now", "batch": 16},
    "now-b32": {"engine": "now", "batch": 32},
    "now-b64": {"engine": "now", "batch": 64},
    "now-b128": {"engine": "now", "batch": 128},
    "now-1thread": {"engine": "now", "threads": 1},
    "now-2procs": {"engine": "now", "threads": 1, "procs": 2},
    "now-no-penalty": {"engine": "now", "penalty": 1.0},
    "before-no-penalty": {"engine": "before", "batch": 32, "penalty": 1.0},
    "before-fp32": {"engine": "before", "batch": 32, "dtype": "float32"},
    "before-b64": {"engine": "before", "batch": 64},
}
DEFAULT = ["before", "now"]


def requests(rows: int):
    from infra.local_bedrock.engines import TextRequest

    lines = SAMPLE.read_text().splitlines()[:rows]
    return [TextRequest(messages=(("user", json.loads(line)["prompt"]),), system=SYSTEM,
                        max_tokens=MAX_TOKENS, temperature=0.0) for line in lines]


def before_module() -> types.ModuleType:
    """real.py as of BEFORE_COMMIT, imported from git as a sibling of the current one."""
    source = subprocess.run(["git", "show", f"{BEFORE_COMMIT}:infra/local_bedrock/engines/real.py"],
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout
    module = types.ModuleType("infra.local_bedrock.engines.real_before")
    module.__package__ = "infra.local_bedrock.engines"
    sys.modules[module.__name__] = module
    exec(compile(source, f"{BEFORE_COMMIT[:7]}:real.py", "exec"), module.__dict__)
    return module


def child(spec: dict, part: int, parts: int) -> None:
    """Load the engine, wait for "go" on stdin, generate, print one JSON line of results."""
    if spec["engine"] == "before":
        engine_class = before_module().SmolLM2TextEngine
    else:
        from infra.local_bedrock.engines.real import SmolLM2TextEngine as engine_class
    kwargs = {"repetition_penalty": spec.get("penalty", PENALTY), "dtype": spec.get("dtype", "auto"),
              "threads": spec.get("threads")}
    if "batch" in spec:
        kwargs["batch_size"] = spec["batch"]
    engine = engine_class(**kwargs)
    todo = requests(spec["rows"])[part::parts]
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    load, wall, cpu = os.getloadavg()[0], time.perf_counter(), time.process_time()
    results = engine.generate(todo)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({
        "wall": wall, "cpu": cpu, "load": [load, os.getloadavg()[0]],
        "output_tokens": sum(r.output_tokens for r in results),
        "input_tokens": sum(r.input_tokens for r in results),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "texts": [r.text for r in results], "dtype": str(engine.dtype),
    }), flush=True)


def ceiling(input_tokens: int, output_tokens: int) -> None:
    """Print the matmul rate at the model's shapes and the workload's floor at that rate."""
    import torch

    from infra.local_bedrock.engines.real import SmolLM2TextEngine

    engine = SmolLM2TextEngine()
    model, dtype = engine.model, engine.dtype
    params = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    hidden, inner = model.config.hidden_size, model.config.intermediate_size
    rates = []
    for k, n in ((hidden, inner), (inner, hidden), (hidden, hidden)):
        a, b = torch.randn(4096, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        for _ in range(3):
            a @ b
        started = time.perf_counter()
        for _ in range(20):
            a @ b
        rates.append(2 * 4096 * k * n * 20 / (time.perf_counter() - started))
    rate = max(rates)
    flops = input_tokens * 2 * (params - embed) + output_tokens * 2 * params
    floor = flops / rate
    print(f"ceiling: {dtype} matmuls at {min(rates) / 1e9:.0f}-{rate / 1e9:.0f} GFLOP/s on {torch.get_num_threads()} "
          f"threads; the workload is {flops / 1e12:.1f} TFLOP ({params / 1e6:.0f}M parameters, "
          f"{embed / 1e6:.0f}M of them the tied embedding), so at least {floor:.1f} s, at most "
          f"{output_tokens / floor:.0f} answer tok/s")


def run(name: str, rows: int) -> dict:
    """Run one configuration (its processes started together); wall is the slowest's."""
    spec = {**CONFIGS[name], "rows": rows}
    parts = spec.get("procs", 1)
    procs = [subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec), str(i), str(parts)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
             for i in range(parts)]
    for p in procs:
        json.loads(p.stdout.readline())  # ready
    started = time.perf_counter()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [json.loads(p.stdout.readline()) for p in procs]
    wall = time.perf_counter() - started
    for p in procs:
        p.wait()
    texts: list[str] = [""] * rows
    for i, out in enumerate(outs):
        texts[i::parts] = out["texts"]
    tokens = sum(o["output_tokens"] for o in outs)
    return {"name": name, "wall": wall, "cpu": sum(o["cpu"] for o in outs), "output_tokens": tokens,
            "input_tokens": sum(o["input_tokens"] for o in outs), "tok_s": tokens / wall,
            "load": [min(o["load"][0] for o in outs), max(o["load"][1] for o in outs)],
            "rss_mb": max(o["rss_mb"] for o in outs), "dtype": outs[0]["dtype"], "texts": texts}


def same(a: list[str], b: list[str]) -> str:
    return f"{sum(x == y for x, y in zip(a, b))}/{len(a)}"


def main(names: list[str]) -> None:
    rows = int(os.environ.get("BENCH_REAL_ROWS", "200"))
    repeats = int(os.environ.get("BENCH_REAL_REPEATS", "2"))
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configurations {unknown}; known: {', '.join(CONFIGS)}")
    print(f"{rows} DialogSum rows, max_tokens {MAX_TOKENS}, {os.cpu_count()} CPUs; "
          f"configurations in turn, {repeats} rounds")
    print(f"{'config':<18} {'dtype':<15} {'wall s':>7} {'CPU s':>7} {'out tok':>7} {'tok/s':>6} "
          f"{'in tok/s':>8} {'RSS MB':>6} {'load':>11}  same text as {names[0]}")
    done: dict[str, list[dict]] = {}
    for _ in range(repeats):
        for name in names:
            result = run(name, rows)
            done.setdefault(name, []).append(result)
            first = done[names[0]][0]["texts"]
            print(f"{name:<18} {result['dtype']:<15} {result['wall']:>7.1f} {result['cpu']:>7.1f} "
                  f"{result['output_tokens']:>7} {result['tok_s']:>6.1f} {result['input_tokens'] / result['wall']:>8.0f} "
                  f"{result['rss_mb']:>6.0f} {result['load'][0]:>5.1f}-{result['load'][1]:<5.1f}  "
                  f"{same(first, result['texts'])}", flush=True)
    if "reference" in done:
        ref = done["reference"][0]["texts"]
        print("identical to the fp32 one-at-a-time reference: "
              + ", ".join(f"{n} {same(ref, runs[0]['texts'])}" for n, runs in done.items()))
    print("best tok/s: " + ", ".join(f"{n} {max(r['tok_s'] for r in runs):.1f}" for n, runs in done.items()))
    last = next(iter(done.values()))[0]
    subprocess.run([sys.executable, __file__, "--ceiling", str(last["input_tokens"]), str(last["output_tokens"])],
                   check=True, cwd=ROOT)
    out = ROOT / "benchmarks" / ".data" / "real_engine.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(done))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1:2] == ["--ceiling"]:
        ceiling(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main(sys.argv[1:] or DEFAULT)
