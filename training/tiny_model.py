"""A tiny Qwen2-architecture model with random weights, for tests and the CPU demo.

It has the real model's shape of everything that matters to the code (Qwen2 layers,
ChatML special tokens, pad != eos, the real Qwen2.5 chat template, a vocabulary larger
than the tokenizer) and none of its size: about 170k parameters, built in a second.
"""

import json
from importlib import resources
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
REPO_ROOT = Path(__file__).resolve().parent.parent

# A few lines that guarantee Thai and English coverage even before any data file exists.
SEED_TEXT = """\
เปิดตัวสินค้าใหม่วันนี้ พร้อมโปรโมชั่นพิเศษสำหรับลูกค้าทุกคน
เริ่มต้นเช้าวันใหม่ด้วยกาแฟที่ใช่ ☕️ #CoffeeLab
เรามีโปรโมชั่นพิเศษ ลด 20% ถึงสิ้นเดือนนี้เท่านั้น 🎉
แคมเปญนี้มีวัตถุประสงค์เพื่อให้ความรู้และสร้างความเชื่อมั่น
Level Up Your Game! Gaming Mouse ตัวใหม่ สเปกเทพ ตอบสนองเร็วทันใจ ⚡ #GamingGear
Write a social media caption for the brand. Campaign brief, key message, target audience.
สงกรานต์ ลอยกระทง ปีใหม่ วาเลนไทน์ หน้าฝน เปิดเทอม ช้อปออนไลน์ 11.11
""".splitlines()


def qwen_chat_template() -> str:
    """The Qwen2.5 template, from the copy TRL ships (byte-identical to the model's own)."""
    return resources.files("trl").joinpath("chat_templates/qwen2_5.jinja").read_text(encoding="utf-8")


def corpus_lines(root: Path = REPO_ROOT) -> list[str]:
    """The project's own Thai and English text: brands, datasets and prompt wording."""
    from app.prompts import SYSTEM_PROMPT
    from app.tasks import TASKS

    lines = list(SEED_TEXT) + [SYSTEM_PROMPT, *(task.instruction for task in TASKS.values())]
    brands_file = root / "brands" / "brands.json"
    if brands_file.is_file():
        lines += _strings(json.loads(brands_file.read_text(encoding="utf-8")))
    for data_file in sorted((root / "training" / "data").glob("*.jsonl")):
        for line in data_file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                lines += _strings(json.loads(line))
    return [line for line in lines if line.strip()]


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return value.splitlines()
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def build_tokenizer(lines: list[str], vocab_size: int = 4096):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(lines, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=32768,
    )
    tokenizer.chat_template = qwen_chat_template()
    return tokenizer


# Layer widths by variant. "default": 4 heads of 16 dims, every width a multiple of 32 (bnb
# CPU repack). "head64": 2 heads of 64 dims, since vLLM's CPU attention supports head sizes of
# 32, 64, 80, 96 and 128 only; the same tokenizer, so the two render identical prompts.
SHAPES = {
    "default": {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2},
    "head64": {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2, "num_key_value_heads": 1},
}


def build_tiny_model(out_dir: Path, seed: int = 0, shape: str = "default") -> Path:
    """Write a loadable model + tokenizer folder to `out_dir` and return it."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(corpus_lines())
    vocab = -(-len(tokenizer) // 32) * 32  # like the real model: a padded vocab, a multiple of 32
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(
        vocab_size=vocab,
        **SHAPES[shape],
        num_hidden_layers=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    # The real model's sampling defaults, so the demo behaves like the real thing.
    model.generation_config = GenerationConfig(
        bos_token_id=pad_id,
        pad_token_id=pad_id,
        eos_token_id=[eos_id, pad_id],
        do_sample=True,
        temperature=0.7,
        top_p=0.8,
        top_k=20,
        repetition_penalty=1.05,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_tiny_adapter(base_dir: Path, out_dir: Path, seed: int = 0, rank: int = 4) -> Path:
    """A LoRA for the tiny model with random (not zero) weights, so that each seed writes
    differently, and the prompt contract training would write: a stand-in for a retrained adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from app.prompt_contract import current_contract, write_contract
    from app.settings import Settings

    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), config)
    model.save_pretrained(out_dir)
    defaults = Settings.model_fields
    write_contract(Path(out_dir), current_contract(defaults["context_token_budget"].default,
                                                   defaults["max_seq_length"].default))
    return Path(out_dir)
