"""expand_vocab: coord tokens added to checkpoints that lack them (real Qwen3 vocab; tied and untied)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from coordexp.core.codec import COORD_TOKENS
from coordexp.core.errors import ConfigError, CoordVocabError
from coordexp.train.models import (
    build_model,
    build_processor,
    build_tiny_tokenizer,
    coord_vocab_for,
    create_model,
    expand_vocab,
    load_model_and_processor,
    probe_chat_template,
    save_checkpoint,
)
from coordexp.train.models.embedding_init import digit_mean_rows, digit_token_index


@pytest.fixture(scope="module")
def qwen3_expanded(tmp_path_factory):
    root = tmp_path_factory.mktemp("expand")
    source = create_model("tiny", "qwen3", seed=3, out_dir=root / "src", with_coord_tokens=False)
    result = expand_vocab(source, root / "dst")
    return source, result


def _embedding(directory, name="model.language_model.embed_tokens.weight"):
    return load_file(str(directory / "model.safetensors"))[name]


def test_real_vocab_gets_coord_ids_151669_to_152668(qwen3_expanded):
    source, result = qwen3_expanded
    assert result.added and result.tied
    assert result.coord_ids == tuple(range(151669, 152669)) and result.num_embeddings == 152669
    model, processor = load_model_and_processor(result.dst_dir)
    tok = processor.tokenizer
    assert len(tok) == 152669 and coord_vocab_for(tok, result.num_embeddings).ids == result.coord_ids
    assert tok.convert_tokens_to_ids(["<|im_end|>", "<|vision_start|>", "<|image_pad|>"]) == [
        151645,
        151652,
        151655,
    ]
    assert (
        model.config.text_config.vocab_size == 152669
        and model.lm_head.weight is model.get_input_embeddings().weight
    )
    assert not any(tok.added_tokens_decoder[i].special for i in result.coord_ids[::111])

    before, after = _embedding(source), model.get_input_embeddings().weight.detach()
    assert before.shape == (151669, 128)
    torch.testing.assert_close(after[:151669], before, rtol=0, atol=0)  # old rows untouched
    index, valid = digit_token_index(tok)
    torch.testing.assert_close(after[151669:], digit_mean_rows(before, index, valid), rtol=0, atol=1e-7)
    # "<|coord_437|>" is the mean of the rows of "4", "3" and "7"
    digits = tok.convert_tokens_to_ids(["4", "3", "7"])
    torch.testing.assert_close(after[151669 + 437], before[digits].mean(0), rtol=0, atol=1e-7)

    probe_chat_template(
        tok, system="s", user="u", assistant='{"objects": [{"desc": "a", "bbox_2d": [<|coord_1|>]}]}'
    )
    ids = tok.encode(COORD_TOKENS[437] + "<|im_end|>", add_special_tokens=False)
    assert ids == [151669 + 437, 151645] and tok.decode(ids, skip_special_tokens=True) == COORD_TOKENS[437]


def test_second_expansion_is_refused_or_a_noop(qwen3_expanded, tmp_path):
    _, result = qwen3_expanded
    with pytest.raises(CoordVocabError, match="already has 1000 of the 1000 coord tokens"):
        expand_vocab(result.dst_dir, tmp_path / "again")
    copy = expand_vocab(result.dst_dir, tmp_path / "copy", if_present="noop")
    assert not copy.added and copy.coord_ids == result.coord_ids
    assert (tmp_path / "copy" / "model.safetensors").read_bytes() == (
        result.dst_dir / "model.safetensors"
    ).read_bytes()


def test_untied_checkpoint_grows_embeddings_and_lm_head(tmp_path):
    source = create_model("small", "bundled", seed=5, out_dir=tmp_path / "src", with_coord_tokens=False)
    result = expand_vocab(source, tmp_path / "dst")
    assert result.added and not result.tied and result.coord_ids == tuple(range(1048, 2048))
    model, processor = load_model_and_processor(result.dst_dir)
    index, valid = digit_token_index(processor.tokenizer)
    for name, module in [
        ("model.language_model.embed_tokens.weight", model.get_input_embeddings()),
        ("lm_head.weight", model.get_output_embeddings()),
    ]:
        before = _embedding(source, name)
        assert before.shape[0] == 1048 and module.weight.shape[0] == 2048
        torch.testing.assert_close(module.weight.detach()[:1048], before, rtol=0, atol=0)
        torch.testing.assert_close(
            module.weight.detach()[1048:], digit_mean_rows(before, index, valid), rtol=0, atol=1e-7
        )


def test_partial_coord_vocabulary_is_an_error(tmp_path):
    tok = build_tiny_tokenizer(with_coord_tokens=False)
    model = build_model("tiny", tok, seed=0)
    tok.add_tokens([COORD_TOKENS[5]])
    model.resize_token_embeddings(len(tok))
    save_checkpoint(model, build_processor(tok), tmp_path / "src")
    with pytest.raises(CoordVocabError, match="already has 1 of the 1000"):
        expand_vocab(tmp_path / "src", tmp_path / "dst", if_present="noop")


def test_destination_checks(qwen3_expanded, tmp_path):
    _, result = qwen3_expanded
    with pytest.raises(ConfigError, match="must differ from src_dir"):
        expand_vocab(result.dst_dir, result.dst_dir)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not empty"):
        expand_vocab(result.dst_dir, tmp_path / "busy")
    with pytest.raises(ConfigError, match="if_present"):
        expand_vocab(result.dst_dir, tmp_path / "x", if_present="skip")
