"""The small tokenizer is built locally and loads through AutoTokenizer."""
import pytest

from monitor_jax.errors import CheckpointError
from monitor_jax.model.tokenizer import build_tokenizer, load_tokenizer, unmark

TEXTS = ["Is this request harmful? Answer Yes or No.", "The agent deleted the audit logs. Yes",
         "Summarise the article in one sentence. No"] * 30


def test_build_save_load_round_trip(tmp_path):
    tok = build_tokenizer(tmp_path / "tok", TEXTS, vocab_size=320)
    again = load_tokenizer(tmp_path / "tok")
    text = "The agent deleted the logs. Is this harmful? Yes"
    assert again.encode(text) == tok.encode(text)
    assert again.decode(again.encode(text)) == text
    assert again.pad_id is not None and again.eos_id is not None and again.pad_id != again.eos_id
    assert 256 < again.vocab_size <= 320


def test_chat_template_and_assistant_mask(tmp_path):
    tok = build_tokenizer(tmp_path / "tok", TEXTS, vocab_size=320)
    prompt = unmark(tok.chat([{"role": "user", "content": "Is this harmful?"}], add_generation_prompt=True))[0]
    assert prompt == "<|im_start|>user\nIs this harmful?<|im_end|>\n<|im_start|>assistant\n"
    out = tok.hf.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Yes"}],
                                     tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tok.decode(masked) == "Yes<|im_end|>"


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="never downloads"):
        load_tokenizer(tmp_path / "nope")
