"""The torch model: real weights, trainable groups, the paper config, save/load."""

import numpy as np
import pytest
import skimage.data
import torch

from cpllm_plugin import errors
from cpllm_plugin import preprocess as pp
from cpllm_plugin.configs import get_config
from cpllm_plugin.model import io


def imagenet_top(net, encoder, img, k=3):
    """Top-k ImageNet classes of the encoder's own backbone on a 224x224 resize of img."""
    x = torch.from_numpy(pp.resize(img, 224, 224).transpose(2, 0, 1)[None])
    with torch.no_grad():
        logits = net((x - encoder.mean) / encoder.std)
    return logits.topk(k).indices[0].tolist()


def test_lite_loads_real_efficientnet_lite0_weights(lite_scorer):
    high, low = lite_scorer.scorer.high, lite_scorer.scorer.low
    # ImageNet: 281-285 are domestic cats, 967 espresso. Random weights would not find them.
    for enc in (high, low):
        assert imagenet_top(enc.net, enc, skimage.data.chelsea())[0] in range(281, 286)
        assert imagenet_top(enc.net, enc, skimage.data.coffee())[0] == 967


def test_lite_shapes(lite_scorer):
    frames = np.zeros((2, 1080, 1920, 3), np.uint8)
    x = pp.prepare(frames, lite_scorer.config)
    s = lite_scorer.scorer
    with torch.no_grad():
        u, v = s.embed(s.context(torch.from_numpy(x.views)), torch.from_numpy(x.patches))
        scores = s.head_score(u, v)
    assert u.shape == (2, 14 * 14, 640) and v.shape == (2, 7 * 7, 640)
    assert scores.shape == (2,) and ((scores > 1) & (scores < 5)).all()
    # LayerNorm after pooling: zero mean, unit variance per token
    assert v.mean(-1).abs().max() < 1e-4


def test_exactly_the_paper_groups_train(tiny_model):
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in tiny_model.named_parameters() if not p.requires_grad}
    assert not any(n.startswith("scorer.high.") for n in trainable)
    assert all(n in trainable for n, _ in tiny_model.named_parameters()
               if n.startswith(("scorer.low.", "scorer.high_proj.", "scorer.low_proj.",
                                "scorer.low_norm.", "scorer.head.")))
    dec = {n for n in trainable if n.startswith("decoder.")}
    layers = tiny_model.decoder.get_base_model().config.num_hidden_layers
    assert len(dec) == layers * 3 * 2  # lora_A and lora_B on q, k, v of every layer
    for n in dec:
        assert "lora_" in n and any(f"{p}_proj" in n for p in "qkv"), n
    assert any(n.startswith("decoder.") and "o_proj" in n for n in frozen)
    assert any(n.startswith("scorer.high.") for n in frozen)
    assert trainable | frozen == {n for n, _ in tiny_model.named_parameters()}


def test_one_step_moves_trainable_only(tiny_model):
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    opt = torch.optim.Adam([p for p in tiny_model.parameters() if p.requires_grad], lr=1e-2)
    s = tiny_model.scorer
    s.train()
    views = torch.rand(2, 3, 448, 448)
    patches = torch.rand(2, 8, 3, 224, 224)
    u, v = s.embed(s.context(views), patches)
    vis = torch.cat([u, v], 1)
    from cpllm_plugin.model.decoder import text_loss

    embeds, valid = tiny_model.prefix(vis[:1], vis[1:], "which is better?")
    target = torch.tensor([[5, 6, 7]])
    loss = s.head_score(u, v).sum() + text_loss(
        tiny_model.decoder, embeds, valid, target, tiny_model.tokenizer.pad_token_id)
    loss.backward()
    opt.step()
    moved = {n for n, p in tiny_model.named_parameters() if not torch.equal(p, before[n])}
    assert not any(n.startswith("scorer.high.") for n in moved)
    assert any(n.startswith("scorer.low.") for n in moved)
    assert any("lora_B" in n for n in moved)
    assert all(("lora_" in n) for n in moved if n.startswith("decoder."))
    s.eval()


def test_single_input_masks_out_the_copy(tiny_model):
    vis = torch.randn(1, 10, tiny_model.scorer.high_proj.out_features)
    embeds, valid = tiny_model.prefix(vis, None, "describe")
    assert valid[0, 1:11].all() and not valid[0, 11:21].any() and valid[0, 21:].all()
    torch.testing.assert_close(embeds[:, 11:21], vis)  # the duplicate, masked
    _, valid2 = tiny_model.prefix(vis, vis.flip(1), "describe")
    assert valid2.all()
    # whatever sits in the masked copy cannot change the text
    from cpllm_plugin.model.decoder import generate

    tok = tiny_model.tokenizer
    kw = dict(max_new_tokens=6, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    junk = embeds.clone()
    junk[:, 11:21] = torch.randn_like(junk[:, 11:21]) * 10
    with torch.no_grad():
        a = generate(tiny_model.decoder, embeds, valid, **kw)
        b = generate(tiny_model.decoder, junk, valid, **kw)
    assert torch.equal(a, b)


def test_prompts_per_sample_pad_without_changing_any_row(tiny_model):
    """A batch of prompts of different lengths gives each row the logits it gets alone."""
    from cpllm_plugin.model import decoder as dec
    from cpllm_plugin.model.decoder import text_logits

    # Gemma 3's local layers count their window in sequence positions, padding included;
    # a window wider than the sequence (as 270M's 512 is for one variant) leaves them alone.
    dec._text_config(tiny_model.decoder).sliding_window = 1000
    torch.manual_seed(0)
    vis = torch.randn(2, 10, tiny_model.scorer.high_proj.out_features)
    prompts = ["describe", "describe this video in many more words, please"]
    embeds, valid = tiny_model.prefix(vis, None, prompts)
    tok = tiny_model.tokenizer
    lengths = [len(tok(p + "\n", add_special_tokens=False).input_ids) for p in prompts]
    assert (valid.sum(1) == 11 + torch.tensor(lengths)).all()  # bos + 10 visual + prompt
    target = torch.tensor([[5, 6, 7, 8]] * 2)
    with torch.no_grad():
        both = text_logits(tiny_model.decoder, embeds, valid, target, tok.pad_token_id)
        for r in range(2):
            e, v = tiny_model.prefix(vis[r:r + 1], None, prompts[r])
            alone = text_logits(tiny_model.decoder, e, v, target[:1], tok.pad_token_id)
            torch.testing.assert_close(both[r:r + 1], alone, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="1 prompts for 2 samples"):
        tiny_model.prefix(vis, None, prompts[:1])


def test_describe_prompt_carries_the_head_score():
    from dataclasses import replace

    from cpllm_plugin.configs import DESCRIBE_PROMPT, SCORE_PROMPT

    assert get_config("cpllm-lite").score_prompt == SCORE_PROMPT
    cfg = replace(get_config("cpllm-tiny"), score_prompt=SCORE_PROMPT)
    m = io.build(cfg)
    said = m.describe_prompt(3.456)
    assert said == DESCRIBE_PROMPT + " The quality score is 3.46 out of 5 (fair)."
    assert m.describe_prompt(4.5).endswith("4.50 out of 5 (excellent).")
    with pytest.raises(ValueError, match="pass score="):
        m.describe_prompt(None)
    calls = []
    m.generate_text = lambda *a, **kw: calls.append(kw["prompt"]) or ["x"]
    m.describe_text(torch.zeros(1, 4, 8), 2.0)
    assert calls == [DESCRIBE_PROMPT + " The quality score is 2.00 out of 5 (poor)."]
    # an older score prompt without the band's word still formats
    old = replace(cfg, score_prompt="The quality score is {score:.2f} out of 5.")
    assert io.build(old).describe_prompt(1.0).endswith("1.00 out of 5.")
    # a model without a score prompt keeps the paper's prompt and needs no score
    assert io.build("cpllm-tiny").describe_prompt(None) == DESCRIBE_PROMPT


def test_describe_prompt_states_the_facts():
    from dataclasses import replace

    from cpllm_plugin.configs import DESCRIBE_PROMPT, FACTS_PROMPT, SCORE_PROMPT
    from cpllm_plugin.model.cpllm import Facts

    assert get_config("cpllm-lite").facts_prompt == ""  # measured, not shipped
    cfg = replace(get_config("cpllm-tiny"), score_prompt=SCORE_PROMPT, facts_prompt=FACTS_PROMPT)
    m = io.build(cfg)
    facts = Facts("720p landscape", ("espresso", "chocolate syrup"))
    assert m.describe_prompt(4.2, facts) == DESCRIBE_PROMPT + (
        " The quality score is 4.20 out of 5 (good). The frames are 720p landscape; an image "
        "classifier sees an espresso or a chocolate syrup.")
    with pytest.raises(ValueError, match="pass facts="):
        m.describe_prompt(4.2)
    # the tiny model's random high encoder has no ImageNet head: format only
    views = torch.rand(1, 3, cfg.view_size, cfg.view_size)
    patches = torch.rand(1, cfg.num_patches, 3, cfg.patch_size, cfg.patch_size)
    visual, got = m.describe_inputs(views, patches, (1080, 1920))
    torch.testing.assert_close(visual, m.visual_tokens(views, patches))
    assert got == Facts("1080p portrait", ())
    assert m.describe_prompt(1.0, got).endswith("; an image classifier sees nothing it can name.")
    assert m.describe_inputs(views, patches)[1] is None
    calls = []
    m.generate_text = lambda *a, **kw: calls.append(kw["prompt"]) or ["x"]
    m.describe_text(visual, 2.0, facts=facts)
    assert calls[0].endswith("The frames are 720p landscape; an image classifier sees an "
                             "espresso or a chocolate syrup.")


def test_facts_name_what_the_frozen_encoder_sees():
    """cpllm-lite's high-level encoder keeps its ImageNet head: on its 448 view of a photo
    of a coffee cup the facts name an espresso."""
    m = io.build("cpllm-lite", with_decoder=False).eval()
    frame = skimage.data.coffee()
    x = pp.prepare(frame[None], m.config)
    _, facts = m.describe_inputs(torch.from_numpy(x.views), torch.from_numpy(x.patches),
                                 (frame.shape[1], frame.shape[0]))
    assert facts.format == "low-resolution landscape"  # 600x400
    assert facts.labels[0] == "espresso" and len(facts.labels) == 2


def test_frame_format_words():
    from cpllm_plugin.configs import frame_format

    assert frame_format(1920, 1080) == "1080p landscape"
    assert frame_format(1080, 1920) == "1080p portrait"
    assert frame_format(1280, 720) == "720p landscape"
    assert frame_format(640, 480) == "standard-definition landscape"
    assert frame_format(160, 120) == "low-resolution landscape"
    assert frame_format(3840, 2160) == "4K landscape"
    assert frame_format(512, 512) == "standard-definition square"


def test_listed_imagenet_names():
    from cpllm_plugin.model.imagenet import listed

    assert listed(["espresso"]) == "an espresso"
    assert listed(["pier", "boathouse"]) == "a pier or a boathouse"
    assert listed(["a", "b", "ice"]) == "an a, a b or an ice"
    assert listed([]) == "nothing it can name"


def test_paper_config_builds_at_reduced_depth_and_runs_forward():
    cfg = get_config("cpllm-paper")
    cfg.high.overrides = {"num_hidden_layers": 1}
    cfg.low.overrides = {"num_spatial_layers": 1, "num_temporal_layers": 1}
    cfg.decoder_overrides = {"num_hidden_layers": 1, "vocab_size": 512, "intermediate_size": 512}
    model = io.build(cfg).eval()
    s = model.scorer
    assert s.high.net.config.hidden_size == 1152 and s.high.net.config.patch_size == 14
    assert s.low.net.config.hidden_size == 768
    assert model.decoder.get_base_model().config.hidden_size == 2048
    x = pp.prepare(np.zeros((1, 720, 1280, 3), np.uint8), cfg)
    with torch.no_grad():
        u, v = s.embed(s.context(torch.from_numpy(x.views)), torch.from_numpy(x.patches))
        assert u.shape == (1, 32 * 32, 2048) and v.shape == (1, 14 * 14, 2048)
        score = s.head_score(u, v)
        assert 1 < float(score) < 5
        text = model.generate_text(torch.cat([u, v], 1), max_new_tokens=2)
    assert isinstance(text[0], str)


def test_save_load_round_trip(tiny_model, tmp_path):
    path = io.save(tiny_model, tmp_path / "m")
    assert {p.name for p in path.iterdir()} >= {"config.json", "model.safetensors", "adapter"}
    assert not list(path.rglob("*.bin")) and not list(path.rglob("*.pt"))  # no pickle
    back = io.load(path)
    assert io.model_id(back) == io.model_id(tiny_model)
    views, patches = torch.rand(2, 3, 448, 448), torch.rand(2, 8, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(back.scorer(views, patches), tiny_model.scorer(views, patches))
    lora = {n: p for n, p in tiny_model.named_parameters() if "lora_" in n}
    for n, p in back.named_parameters():
        if "lora_" in n:
            torch.testing.assert_close(p, lora[n])


def corrupt(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,words", [
    (lambda d: (d / "model.safetensors").unlink(), ["missing file", "model.safetensors"]),
    (lambda d: corrupt(d / "model.safetensors"), ["sha256", "corrupt"]),
    (lambda d: corrupt(d / "adapter" / "adapter_model.safetensors"), ["adapter", "sha256"]),
    (lambda d: (d / "config.json").write_text("{nope"), ["valid JSON"]),
    (lambda d: (d / "config.json").unlink(), ["no config.json"]),
])
def test_damaged_model_dirs_are_refused(tiny_model, tmp_path, damage, words):
    path = io.save(tiny_model, tmp_path / "m")
    damage(path)
    with pytest.raises(errors.ModelFileError) as info:
        io.load(path)
    for w in words:
        assert w in str(info.value)
    assert "Fix:" in str(info.value)


def test_unknown_backbone_suggests():
    cfg = get_config("cpllm-tiny")
    cfg.low.backbone = "efficientnet_lite"
    with pytest.raises(errors.UnknownNameError, match="Did you mean 'efficientnet_lite0'"):
        io.build(cfg, with_decoder=False)


def test_missing_extra_names_the_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(errors.MissingExtraError, match=r"pip install 'cpllm-plugin\[torch\]'"):
        io.build("cpllm-lite", with_decoder=False)
