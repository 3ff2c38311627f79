"""The ``agentscope_react`` verl agent loop, run for real on CPU.

verl's own objects throughout: the loop is built the way ``AgentLoopWorker`` builds it (``hydra.utils.instantiate``
of its registry entry, with main_ppo's composed config), the stand-in servers have exactly the signature of verl's
``LLMServerClient.generate`` and return verl's ``TokenOutput``, and the last tests drive verl's ``AgentLoopWorker``
itself (no Ray: it is a plain class until ``AgentLoopManager`` wraps it in ``ray.remote``) with rows that select the
loop by ``agent_name``, through the example agent loop config ``examples/rl/verl/agent_loop.yaml``.

What needs a GPU is verl's rollout server (vLLM or SGLang) and its FSDP/Megatron workers; those are replaced here
by the stand-ins (a script, and the in-process tiny Qwen2 of :class:`TorchEngine`).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("verl.experimental.agent_loop.agent_loop", exc_type=ImportError)

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from verl.experimental.agent_loop.agent_loop import (
    AgentLoopOutput,
    AgentLoopWorker,
    DictConfigWrap,
    ToolListWrap,
    _agent_loop_registry,
)
from verl.protocol import DataProto
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.workers.rollout.llm_server import LLMServerClient
from verl.workers.rollout.replica import TokenOutput

from agentscope.exceptions import ModelError, UsageError
from agentscope.rl.verl_loop import AGENT_NAME, AgentScopeReactLoop

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_CONFIG = REPO / "examples" / "rl" / "verl" / "agent_loop.yaml"
CALCULATOR = f"{REPO / 'examples' / 'calculator.py'}:build_agent"
QUESTION = "What is 17 + 25?"
REGISTERED = dict(_agent_loop_registry[AGENT_NAME])
"""What ``@register`` put in verl's registry (AgentLoopWorker replaces it with a config file's entry)."""

ADD_CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 17, "b": 25}}\n</tool_call>'
BAD_CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 17, "b": }\n</tool_call>'
ANSWER = "The result is 42."
OBSERVATION_PREFIX = "\n<|im_start|>user\n<tool_response>\n"
OBSERVATION_SUFFIX = "\n</tool_response><|im_end|>\n<|im_start|>assistant\n"


# ---------------------------------------------------------------------- verl's server, stood in


class ScriptedServer:
    """verl's ``LLMServerClient`` stand-in: answers each call with the next scripted text, then ``<|im_end|>``, with
    log-probs that identify the call and the position (``-(call + 1) - position / 1000``) when they are asked for,
    except on the calls numbered in ``without_logprobs`` (from 1); ``always_logprobs``: also when not asked for."""

    def __init__(
        self,
        tokenizer: Any,
        script: Sequence[str],
        *,
        without_logprobs: Sequence[int] = (),
        always_logprobs: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.script = list(script)
        self.without_logprobs = set(without_logprobs)
        self.always_logprobs = always_logprobs
        self.calls: list[dict[str, Any]] = []
        self.outputs: list[TokenOutput] = []

    async def generate(
        self,
        request_id: str,
        *,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        audio_data: list[Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TokenOutput:
        self.calls.append(
            {"request_id": request_id, "prompt_ids": list(prompt_ids), "params": dict(sampling_params)}
        )
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        ids = [*self.tokenizer.encode(self.script.pop(0), add_special_tokens=False), im_end]
        ids = ids[: sampling_params["max_tokens"]]
        n = len(self.calls)
        with_logprobs = sampling_params.get("logprobs") or self.always_logprobs
        logprobs = (
            [-float(n) - i / 1000 for i in range(len(ids))]
            if with_logprobs and n not in self.without_logprobs
            else None
        )
        output = TokenOutput(token_ids=ids, log_probs=logprobs, stop_reason="completed", num_preempted=0)
        self.outputs.append(output)
        return output


class TorchServer:
    """verl's ``LLMServerClient`` stand-in over the in-process tiny Qwen2 (:class:`TorchEngine`): real sampling,
    real log-probs."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.calls = 0

    async def generate(
        self,
        request_id: str,
        *,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        audio_data: list[Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TokenOutput:
        from agentscope.rl.rollout import SamplingParams

        self.calls += 1
        params = SamplingParams(
            max_tokens=sampling_params["max_tokens"],
            temperature=sampling_params["temperature"],
            top_p=sampling_params["top_p"],
            stop_token_ids=list(sampling_params.get("stop_token_ids") or []),
            seed=self.calls,
        )
        generation = await self.engine.generate(list(prompt_ids), params)
        return TokenOutput(
            token_ids=generation.completion_ids,
            log_probs=generation.logprobs if sampling_params.get("logprobs") else None,
            stop_reason="completed",
        )


def test_the_stand_ins_have_verls_generate_signature() -> None:
    verl_signature = inspect.signature(LLMServerClient.generate)
    for server in (ScriptedServer, TorchServer):
        ours = inspect.signature(server.generate)
        assert list(ours.parameters) == list(verl_signature.parameters)
        assert [p.kind for p in ours.parameters.values()] == [
            p.kind for p in verl_signature.parameters.values()
        ]


# ---------------------------------------------------------------------- main_ppo's config, the loop as verl builds it


@pytest.fixture(scope="module")
def ppo_config(policy_dir: Path) -> Any:
    """main_ppo's composed Hydra config (verl/trainer/config/ppo_trainer.yaml) for the tiny policy."""
    import verl

    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(
            "ppo_trainer",
            overrides=[
                f"actor_rollout_ref.model.path={policy_dir}",
                "actor_rollout_ref.rollout.name=vllm",
                "actor_rollout_ref.rollout.prompt_length=512",
                "actor_rollout_ref.rollout.response_length=256",
                "actor_rollout_ref.rollout.calculate_log_probs=true",
                f"actor_rollout_ref.rollout.agent.agent_loop_config_path={EXAMPLE_CONFIG}",
            ],
        )


def make_loop(config: Any, server: Any, tokenizer: Any, **loop_config: Any) -> AgentScopeReactLoop:
    """The loop built as ``AgentLoopWorker._run_agent_loop`` builds it."""
    entry = {**REGISTERED, **loop_config}
    loop = instantiate(
        config=entry,
        trainer_config=DictConfigWrap(config=config),
        server_manager=server,
        tokenizer=tokenizer,
        processor=None,
        hf_model_type="qwen2",
        dataset_cls=RLHFDataset,
        data_config=DictConfigWrap(config.data),
        tools=ToolListWrap([]),
    )
    assert isinstance(loop, AgentScopeReactLoop)
    return loop


def sampling_params(config: Any) -> dict[str, Any]:
    """What ``AgentLoopWorker.generate_sequences`` passes to ``run``."""
    rollout = config.actor_rollout_ref.rollout
    return {
        "temperature": rollout.temperature,
        "top_p": rollout.top_p,
        "top_k": rollout.top_k,
        "repetition_penalty": 1.0,
        "logprobs": rollout.calculate_log_probs,
    }


def row(**extra_info: Any) -> dict[str, Any]:
    """A dataset row as RLHFDataset hands it to the loop (after the worker took ``agent_name`` out)."""
    return {
        "raw_prompt": [{"role": "user", "content": QUESTION}],
        "extra_info": dict(extra_info),
        "reward_model": {"ground_truth": "42"},
        "data_source": "calc",
        "tools_kwargs": {},
        "index": 0,
    }


def segments(mask: list[int]) -> list[tuple[int, int, int]]:
    """(value, start, end) of each run of equal mask values."""
    runs: list[tuple[int, int, int]] = []
    start = 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            runs.append((mask[start], start, i))
            start = i
    return runs


def test_the_loop_is_registered_under_its_name() -> None:
    from hydra.utils import get_class

    assert AGENT_NAME == "agentscope_react"
    assert REGISTERED == {"_target_": "agentscope.rl.verl_loop._loop.AgentScopeReactLoop"}
    target = REGISTERED["_target_"]
    assert get_class(target) is AgentScopeReactLoop


def test_the_example_config_names_the_loop() -> None:
    from omegaconf import OmegaConf

    (entry,) = OmegaConf.load(EXAMPLE_CONFIG)
    assert entry.name == AGENT_NAME
    from hydra.utils import get_class

    assert get_class(entry._target_) is AgentScopeReactLoop


def test_a_config_files_entry_survives_the_import_of_the_loop() -> None:
    """In main_ppo an AgentLoopWorker (a fresh Ray actor process) loads the agent loop config file into verl's
    registry first, and importing the loop (``@register``) must not replace that entry and its ``agent:``."""
    import subprocess

    code = (
        "import sys\n"
        "from omegaconf import OmegaConf\n"
        "from verl.experimental.agent_loop.agent_loop import _agent_loop_registry\n"
        "for entry in OmegaConf.load(sys.argv[1]):\n"
        "    _agent_loop_registry[entry.name] = entry\n"
        "import agentscope.rl.verl_loop\n"
        "print(_agent_loop_registry['agentscope_react']['agent'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(EXAMPLE_CONFIG)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "examples/calculator.py:build_agent"


# ---------------------------------------------------------------------- a scripted episode, token by token


async def test_a_scripted_episode_is_verls_token_stream(ppo_config: Any, tokenizer: Any) -> None:
    server = ScriptedServer(tokenizer, [BAD_CALL, ADD_CALL, ANSWER])
    loop = make_loop(ppo_config, server, tokenizer, agent=CALCULATOR)
    output = await loop.run(sampling_params(ppo_config), **row())

    assert isinstance(output, AgentLoopOutput)
    assert output.extra_fields["agentscope_status"] == "ok"
    assert output.num_turns == 6
    assert output.reward_score is None  # left to verl's reward manager
    # one request id for the episode (verl's sticky sessions); verl's sampling knobs on every call
    assert len({c["request_id"] for c in server.calls}) == 1
    for call in server.calls:
        assert call["params"]["temperature"] == ppo_config.actor_rollout_ref.rollout.temperature
        assert call["params"]["logprobs"] is True
        assert tokenizer.convert_tokens_to_ids("<|im_end|>") in call["params"]["stop_token_ids"]

    # the prompt is the first call's prompt: the tokenizer's chat template applied to the agent's messages
    assert output.prompt_ids == server.calls[0]["prompt_ids"]
    example = _load_calculator().build_agent()  # the example agent on its offline stand-in model
    tools = [
        {
            "type": "function",
            "function": {"name": s.name, "description": s.description, "parameters": s.parameters},
        }
        for s in example.toolkit.schemas()
    ]
    system = example.sys_prompt
    rendered = tokenizer.apply_chat_template(
        [{"role": "system", "content": system}, {"role": "user", "content": QUESTION}],
        tools=tools,
        add_generation_prompt=True,
        tokenize=False,
    )
    assert tokenizer.decode(output.prompt_ids) == rendered

    # every call's prompt is the previous prompt + completion + the observation: prompt_ids + response_ids is
    # the last call's prompt + its completion, re-decoding to the whole conversation
    last = server.calls[-1]["prompt_ids"] + server.outputs[-1].token_ids
    assert output.prompt_ids + output.response_ids == last

    # mask 1 exactly on the generated tokens, in order; 0 exactly on tool results and chat-format tokens
    runs = segments(output.response_mask)
    assert [value for value, _, _ in runs] == [1, 0, 1, 0, 1]
    generated = [output.response_ids[a:b] for value, a, b in runs if value == 1]
    assert generated == [o.token_ids for o in server.outputs]
    observations = [tokenizer.decode(output.response_ids[a:b]) for value, a, b in runs if value == 0]
    for text in observations:
        assert text.startswith(OBSERVATION_PREFIX)
        assert text.endswith(OBSERVATION_SUFFIX)
    # the malformed call went back to the model as a tool error, the good one as its result
    assert observations[0].startswith(OBSERVATION_PREFIX + "Error: arguments were not valid JSON")
    assert observations[1] == OBSERVATION_PREFIX + "42.0" + OBSERVATION_SUFFIX

    # log-probs aligned with the mask: the server's on mask-1 tokens, 0.0 elsewhere
    assert output.response_logprobs is not None
    assert len(output.response_logprobs) == len(output.response_ids)
    on_generated = [p for p, m in zip(output.response_logprobs, output.response_mask, strict=True) if m]
    assert on_generated == [p for o in server.outputs for p in o.log_probs or []]
    assert all(p == 0.0 for p, m in zip(output.response_logprobs, output.response_mask, strict=True) if not m)


async def test_the_response_length_truncates_the_episode(ppo_config: Any, tokenizer: Any) -> None:
    from omegaconf import OmegaConf

    config = OmegaConf.merge(ppo_config, {"actor_rollout_ref": {"rollout": {"response_length": 48}}})
    server = ScriptedServer(tokenizer, [ADD_CALL, ADD_CALL, ADD_CALL, ANSWER])
    loop = make_loop(config, server, tokenizer, agent=CALCULATOR)
    output = await loop.run(sampling_params(config), **row())

    assert output.extra_fields["agentscope_status"] == "truncated"
    assert len(output.response_ids) <= 48
    assert len(output.response_mask) == len(output.response_ids)
    # each call may generate only what is left of the budget after the tokens before it
    first = len(server.calls[0]["prompt_ids"])
    for call in server.calls:
        assert call["params"]["max_tokens"] == 48 - (len(call["prompt_ids"]) - first)


async def test_a_reward_function_scores_the_final_reply(
    ppo_config: Any, tokenizer: Any, tmp_path: Path
) -> None:
    reward_file = tmp_path / "reward.py"
    reward_file.write_text(
        "def compute_score(data_source, solution_str, ground_truth, extra_info=None):\n"
        "    return {'score': float(ground_truth in solution_str), 'source': data_source}\n"
    )
    server = ScriptedServer(tokenizer, [ADD_CALL, ANSWER])
    loop = make_loop(ppo_config, server, tokenizer, agent=CALCULATOR, reward=f"{reward_file}:compute_score")
    output = await loop.run({**sampling_params(ppo_config), "logprobs": False}, **row())
    assert output.reward_score == 1.0
    assert output.extra_fields["reward_extra_info"] == {"source": "calc"}
    # verl's default (calculate_log_probs off): no log-probs asked for, none returned
    assert [c["params"]["logprobs"] for c in server.calls] == [False, False]
    assert output.response_logprobs is None


async def test_a_server_answering_without_the_asked_for_logprobs_is_a_model_error(
    ppo_config: Any, tokenizer: Any
) -> None:
    """With log-probs asked for, a call answered without them fails the episode naming the server and the request,
    rather than giving this row no rollout_log_probs while the batch's other rows have them (verl keeps the batch's
    rollout_log_probs by its first row)."""
    server = ScriptedServer(tokenizer, [ADD_CALL, ANSWER], without_logprobs=[2])
    loop = make_loop(ppo_config, server, tokenizer, agent=CALCULATOR)
    with pytest.raises(ModelError) as caught:
        await loop.run(sampling_params(ppo_config), **row())
    message = str(caught.value)
    request_id = server.calls[0]["request_id"]
    assert (
        f"verl's vllm rollout server (through ScriptedServer) answered request '{request_id}' (call 2)"
        in message
    )
    assert "no log-probs" in message
    assert "calculate_log_probs" in message


async def test_logprobs_not_asked_for_are_none_whatever_the_server_returns(
    ppo_config: Any, tokenizer: Any
) -> None:
    """Not asked for: no row has log-probs, also when the server returns some for one call and none for another."""
    server = ScriptedServer(tokenizer, [ADD_CALL, ANSWER], without_logprobs=[2], always_logprobs=True)
    loop = make_loop(ppo_config, server, tokenizer, agent=CALCULATOR)
    output = await loop.run({**sampling_params(ppo_config), "logprobs": False}, **row())
    assert output.extra_fields["agentscope_status"] == "ok"
    assert server.outputs[0].log_probs is not None
    assert server.outputs[1].log_probs is None
    assert output.response_logprobs is None


async def test_a_row_names_its_agent_and_a_failing_agent_is_masked_out(
    ppo_config: Any, tokenizer: Any, tmp_path: Path
) -> None:
    agent_file = tmp_path / "broken_agent.py"
    agent_file.write_text(
        "from agentscope.agents import ReActAgent\n"
        "from agentscope.tools import Toolkit\n\n"
        "def explode() -> str:\n"
        '    """Explode."""\n'
        "    return 'boom'\n\n"
        "def build_agent(model, extra_info):\n"
        "    agent = ReActAgent(name='broken', sys_prompt=extra_info['system'], model=model, toolkit=Toolkit())\n"
        "    def fail(_agent, _result):\n"
        "        raise RuntimeError('the agent broke')\n"
        "    agent.register_hook('post_reasoning', 'fail', fail)\n"
        "    return agent\n"
    )
    server = ScriptedServer(tokenizer, [ANSWER])
    loop = make_loop(ppo_config, server, tokenizer)  # no agent in the loop config: the row names it
    output = await loop.run(
        sampling_params(ppo_config), **row(agentscope_agent=str(agent_file), system="Be brief.")
    )
    assert output.extra_fields["agentscope_status"] == "failed_agent"
    assert output.response_ids == server.outputs[0].token_ids
    assert set(output.response_mask) == {0}  # never trained on
    assert tokenizer.decode(output.prompt_ids).startswith("<|im_start|>system\nBe brief.<|im_end|>")


async def test_episodes_started_at_once_load_the_agent_file_once(
    ppo_config: Any, tokenizer: Any, tmp_path: Path
) -> None:
    """verl starts a worker's episodes together: none may see the agent file half executed by another."""
    import asyncio

    agent_file = tmp_path / "slow_agent.py"
    agent_file.write_text(
        "import time\n"
        "from agentscope.agents import ReActAgent\n\n"
        "LOADS = globals().get('LOADS', 0) + 1\n"
        "time.sleep(0.3)  # a slow import: the factory is defined only after it\n\n"
        "def build_agent(model):\n"
        "    return ReActAgent(name='slow', sys_prompt='Answer.', model=model)\n"
    )
    server = ScriptedServer(tokenizer, [ANSWER] * 4)
    loops = [make_loop(ppo_config, server, tokenizer, agent=str(agent_file)) for _ in range(4)]
    outputs = await asyncio.gather(*(loop.run(sampling_params(ppo_config), **row()) for loop in loops))
    assert [o.extra_fields["agentscope_status"] for o in outputs] == ["ok"] * 4
    (module,) = [m for name, m in sys.modules.items() if name.startswith("_agentscope_user_slow_agent_")]
    assert module.LOADS == 1


async def test_no_agent_spec_is_a_usage_error(ppo_config: Any, tokenizer: Any) -> None:
    loop = make_loop(ppo_config, ScriptedServer(tokenizer, []), tokenizer)
    with pytest.raises(UsageError, match="agent_loop_config_path"):
        await loop.run(sampling_params(ppo_config), **row())


# ---------------------------------------------------------------------- verl's AgentLoopWorker, real tiny model


@pytest.fixture
def worker_factory(ppo_config: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Builds verl's AgentLoopWorker (it loads the example agent loop config into verl's registry, which is
    restored afterwards)."""
    monkeypatch.chdir(REPO)  # the example config names examples/calculator.py relative to the repository
    saved = dict(_agent_loop_registry)

    def make(server: Any, **rollout: Any) -> AgentLoopWorker:
        from omegaconf import OmegaConf

        config = OmegaConf.merge(ppo_config, {"actor_rollout_ref": {"rollout": rollout}})
        return AgentLoopWorker(config, llm_client=server)

    yield make
    _agent_loop_registry.clear()
    _agent_loop_registry.update(saved)


def batch(rows: list[dict[str, Any]], agent_name: str | None, *, validate: bool = False) -> DataProto:
    """Rows as verl's dataloader collates them (non-tensor fields as numpy object arrays)."""
    non_tensor: dict[str, Any] = {}
    for key in rows[0]:
        column = np.empty(len(rows), dtype=object)
        column[:] = [r[key] for r in rows]
        non_tensor[key] = column
    if agent_name is not None:
        non_tensor["agent_name"] = np.array([agent_name] * len(rows), dtype=object)
    non_tensor["index"] = np.arange(len(rows))
    return DataProto(non_tensor_batch=non_tensor, meta_info={"global_steps": 1, "validate": validate})


MEMORIZED_AGENT = """
from agentscope.agents import ReActAgent
from agentscope.tools import Toolkit


def calculator(expression: str) -> str:
    \"\"\"Evaluate an arithmetic expression and return the result.

    Args:
        expression: The expression.
    \"\"\"
    a, op, b = expression.split()
    return str(int(a) + int(b) if op == "+" else int(a) - int(b))


def build_agent(model, sys_prompt):
    toolkit = Toolkit()
    toolkit.register(calculator)
    return ReActAgent(name="solver", sys_prompt=sys_prompt, model=model, toolkit=toolkit)
"""
"""The agent of the rollout tests' demonstration (the memorized policy replays it greedily: a calculator call,
then the answer); its system prompt comes from the row."""


def assert_actor_recomputes_rollout_logprobs(
    out: DataProto, model_dir: Path, rollout: Any, temperature: float
) -> None:
    """The rollout log-probs at mask-1 positions are what verl's actor computes from ``input_ids``."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    attention = out.batch["attention_mask"]
    with torch.no_grad():
        for i in range(len(out)):
            ids = out.batch["input_ids"][i][attention[i].bool()]
            logits = model(ids[None]).logits[0, :-1].float()
            logp = torch.log_softmax(logits / temperature, dim=-1).gather(1, ids[1:, None])[:, 0]
            n_prompt = int(attention[i, : rollout.prompt_length].sum())
            n_response = int(attention[i, rollout.prompt_length :].sum())
            recomputed = logp[n_prompt - 1 : n_prompt - 1 + n_response]
            on = out.batch["response_mask"][i, :n_response].bool()
            assert int(on.sum()) > 0
            rollout_logp = out.batch["rollout_log_probs"][i, :n_response]
            assert torch.allclose(recomputed[on], rollout_logp[on], atol=2e-3)


@pytest.mark.slow
async def test_verls_worker_plays_rows_with_a_real_tiny_model(
    worker_factory: Any, ppo_config: Any, memorized_dir: Path, tmp_path: Path
) -> None:
    """Rows with ``agent_name: agentscope_react`` are played through verl's own AgentLoopWorker by a real model:
    greedily (validation), the memorized policy calls the tool and answers, and the batch has verl's layout; sampled
    at temperature 1, the rollout log-probs are what the actor recomputes."""
    from agentscope.rl.rollout import TorchEngine

    agent_file = tmp_path / "memorized_agent.py"
    agent_file.write_text(MEMORIZED_AGENT)
    rows = [
        {
            **row(agentscope_agent=str(agent_file)),
            "raw_prompt": [
                {"role": "system", "content": "Use the calculator."},
                {"role": "user", "content": QUESTION},
            ],
        }
        for _ in range(2)
    ]
    rollout = ppo_config.actor_rollout_ref.rollout
    engine = TorchEngine(memorized_dir, max_batch=4, max_seq_len=1024, seed=0)
    await engine.start()
    try:
        server = TorchServer(engine)
        worker = worker_factory(server)
        greedy = await worker.generate_sequences(batch(rows, AGENT_NAME, validate=True))
        sampled = await worker.generate_sequences(batch(rows, AGENT_NAME))
    finally:
        await engine.stop()

    assert greedy.batch["responses"].shape == (2, rollout.response_length)
    assert greedy.batch["prompts"].shape == (2, rollout.prompt_length)
    assert list(greedy.non_tensor_batch["agentscope_status"]) == ["ok", "ok"]
    tokenizer = worker.tokenizer
    for i in range(2):
        n = int(greedy.batch["attention_mask"][i, rollout.prompt_length :].sum())
        response_ids = greedy.batch["responses"][i, :n].tolist()
        mask = greedy.batch["response_mask"][i, :n].tolist()
        assert [value for value, _, _ in segments(mask)] == [1, 0, 1]  # call, tool result, answer
        (_, a, b) = segments(mask)[1]
        assert tokenizer.decode(response_ids[a:b]) == OBSERVATION_PREFIX + "42" + OBSERVATION_SUFFIX
        assert "42" in tokenizer.decode(response_ids[b:])
        # padding is never a generated token
        assert greedy.batch["response_mask"][i, n:].sum() == 0
    assert_actor_recomputes_rollout_logprobs(
        greedy, memorized_dir, rollout, temperature=1.0
    )  # greedy: log_softmax
    assert_actor_recomputes_rollout_logprobs(sampled, memorized_dir, rollout, temperature=rollout.temperature)


async def test_the_default_agent_loop_selects_it_for_rows_without_agent_name(
    worker_factory: Any, tokenizer: Any
) -> None:
    server = ScriptedServer(tokenizer, [ADD_CALL, ANSWER])
    worker = worker_factory(server, agent={"default_agent_loop": AGENT_NAME})
    out = await worker.generate_sequences(batch([row()], None))
    assert list(out.non_tensor_batch["agentscope_status"]) == ["ok"]
    assert len(server.calls) == 2


def _load_calculator() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("calculator_example", REPO / "examples" / "calculator.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
