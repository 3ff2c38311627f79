"""What a hop between processes costs on this machine: the numbers ``benchmarks/scale/project.py`` feeds the
schedule simulator.

    .venv/bin/python benchmarks/scale/hops.py                       # every part, ~2 minutes
    .venv/bin/python benchmarks/scale/hops.py --parts http,ray --repeat 100

Parts (each records the 1-minute load average before and after it: the machine may be shared):

- ``http``: one chat turn to a rollout app on 127.0.0.1 (uvicorn in a process of its own, what
  ``rollout.backend: process`` and the Ray actors run) through :class:`RemoteRolloutServer`, against the same turn
  on the same :class:`RolloutService` in process. The engine answers at once (a fixed 16-token completion), so
  the difference is the transport: the client writes the whole conversation as JSON, the app parses it, renders and
  answers the token ids and log-probs, the client parses them. Episodes of 4 turns (the prompt grows each turn),
  one at a time (latency) and 32 at once (what one server can take: calls per second).
- ``ray``: a Ray actor method round trip (``ray.get(actor.put.remote(x))``) carrying a list of n ints and a
  :class:`Trajectory` of that many tokens, on a local cluster (``ray.init(num_cpus=2)`` on the main thread).
- ``weights``: the quick start policy's weights (``examples/rl/quickstart.yaml``: Qwen2, hidden 96, 3 layers)
  written once by :class:`WeightPublisher` (publish) and loaded by a rollout app with the real
  :class:`TorchEngine` over ``POST /weights`` (reload), by path and by upload.
- ``engine``: the quick start policy in a :class:`TorchEngine` (one thread), B requests at once of 170 distinct
  prompt tokens: the time of a decode step at batch B and of prefilling a prompt token, for the simulator's server.

Writes every sample's summary (median, p90, ...) as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _harness import REPO, loadavg, machine, uptime

from agentscope.message import Msg
from agentscope.rl.policy import TinyPolicyConfig
from agentscope.rl.rollout import Generation, SamplingParams

HERE = Path(__file__).resolve().parent
QUICKSTART = TinyPolicyConfig(
    vocab_size=1024,
    hidden_size=96,
    intermediate_size=192,
    num_layers=3,
    num_heads=4,
    num_kv_heads=2,
    max_position_embeddings=1024,
    corpus_conversations=200,
)
"""``policy.tiny`` of examples/rl/quickstart.yaml."""

SYSTEM = (
    "You answer questions about people in a company database. Use the tools: find_person(name) returns the ids "
    "of people with that name; get_record(id) returns a person's record with their employer, manager, city and "
    "start year; get_record of an employer returns the company's record. Call one tool at a time and copy the "
    "answer out of the last record you read. Answer with the value only."
)


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "p10": ordered[int(0.1 * (len(ordered) - 1))],
        "p90": ordered[int(0.9 * (len(ordered) - 1))],
        "mean": statistics.fmean(ordered),
        "min": ordered[0],
        "max": ordered[-1],
    }


def policy_dir() -> Path:
    """The quick start's policy shape (randomly initialised: the hops do not depend on the weights' values)."""
    from agentscope.rl.policy import build_tiny_policy

    out = HERE / "_out" / "hops-policy"
    if not (out / "model.safetensors").is_file():
        build_tiny_policy(QUICKSTART, out)
    return out


class InstantEngine:
    """A RolloutEngine that answers every prompt at once with the same 16 tokens (and a stop token)."""

    def __init__(self, completion: list[int]) -> None:
        self.completion = completion
        self.version = 0

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> Generation:
        ids = [*self.completion, params.stop_token_ids[0]]
        return Generation(
            completion_ids=ids,
            logprobs=[-0.5] * len(ids),
            finish_reason="stop",
            version_head=self.version,
            version_tail=self.version,
            prompt_len=len(prompt_ids),
        )

    async def update_weights(self, state_dict: Any, version: int) -> None:
        self.version = version

    def stats(self) -> dict[str, float]:
        return {}


def _tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    auto: Any = AutoTokenizer
    return auto.from_pretrained(path)


def _instant_service(path: Path) -> Any:
    from agentscope.rl.rollout import RolloutService

    tokenizer = _tokenizer(path)
    completion = tokenizer.encode("The answer is Lyon, from the record.", add_special_tokens=False)[:16]
    completion += [completion[-1]] * (16 - len(completion))
    return RolloutService(InstantEngine(completion), tokenizer)


# ---------------------------------------------------------------------- the server process


async def _serve(kind: str, path: Path, port_file: Path) -> None:
    from agentscope.rl.rollout import RolloutHTTPServer, RolloutService, TorchEngine

    if kind == "instant":
        service = _instant_service(path)
    else:
        service = RolloutService(TorchEngine(path, max_batch=32, max_seq_len=1024), _tokenizer(path))
    async with service, RolloutHTTPServer(service) as server:
        await asyncio.to_thread(port_file.write_text, str(server.port))
        await asyncio.to_thread(sys.stdin.read)  # until the parent closes our stdin


class ServerProcess:
    """``hops.py --serve KIND`` in a process of its own; its port once it listens."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind, self.path = kind, path
        self.port_file = Path(tempfile.mkdtemp()) / "port"

    def __enter__(self) -> str:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                self.kind,
                "--policy",
                str(self.path),
                "--port-file",
                str(self.port_file),
            ],
            stdin=subprocess.PIPE,
            cwd=REPO,
        )
        deadline = time.monotonic() + 120
        while not self.port_file.is_file() or not self.port_file.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {self.kind} server did not start")
            time.sleep(0.1)
        return f"http://127.0.0.1:{self.port_file.read_text()}"

    def __exit__(self, *exc_info: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# ---------------------------------------------------------------------- http


async def _episode(chat: Any, open_session: Any, close_session: Any, turns: int, times: list[float]) -> None:
    sid = open_session()
    messages = [Msg(role="system", content=SYSTEM), Msg(role="user", content="Where does Ada Moreau work?")]
    for turn in range(turns):
        start = time.perf_counter()
        response = await chat(sid, messages)
        times.append(time.perf_counter() - start)
        messages = [
            *messages,
            Msg(role="assistant", content=response.content),
            Msg(role="user", content=f"record {turn}: employer Acme Corp, city Lyon, manager id 4{turn}1"),
        ]
    close_session(sid)


def _keep_open(session_id: str) -> None:
    """The in-process episode that reads the prompt lengths closes its session itself."""


async def _calls(server: Any, episodes: int, concurrency: int, turns: int = 4) -> dict[str, Any]:
    times: list[float] = []
    semaphore = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with semaphore:
            await _episode(server.chat, server.open_session, server.close_session, turns, times)

    for _ in range(2):  # warm-up
        await one()
    times.clear()
    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(episodes)))
    wall = time.perf_counter() - started
    return {"latency_s": summary(times), "calls_per_s": len(times) / wall}


async def measure_http(path: Path, repeat: int) -> dict[str, Any]:
    from agentscope.rl.rollout import RemoteRolloutServer

    out: dict[str, Any] = {"load_before": loadavg()}
    service = _instant_service(path)
    async with service:
        out["inprocess_1"] = await _calls(service, repeat, 1)
        out["inprocess_32"] = await _calls(service, repeat, 32)
        sid = service.open_session()
        await _episode(service.chat, lambda: sid, _keep_open, 4, [])
        out["prompt_tokens_by_turn"] = [len(t.prompt_ids) for t in service.close_session(sid)]
    with ServerProcess("instant", path) as url:
        async with RemoteRolloutServer(url) as remote:
            out["http_1"] = await _calls(remote, repeat, 1)
            out["http_32"] = await _calls(remote, repeat, 32)
    out["hop_s"] = out["http_1"]["latency_s"]["median"] - out["inprocess_1"]["latency_s"]["median"]
    out["hop_p90_s"] = out["http_1"]["latency_s"]["p90"] - out["inprocess_1"]["latency_s"]["p90"]
    out["load_after"] = loadavg()
    return out


# ---------------------------------------------------------------------- ray


def measure_ray(repeat: int, sizes: list[int]) -> dict[str, Any]:
    import ray

    from agentscope.rl import Trajectory, Turn

    out: dict[str, Any] = {"load_before": loadavg()}
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    out["init_s"] = time.perf_counter() - started

    class Sink:
        def put(self, item: Any) -> int:
            return len(cast("list[int]", item)) if isinstance(item, list) else len(item.turns)

    try:
        sink: Any = ray.remote(Sink).remote()
        ray.get(sink.put.remote([0]))
        rng = random.Random(0)
        for n in sizes:
            ints = [rng.randrange(1024) for _ in range(n)]
            per_turn = n // 4
            trajectory = Trajectory(
                task_id="t",
                group_id="g",
                turns=[
                    Turn(
                        prompt_ids=ints[: per_turn * i + per_turn // 2],
                        completion_ids=ints[: per_turn - per_turn // 2],
                        logprobs=[-0.5] * (per_turn - per_turn // 2),
                        version_head=1,
                        version_tail=1,
                    )
                    for i in range(4)
                ],
            )
            out[f"trajectory_{n}_ids"] = sum(
                len(t.prompt_ids) + len(t.completion_ids) for t in trajectory.turns
            )
            for label, payload in (("ints", ints), ("trajectory", trajectory)):
                times: list[float] = []
                for _ in range(repeat):
                    t = time.perf_counter()
                    ray.get(sink.put.remote(payload))
                    times.append(time.perf_counter() - t)
                out[f"{label}_{n}"] = summary(times)
        times: list[float] = []
        for _ in range(repeat):
            t = time.perf_counter()
            ray.get(sink.put.remote([0]))
            times.append(time.perf_counter() - t)
        out["empty"] = summary(times)
    finally:
        ray.shutdown()
    out["load_after"] = loadavg()
    return out


# ---------------------------------------------------------------------- weights


async def measure_weights(path: Path, repeat: int) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    from agentscope.rl.rollout import RemoteRolloutServer, WeightPublisher

    out: dict[str, Any] = {"load_before": loadavg()}
    model = AutoModelForCausalLM.from_pretrained(path)
    state_dict = model.state_dict()
    out["parameters"] = sum(p.numel() for p in model.parameters())
    publish: list[float] = []
    reload: dict[str, list[float]] = {"path": [], "upload": []}
    with tempfile.TemporaryDirectory() as tmp, ServerProcess("torch", path) as url:
        publisher = WeightPublisher(tmp)
        async with (
            RemoteRolloutServer(url, publisher) as by_path,
            RemoteRolloutServer(url, publisher, upload=True) as by_upload,
        ):
            version = 0
            written = Path()
            for i in range(repeat + 1):
                for mode, server in (("path", by_path), ("upload", by_upload)):
                    version += 1
                    t = time.perf_counter()
                    written = await asyncio.to_thread(publisher.publish, state_dict, version)
                    t1 = time.perf_counter()
                    await server.update_weights(state_dict, version)  # published already: the reload only
                    t2 = time.perf_counter()
                    if i:  # the first round warms up
                        publish.append(t1 - t)
                        reload[mode].append(t2 - t1)
            out["file_bytes"] = written.stat().st_size
    out["publish_s"] = summary(publish)
    out["reload_path_s"] = summary(reload["path"])
    out["reload_upload_s"] = summary(reload["upload"])
    out["load_after"] = loadavg()
    return out


# ---------------------------------------------------------------------- engine


async def measure_engine(path: Path, repeat: int, batches: list[int]) -> dict[str, Any]:
    from agentscope.rl.rollout import TorchEngine

    out: dict[str, Any] = {"load_before": loadavg()}
    engine = TorchEngine(path, max_batch=max(batches), max_seq_len=1024, prefix_cache_slots=0)
    await engine.start()
    rng = random.Random(0)
    prompt_len, gen = 170, 48
    try:
        for batch in batches:
            rows: dict[str, list[float]] = {"prefill": [], "full": []}
            for _ in range(repeat):
                for label, tokens in (("prefill", 1), ("full", gen)):
                    prompts = [[rng.randrange(16, 700) for _ in range(prompt_len)] for _ in range(batch)]
                    params = SamplingParams(max_tokens=tokens, temperature=1.0, stop_token_ids=[])
                    t = time.perf_counter()
                    await asyncio.gather(*(engine.generate(p, params) for p in prompts))
                    rows[label].append(time.perf_counter() - t)
            prefill, full = statistics.median(rows["prefill"]), statistics.median(rows["full"])
            out[f"batch_{batch}"] = {
                "prefill_s": prefill,
                "full_s": full,
                "decode_step_s": (full - prefill) / (gen - 1),
                "prefill_token_s": prefill / (batch * prompt_len),
                "tokens_per_s": batch * gen / full,
            }
    finally:
        await engine.stop()
    out["load_after"] = loadavg()
    return out


async def _measure(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    parts = args.parts.split(",")
    if "http" in parts:
        out["http"] = await measure_http(path, args.repeat)
        print(f"[hops] http: {json.dumps(out['http'])}", file=sys.stderr, flush=True)
    if "weights" in parts:
        out["weights"] = await measure_weights(path, max(5, args.repeat // 10))
        print(f"[hops] weights: {json.dumps(out['weights'])}", file=sys.stderr, flush=True)
    if "engine" in parts:
        out["engine"] = await measure_engine(path, 5, [1, 8, 32])
        print(f"[hops] engine: {json.dumps(out['engine'])}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default="ray,http,weights,engine")
    parser.add_argument("--repeat", type=int, default=200, help="episodes / round trips per measurement")
    parser.add_argument("--out", type=Path, default=HERE / "_out" / "hops.json")
    parser.add_argument("--serve", choices=("instant", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--policy", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import torch

        torch.set_num_threads(1)
        asyncio.run(_serve(args.serve, args.policy, args.port_file))
        return
    import torch

    torch.set_num_threads(1)
    path = policy_dir()
    result: dict[str, Any] = {
        "machine": machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "uptime_start": uptime(),
        "argv": sys.argv[1:],
    }
    if "ray" in args.parts.split(","):  # first, on the main thread, before any event loop
        result["ray"] = measure_ray(args.repeat, [300, 3000])
        print(f"[hops] ray: {json.dumps(result['ray'])}", file=sys.stderr, flush=True)
    result.update(asyncio.run(_measure(args, path)))
    result["uptime_end"] = uptime()
    result["ended"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
