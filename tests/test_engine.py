"""The real transformers engine on the tiny model: loading, batching, seeds, stops, 4-bit."""


import pytest

from app.engine import EngineLoadError, GenerationRequest, HFEngine
from app.prompter import Prompter
from app.prompts import build_messages
from app.settings import Settings


def settings_for(model_dir, **kw):
    return Settings(base_model=str(model_dir), device="cpu", load_in_4bit=False, _env_file=None, **kw)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return HFEngine.load(settings_for(tiny_model_dir))


def prompt(engine, context="Gaming mouse launch"):
    return Prompter(engine.tokenizer).render(build_messages("caption", "TechZone", {"context": context}, None))


def test_loads_with_left_padding_and_distinct_pad(engine):
    tok = engine.tokenizer
    assert tok.padding_side == "left"
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"
    assert tok.convert_tokens_to_ids("<|im_end|>") in engine.stop_ids
    assert engine.defaults.temperature == pytest.approx(0.7) and engine.defaults.top_k == 20
    assert engine.info.quantization is None and engine.info.device == "cpu"


def test_same_seed_same_output_and_batch_independent(engine):
    p = prompt(engine)
    req = GenerationRequest(p, max_new_tokens=12, temperature=1.0, top_p=0.95, top_k=50, seed=1234)
    alone = engine.generate([req])[0]
    again = engine.generate([req])[0]
    other = GenerationRequest(prompt(engine, "ลดราคา 11.11 ทั้งร้าน"), 12, 1.0, 0.95, 50, seed=99)
    batched = engine.generate([other, req])[1]
    assert alone.text == again.text == batched.text
    assert alone.seed == 1234
    different = engine.generate([GenerationRequest(p, 12, 1.0, 0.95, 50, seed=4321)])[0]
    assert different.text != alone.text


def test_per_request_max_new_tokens_in_one_batch(engine):
    p = prompt(engine)
    short, long = engine.generate(
        [GenerationRequest(p, 3, 0.0, seed=1), GenerationRequest(p, 15, 0.0, seed=1)]
    )
    assert short.completion_tokens <= 3 and long.completion_tokens <= 15
    if long.finish_reason == "length":
        assert long.completion_tokens == 15
    assert short.prompt_tokens == long.prompt_tokens > 20


def test_stops_at_im_end(tiny_model_dir):
    engine = HFEngine.load(settings_for(tiny_model_dir))
    im_end = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    # Bias the random model so that <|im_end|> wins at the third step.
    from transformers import LogitsProcessor

    class EndAtThree(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] - n_prompt >= 2:
                scores[:, im_end] = 1e9
            return scores

    p = prompt(engine)
    n_prompt = Prompter(engine.tokenizer).count_tokens(p)
    original = engine.model.generate

    def generate(**kw):
        kw["logits_processor"] = [EndAtThree(), *kw["logits_processor"]]
        return original(**kw)

    engine.model.generate = generate
    result = engine.generate([GenerationRequest(p, 20, 0.0)])[0]
    assert result.finish_reason == "stop" and result.completion_tokens == 2
    assert "<|im_end|>" not in result.text


def test_missing_adapter_stops_loading(tiny_model_dir, tmp_path):
    with pytest.raises(EngineLoadError, match="does not exist.*ADAPTER_PATH"):
        HFEngine.load(settings_for(tiny_model_dir, adapter_path=tmp_path / "nope"))
    with pytest.raises(EngineLoadError, match="no adapter_config.json"):
        HFEngine.load(settings_for(tiny_model_dir, adapter_path=tmp_path))


def test_adapter_for_another_base_stops_loading(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

    other = Qwen2ForCausalLM(Qwen2Config(vocab_size=704, hidden_size=96, intermediate_size=192,
                                         num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=1))
    other_dir = tmp_path / "other-base"
    other.save_pretrained(other_dir)
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(other_dir), LoraConfig(r=4, target_modules=["q_proj"]))
    lora.save_pretrained(tmp_path / "adapter")
    # At startup another base name is a warning (a local copy is often named otherwise); the shapes decide.
    with pytest.raises(EngineLoadError, match="does not fit the base model.*size mismatch"):
        HFEngine.load(settings_for(tiny_model_dir, adapter_path=tmp_path / "adapter"))


def test_missing_base_model_is_a_clear_error(tmp_path):
    with pytest.raises(EngineLoadError, match="AI_DIRECTOR_BASE_MODEL"):
        HFEngine.load(settings_for(tmp_path / "no-model-here"))


def test_tokenizer_comes_from_the_adapter_folder(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.model_max_length = 777  # a marker only the adapter's copy has
    tok.save_pretrained(tmp_path)
    engine = HFEngine.load(settings_for(tiny_model_dir, adapter_path=tmp_path))
    assert engine.tokenizer.model_max_length == 777
    assert engine.info.adapter == str(tmp_path)
    assert engine.generate([GenerationRequest(prompt(engine), 4, 0.0)])[0].completion_tokens >= 1


def _bnb_cpu_ok() -> str | None:
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the machine
        return f"bitsandbytes unavailable: {exc}"
    return None


@pytest.mark.skipif(_bnb_cpu_ok() is not None, reason=str(_bnb_cpu_ok()))
def test_4bit_nf4_load_and_generate_on_cpu(tiny_model_dir):
    import bitsandbytes as bnb

    engine = HFEngine.load(settings_for(tiny_model_dir).model_copy(update={"load_in_4bit": True}))
    assert engine.info.quantization == "nf4"
    linears = [m for m in engine.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linears) == 2 * 7  # every projection of both layers is 4-bit
    assert linears[0].weight.quant_state.quant_type == "nf4"
    out = engine.generate([GenerationRequest(prompt(engine), 5, 0.0), GenerationRequest(prompt(engine, "ลดราคา"), 5, 0.0)])
    assert all(r.completion_tokens >= 1 for r in out)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_4bit_default_on_cuda(tiny_model_dir):
    engine = HFEngine.load(Settings(base_model=str(tiny_model_dir), _env_file=None))
    assert engine.info.quantization == "nf4" and engine.info.device == "cuda"
    assert engine.generate([GenerationRequest(prompt(engine), 5, 0.0)])[0].completion_tokens >= 1


def test_prompt_ids_from_the_request_path_give_the_same_batch(engine):
    """The service encodes each prompt once to count it; the engine pads those ids as they are."""
    prompter = Prompter(engine.tokenizer)
    prompts = [prompt(engine), prompt(engine, "ลดราคา 11.11 ทั้งร้าน สุดคุ้ม")]  # two lengths: left padding
    plain = [GenerationRequest(p, 8, 1.0, 0.9, 20, seed=3) for p in prompts]
    encoded = [GenerationRequest(p, 8, 1.0, 0.9, 20, seed=3, prompt_ids=tuple(prompter.encode(p))) for p in prompts]
    assert engine.generate(encoded) == engine.generate(plain)


def test_underflowing_sampling_values_mean_greedy_and_never_fail(engine):
    """temperature 1e-40 overflows the logits and top_p 1e-50 keeps nothing: both mean greedy,
    in a batch with an ordinary sampled row that must not be disturbed."""
    p = prompt(engine)
    greedy = engine.generate([GenerationRequest(p, 10, 0.0, seed=5)])[0].text
    sampled = GenerationRequest(p, 10, 1.0, 0.9, 20, seed=11)
    alone = engine.generate([sampled])[0].text
    tiny_t, tiny_p, normal = engine.generate([
        GenerationRequest(p, 10, 1e-40, seed=5), GenerationRequest(p, 10, 0.7, 1e-50, seed=5), sampled,
    ])
    assert tiny_t.text == tiny_p.text == greedy
    assert normal.text == alone


def test_generating_on_cpu_leaves_the_reserved_cores_to_the_server(monkeypatch):
    from app.engine import generation_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert generation_threads(1, cores=2) == 1
    assert generation_threads(1, cores=16) == 15
    assert generation_threads(0, cores=16) == 16
    assert generation_threads(4, cores=2) == 1  # never none at all
    assert generation_threads(1) >= 1  # the cores this process may run on
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert generation_threads(1, cores=16) is None  # the operator's own choice stands


def test_the_server_process_applies_the_reserved_cores(monkeypatch):
    import torch

    from app.__main__ import reserve_cores
    from app.engine import generation_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        reserve_cores(Settings(device="cpu", cpu_reserved_cores=1, _env_file=None))
        assert torch.get_num_threads() == generation_threads(1)
        torch.set_num_threads(before)
        reserve_cores(Settings(device="cpu", engine="vllm", vllm_url="http://vllm:8000", cpu_reserved_cores=1,
                                _env_file=None))
        assert torch.get_num_threads() == before  # vLLM's server generates, not this process
    finally:
        torch.set_num_threads(before)
