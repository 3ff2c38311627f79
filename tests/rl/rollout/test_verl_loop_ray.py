"""The ``agentscope_react`` agent loop behind verl's ``AgentLoopManager``, on a real local Ray cluster (2 CPUs,
dashboard off): as in main_ppo, the loop runs in an ``AgentLoopWorker`` Ray actor, a fresh process that learns of it
only from the agent loop config file (``actor_rollout_ref.rollout.agent.agent_loop_config_path``, the example
``examples/rl/verl/agent_loop.yaml``), and the rows pick it by ``agent_name``. The LLM server is a stand-in with
verl's ``generate`` signature (the real one is a vLLM or SGLang server on a GPU)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("verl.experimental.agent_loop.agent_loop", exc_type=ImportError)
ray = pytest.importorskip("ray", reason="the Ray backend needs the scale extra: pip install -e '.[scale]'")

import numpy as np  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from verl.experimental.agent_loop.agent_loop import AgentLoopManager  # noqa: E402
from verl.protocol import DataProto  # noqa: E402
from verl.workers.rollout.replica import TokenOutput  # noqa: E402

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_CONFIG = REPO / "examples" / "rl" / "verl" / "agent_loop.yaml"
ADD_CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 17, "b": 25}}\n</tool_call>'
ANSWER = "The result is 42."


class PromptReadingServer:
    """verl's ``LLMServerClient`` stand-in, stateless (each worker gets a pickled copy): a tool call while the prompt
    holds no tool result, then the answer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

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
        text = ANSWER if "<tool_response>" in self.tokenizer.decode(prompt_ids) else ADD_CALL
        ids = [
            *self.tokenizer.encode(text, add_special_tokens=False),
            self.tokenizer.convert_tokens_to_ids("<|im_end|>"),
        ]
        return TokenOutput(token_ids=ids, log_probs=[-0.25] * len(ids), stop_reason="completed")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray cluster for the module; the test module's classes travel to the actors by value."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.usefixtures("local_ray")
def test_main_ppos_agent_loop_manager_runs_the_loop_in_a_ray_actor(
    policy_dir: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import verl

    monkeypatch.chdir(REPO)  # the example config names examples/calculator.py relative to the repository
    with initialize_config_dir(
        config_dir=str(Path(verl.__file__).parent / "trainer" / "config"), version_base=None
    ):
        config = compose(
            "ppo_trainer",
            overrides=[
                f"actor_rollout_ref.model.path={policy_dir}",
                "actor_rollout_ref.rollout.name=vllm",
                "actor_rollout_ref.rollout.prompt_length=512",
                "actor_rollout_ref.rollout.response_length=256",
                "actor_rollout_ref.rollout.calculate_log_probs=true",
                "actor_rollout_ref.rollout.agent.num_workers=1",
                f"actor_rollout_ref.rollout.agent.agent_loop_config_path={EXAMPLE_CONFIG}",
            ],
        )
    manager = AgentLoopManager.create(config, llm_client=PromptReadingServer(tokenizer))
    rows = 2
    raw_prompt = np.empty(rows, dtype=object)
    raw_prompt[:] = [[{"role": "user", "content": "What is 17 + 25?"}] for _ in range(rows)]
    extra_info = np.empty(rows, dtype=object)
    extra_info[:] = [{} for _ in range(rows)]
    batch = DataProto(
        non_tensor_batch={
            "raw_prompt": raw_prompt,
            "extra_info": extra_info,
            "agent_name": np.array(["agentscope_react"] * rows, dtype=object),
            "index": np.arange(rows),
        },
        meta_info={"global_steps": 1, "validate": False},
    )
    out = manager.generate_sequences(batch)

    assert list(out.non_tensor_batch["agentscope_status"]) == ["ok", "ok"]
    assert out.batch["responses"].shape == (rows, 256)
    for i in range(rows):
        n = int(out.batch["attention_mask"][i, 512:].sum())
        text = tokenizer.decode(out.batch["responses"][i, :n].tolist())
        assert text.startswith(ADD_CALL)
        assert "<tool_response>\n42.0\n</tool_response>" in text
        assert text.endswith(ANSWER + "<|im_end|>")
        generated = out.batch["response_mask"][i, :n].bool()
        assert (out.batch["rollout_log_probs"][i, :n][generated] == -0.25).all()
