"""Presets, create_model/load_model_and_processor, training step, generation with coord tokens."""

from __future__ import annotations

import json
import shutil

import attrs
import numpy as np
import pytest
import torch
from PIL import Image

from coordexp.core.errors import ConfigError
from coordexp.train.data.prompts import PromptPair
from coordexp.train.data.render import build_messages
from coordexp.train.models import (
    PRESETS,
    ModelPreset,
    build_model,
    build_tiny_tokenizer,
    coord_vocab_for,
    create_model,
    get_preset,
    load_model_and_processor,
    save_checkpoint,
)
from coordexp.train.models.embedding_init import (
    digit_mean_rows,
    digit_token_index,
    init_coord_rows,
    sincos_grid,
    sincos_rows,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return create_model("tiny", "bundled", seed=7, out_dir=tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def loaded(checkpoint):
    return load_model_and_processor(checkpoint)


def _batch(processor, sizes, answer=None):
    texts, images = [], []
    for i, (height, width) in enumerate(sizes):
        messages = build_messages(PromptPair("You are a detector.", f"Detect objects {i}."), "x.png", answer)
        texts.append(
            processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=answer is None)
        )
        images.append(
            Image.fromarray(np.random.default_rng(i).integers(0, 256, (height, width, 3), dtype=np.uint8))
        )
    return processor(text=texts, images=images, padding=True, return_tensors="pt")


def test_checkpoint_layout_and_config(checkpoint, loaded):
    names = {p.name for p in checkpoint.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "processor_config.json",
    } <= names
    model, processor = loaded
    tok = processor.tokenizer
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "qwen3_vl" and config["text_config"]["vocab_size"] == len(tok) == 2048
    assert config["image_token_id"] == tok.convert_tokens_to_ids("<|image_pad|>")
    assert config["vision_start_token_id"] == tok.convert_tokens_to_ids("<|vision_start|>")
    assert model.generation_config.eos_token_id == [tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id]
    assert model.lm_head.weight is model.get_input_embeddings().weight  # tiny is tied
    assert model.config.text_config.hidden_size == 128 and model.config.vision_config.depth == 2


def test_small_preset_is_untied():
    model = build_model("small", build_tiny_tokenizer(), seed=0)
    assert model.lm_head.weight is not model.get_input_embeddings().weight
    assert model.config.text_config.num_hidden_layers == 4 and model.config.vision_config.hidden_size == 128


def test_preset_init_scale_and_rope_theta_reach_the_model():
    tiny = get_preset("tiny")
    model = build_model(tiny, build_tiny_tokenizer(), seed=0)
    text, vision = model.config.text_config, model.config.vision_config
    assert text.initializer_range == vision.initializer_range == tiny.initializer_range == 0.1
    assert text.rope_parameters["rope_theta"] == tiny.rope_theta == 10_000.0
    for weight in (
        model.model.language_model.layers[0].self_attn.q_proj.weight,
        model.model.language_model.layers[1].mlp.down_proj.weight,
        model.model.visual.blocks[0].attn.qkv.weight,
        model.model.visual.merger.linear_fc1.weight,
    ):
        assert abs(float(weight.detach().std()) - 0.1) < 0.01


def test_build_is_deterministic_in_the_seed():
    tok = build_tiny_tokenizer()
    state_a, state_b = (
        build_model("tiny", tok, seed=1).state_dict(),
        build_model("tiny", tok, seed=1).state_dict(),
    )
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    state_c = build_model("tiny", tok, seed=2).state_dict()
    assert not torch.equal(state_a["lm_head.weight"], state_c["lm_head.weight"])


def test_random_model_coord_rows_are_smooth_sincos(loaded):
    model, processor = loaded
    weight = model.get_input_embeddings().weight.detach()
    ids = torch.tensor(coord_vocab_for(processor.tokenizer).ids)
    rows = weight[ids]
    others = torch.ones(weight.shape[0], dtype=torch.bool)
    others[ids] = False
    rms = weight[others].pow(2).mean(dim=1).sqrt().mean()
    torch.testing.assert_close(rows, sincos_rows(1000, weight.shape[1]) * rms, rtol=1e-5, atol=1e-6)
    # Smooth in the bin index: neighbours are far more similar than distant bins.
    cos = torch.nn.functional.cosine_similarity
    assert cos(rows[500], rows[501], dim=0) > 0.95 > cos(rows[500], rows[900], dim=0)


def test_random_model_vision_positions_are_sincos(loaded):
    model, _ = loaded
    table = model.model.visual.pos_embed.weight.detach()
    side = int(table.shape[0] ** 0.5)
    expected = sincos_grid(side, table.shape[1])
    scale = table.pow(2).mean().sqrt()
    torch.testing.assert_close(table / scale, expected, rtol=1e-4, atol=1e-5)


def test_digit_mean_rule_is_what_expand_vocab_uses(loaded):
    model, processor = loaded
    weight = model.get_input_embeddings().weight.detach().clone()
    index, valid = digit_token_index(processor.tokenizer)
    expected = digit_mean_rows(weight, index, valid)
    ids = coord_vocab_for(processor.tokenizer).ids
    probe = torch.nn.Embedding.from_pretrained(weight.clone(), freeze=False)

    class _Holder:
        def get_input_embeddings(self):
            return probe

        def get_output_embeddings(self):
            return None

    init_coord_rows(_Holder(), processor.tokenizer, ids, mode="digits")
    torch.testing.assert_close(probe.weight[torch.tensor(ids)].detach(), expected, rtol=0, atol=1e-7)


def test_forward_backward_with_images(checkpoint):
    model, processor = load_model_and_processor(checkpoint)
    model.train()
    answer = (
        '{"objects": [{"desc": "red circle", "bbox_2d": '
        "[<|coord_1|>, <|coord_2|>, <|coord_300|>, <|coord_400|>]}]}"
    )
    batch = _batch(processor, [(64, 64), (32, 96)], answer=answer)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    out = model(**batch, labels=labels)
    assert out.logits.shape == (*batch["input_ids"].shape, 2048)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert grads["model.visual.patch_embed.proj.weight"].abs().sum() > 0
    assert grads["model.language_model.embed_tokens.weight"].abs().sum() > 0


def test_greedy_generation_of_coord_tokens_survives_decoding(loaded):
    model, processor = loaded
    tok = processor.tokenizer
    batch = _batch(processor, [(64, 64)])
    coord_ids = list(coord_vocab_for(tok).ids)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    prompt_len = batch["input_ids"].shape[1]

    def allowed(_batch_id, ids):
        return coord_ids if ids.shape[0] - prompt_len < 4 else [im_end]

    out = model.generate(**batch, max_new_tokens=8, do_sample=False, prefix_allowed_tokens_fn=allowed)
    new = out[0, prompt_len:].tolist()
    assert len(new) == 5 and new[-1] == im_end and all(i in set(coord_ids) for i in new[:4])
    coords = "".join(tok.convert_ids_to_tokens(new[:4]))
    assert coords.count("<|coord_") == 4
    assert tok.decode(new, skip_special_tokens=False) == coords + "<|im_end|>"
    assert tok.decode(new, skip_special_tokens=True) == coords


def test_save_load_round_trip_gives_identical_greedy_output(loaded, tmp_path):
    model, processor = loaded
    batch = _batch(processor, [(64, 96)])
    first = model.generate(**batch, max_new_tokens=12, do_sample=False)
    save_checkpoint(model, processor, tmp_path / "again")
    model2, processor2 = load_model_and_processor(tmp_path / "again")
    batch2 = _batch(processor2, [(64, 96)])
    assert torch.equal(batch["input_ids"], batch2["input_ids"])
    assert torch.equal(first, model2.generate(**batch2, max_new_tokens=12, do_sample=False))


def test_load_options_and_errors(checkpoint, tmp_path):
    model, _ = load_model_and_processor(checkpoint, dtype=torch.bfloat16, attn_implementation="eager")
    assert model.dtype == torch.bfloat16 and model.config._attn_implementation == "eager"
    with pytest.raises(ConfigError, match="not a checkpoint directory"):
        load_model_and_processor(tmp_path)
    with pytest.raises(ConfigError, match=r"model\.attn_implementation"):
        load_model_and_processor(checkpoint, attn_implementation="flex_attention")
    with pytest.raises(ConfigError, match="is not empty"):
        create_model("tiny", "bundled", seed=0, out_dir=checkpoint)
    with pytest.raises(ConfigError, match="unknown tokenizer kind"):
        create_model("tiny", "gpt2", seed=0, out_dir=tmp_path / "x")


def test_presets_enforce_qwen3vl_constraints():
    assert set(PRESETS) == {"tiny", "tiny3", "small"}
    assert attrs.evolve(get_preset("tiny3"), name="tiny", text_layers=2) == get_preset("tiny")
    base = get_preset("tiny")
    fields = {a.name: getattr(base, a.name) for a in base.__attrs_attrs__}
    for change, match in [
        ({"mrope_section": (6, 5, 4)}, "mrope_section"),
        ({"deepstack_visual_indexes": (2,)}, "deepstack_visual_indexes"),
        ({"num_position_embeddings": 200}, "perfect square"),
        ({"text_kv_heads": 3}, "multiple of text_kv_heads"),
        ({"text_layers": 0}, "positive int"),
        ({"initializer_range": 0.0}, "positive finite number"),
        ({"initializer_range": float("nan")}, "positive finite number"),
    ]:
        with pytest.raises(ConfigError, match=match):
            ModelPreset(**{**fields, **change})
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("huge")


def test_loads_a_stock_qwen3vl_layout(checkpoint, tmp_path):
    """Hub-style directory: preprocessor_config.json + chat_template.json, no processor_config.json."""
    stock = tmp_path / "stock"
    shutil.copytree(checkpoint, stock)
    (stock / "processor_config.json").unlink()
    template = (stock / "chat_template.jinja").read_text(encoding="utf-8")
    (stock / "chat_template.jinja").unlink()
    config = json.loads((stock / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("chat_template", None)
    (stock / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (stock / "chat_template.json").write_text(json.dumps({"chat_template": template}), encoding="utf-8")
    (stock / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "size": {"longest_edge": 16384, "shortest_edge": 1024},
                "patch_size": 16,
                "temporal_patch_size": 2,
                "merge_size": 2,
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
                "processor_class": "Qwen3VLProcessor",
                "image_processor_type": "Qwen2VLImageProcessorFast",
            }
        ),
        encoding="utf-8",
    )
    model, processor = load_model_and_processor(stock)
    assert processor.chat_template == template and processor.tokenizer.chat_template == template
    assert (processor.min_pixels, processor.max_pixels) == (1024, 16384)
    batch = _batch(processor, [(64, 64)])
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4]]
    with torch.no_grad():
        assert torch.isfinite(model(**batch).logits).all()
