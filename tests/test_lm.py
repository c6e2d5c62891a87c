"""LM stages: token layout round trips, tiny fits on a toy token language, checkpoint hand-off."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from musiclm import artifacts
from musiclm.data.shards import write_split_shards
from musiclm.data.tokens import token_sample
from musiclm.lm.module import CoarseStage, FineStage, SemanticStage
from musiclm.lm.patterns import EMPTY, DelayPattern, FlattenPattern, Vocab, make_pattern
from musiclm.train import export_model, train

QM, CM, KS, Q, C, TS = 4, 8, 16, 4, 16, 8  # MuLan levels/codes, semantic clusters, codec levels/codes, semantic frames
SMALL = dict(dim=64, depth=2, heads=4, ff_mult=2, dropout=0.0, lr=3e-3, warmup_steps=5)
SR, AR = 25.0, 50.0  # toy token rates: the codec's first level runs at twice the semantic rate
# what `make tokenize` would record in the manifest for the toy language
TOY_VOCAB = {"mulan_levels": QM, "mulan_codebook_size": CM, "semantic_levels": 1, "semantic_codebook_size": KS,
             "semantic_rate": SR, "acoustic_levels": Q, "acoustic_codebook_size": C, "acoustic_rate": AR}
SEMANTIC = dict(mulan_levels=QM, mulan_codebook_size=CM, semantic_codebook_size=KS, semantic_rate=SR)
COARSE = dict(SEMANTIC, acoustic_codebook_size=C, acoustic_rate=AR)
FINE = dict(acoustic_codebook_size=C, acoustic_levels=Q, acoustic_rate=AR)


def toy_tokens(n: int, seed: int) -> list[dict]:
    """A deterministic toy language: MuLan tokens set a semantic arithmetic sequence; the codec's first level
    follows the semantic tokens at twice the rate; each next level is a function of the previous one."""
    g = torch.Generator().manual_seed(seed)
    mulan = torch.randint(0, CM, (n, QM), generator=g)
    t = torch.arange(TS)
    semantic = (mulan[:, :1] * 2 + (mulan[:, 1:2] % 3 + 1) * t) % KS
    level0 = (semantic.repeat_interleave(2, dim=-1) + torch.arange(2 * TS) % 2) % C
    levels = [level0]
    for q in range(1, Q):
        levels.append((levels[-1] * 3 + q) % C)
    acoustic = torch.stack(levels, dim=1)
    return [{"mulan": mulan[i], "semantic": semantic[i], "acoustic": acoustic[i]} for i in range(n)]


def loaders(batch_size: int = 16) -> tuple[DataLoader, DataLoader]:
    return (
        DataLoader(toy_tokens(256, 0), batch_size=batch_size, shuffle=True),
        DataLoader(toy_tokens(32, 1), batch_size=32),
    )


def fit(module: L.LightningModule, steps: int, loaders=None) -> tuple[float, float, L.Trainer]:
    """(val loss before, val loss after, trainer) of a short fit (on the toy language unless `loaders` are given)."""
    train, val = loaders or globals()["loaders"]()
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=1,
                        val_check_interval=steps, check_val_every_n_epoch=None)
    before = trainer.validate(module, val, verbose=False)[0]["val/loss"]
    trainer.fit(module, train, val)
    after = trainer.callback_metrics["val/loss"].item()
    return before, after, trainer


def write_toy_token_shards(root, vocab: dict | None = None) -> None:
    """The toy language as token shards (docs/architecture.md schema), for the real TokenDataModule."""
    vocab = TOY_VOCAB if vocab is None else vocab
    for split, n, seed in [("train", 64, 0), ("val", 16, 1)]:
        samples = toy_tokens(n, seed)
        write_split_shards(
            root,
            split,
            list(range(n)),
            lambda i: [token_sample(f"{split}-{i}", samples[i], {"caption": "toy"})],  # noqa: B023
            items_per_shard=32,
            extra_manifest={"vocab": vocab},
        )


# -- layout -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["flatten", "delay"])
def test_pattern_round_trip(name):
    pattern = make_pattern(name, 3)
    codes = torch.randint(0, 50, (2, 3, 7))
    steps = pattern.build(codes)
    assert steps.shape == (2, pattern.num_steps(7), pattern.tokens_per_step)
    assert torch.equal(pattern.revert(steps, 7), codes)


def test_flatten_is_time_major():
    codes = torch.tensor([[[1, 2], [3, 4]]])  # levels x time
    assert FlattenPattern(2).build(codes)[0, :, 0].tolist() == [1, 3, 2, 4]
    assert FlattenPattern(2).known_steps(1) == 2


def test_delay_shifts_level_k_by_k():
    codes = torch.arange(6).view(1, 2, 3)  # level 0: 0 1 2, level 1: 3 4 5
    p = DelayPattern(2)
    steps, valid = p.build(codes)[0], p.valid(3)
    assert steps.shape == (4, 2)
    assert steps[:, 0][valid[:, 0]].tolist() == [0, 1, 2] and steps[:, 1][valid[:, 1]].tolist() == [3, 4, 5]
    assert valid.tolist() == [[True, False], [True, True], [True, True], [False, True]]
    assert p.slot_levels(1) == [1]


def test_vocab_streams_do_not_overlap():
    v = Vocab({"a": (2, 5), "b": (1, 3)})
    a = v.encode_levels("a", torch.tensor([[0, 4], [0, 4]]))
    b = v.encode("b", torch.tensor([0, 2]), 0)
    ids = torch.cat([a.flatten(), b]).tolist()
    assert min(ids) > EMPTY and max(ids) == v.size - 1 and len(set(ids)) == len(ids)


# -- tiny fits --------------------------------------------------------------------------------------------------


def test_semantic_fit_loss_falls_and_checkpoint_loads_without_config(tmp_path):
    torch.manual_seed(0)
    module = SemanticStage(**SEMANTIC, window_seconds=TS / SR, **SMALL)
    before, after, trainer = fit(module, 60)
    assert after < 0.6 * before, (before, after)
    assert {"val/ppl", "val/acc", "val/acc/level_0", "val/loss/level_0", "val/ppl/level_0"} <= set(
        trainer.callback_metrics
    )
    path = export_model(trainer, module, tmp_path / "model.ckpt")
    loaded = SemanticStage.load_from_checkpoint(path).eval()
    mulan = torch.stack([b["mulan"] for b in toy_tokens(3, 2)])
    assert torch.equal(loaded.generate(mulan, 12, temperature=0), module.eval().generate(mulan, 12, temperature=0))


@pytest.mark.parametrize("pattern", ["flatten", "delay"])
def test_coarse_fit_loss_falls(pattern):
    torch.manual_seed(0)
    module = CoarseStage(**COARSE, coarse_levels=2, pattern=pattern, window_seconds=2 * TS / AR, **SMALL)
    before, after, trainer = fit(module, 40)
    assert after < 0.7 * before, (before, after)
    assert {"val/acc/level_0", "val/acc/level_1"} <= set(trainer.callback_metrics)


def test_fine_fit_loss_falls_and_generate_keeps_coarse():
    torch.manual_seed(0)
    module = FineStage(**FINE, coarse_levels=2, window_seconds=TS / AR, **SMALL)
    before, after, trainer = fit(module, 40)
    assert after < 0.7 * before, (before, after)
    assert {"val/acc/level_2", "val/acc/level_3"} <= set(trainer.callback_metrics)
    coarse = torch.stack([b["acoustic"][:2] for b in toy_tokens(2, 3)])
    codes = module.eval().generate(coarse, seed=0)  # 2 * TS frames: two windows
    assert codes.shape == (2, Q, 2 * TS) and torch.equal(codes[:, :2], coarse)


@pytest.mark.parametrize("stage,cls", [("semantic", SemanticStage), ("coarse", CoarseStage), ("fine", FineStage)])
def test_configs_match_module_arguments(stage, cls):
    """Every config key is an init argument, no config repeats an upstream size (the token manifest gives them),
    and the demo profile builds with the windows it had in frames (paper scale is only checked, not built)."""
    import inspect

    from musiclm.config import build_stage, stage_settings

    args = set(inspect.signature(cls.__init__).parameters) - {"self"}
    paper, _ = stage_settings(stage, "paper")
    demo, _ = stage_settings(stage, "demo")
    assert set(paper) <= args and set(demo) <= args
    assert not (set(paper) | set(demo)) & set(TOY_VOCAB)
    demo_vocab = {**TOY_VOCAB, "acoustic_levels": 4}
    assert build_stage(stage, "demo", demo_vocab).window_frames == {"semantic": 100, "coarse": 200, "fine": 50}[stage]


def test_padded_frames_carry_no_loss():
    """With the tail masked as padding, the loss equals the loss of the batch cut before the padding."""
    torch.manual_seed(0)
    module = SemanticStage(**SEMANTIC, window_seconds=TS / SR, **SMALL)
    module.eval()
    batch = torch.utils.data.default_collate(toy_tokens(4, 5))
    real = TS - 3
    mask = torch.arange(TS) < real
    padded = {**batch, "semantic_mask": mask.expand(4, -1), "semantic": torch.where(mask, batch["semantic"], 7)}
    cut = {**batch, "semantic": batch["semantic"][:, :real]}

    def mean_loss(b):
        ce, _, m, _ = module.forward_loss(b)
        return ce[m.expand_as(ce)].mean()

    assert torch.allclose(mean_loss(padded), mean_loss(cut), atol=1e-5)


def test_padding_mask_follows_the_delay_pattern():
    module = FineStage(**FINE, coarse_levels=2, pattern="delay", window_seconds=2 * TS / AR, **SMALL)
    batch = torch.utils.data.default_collate(toy_tokens(2, 5))
    real = 2 * TS - 3
    batch["acoustic_mask"] = (torch.arange(2 * TS) < real).expand(2, -1)
    _, _, mask, _ = module.forward_loss(batch)
    _, time = module.pattern.layout(2 * TS)
    assert torch.equal(mask, ((time >= 0) & (time < real)).expand(2, -1, -1))


@pytest.mark.parametrize("stage,cls", [("semantic", SemanticStage), ("coarse", CoarseStage), ("fine", FineStage)])
def test_musiclm_train_on_token_shards(stage, cls, tmp_path):
    """`musiclm train STAGE` with configs/STAGE.yaml + the demo profile and the real TokenDataModule on toy token
    shards: trains, validates, exports a model.ckpt that loads without config and generates."""
    write_toy_token_shards(tmp_path / "tokens")
    run = str(tmp_path / "run")
    args = [f"--data.data_dir={tmp_path / 'tokens'}", "--data.crop_seconds=null", "--data.batch_size=8",
            "--model.dim=32", "--model.depth=1", "--model.heads=2", "--trainer.max_steps=4",
            "--trainer.val_check_interval=4"]
    train(stage, run, "demo", "cpu", args)
    module = artifacts.load_model(run, stage)
    assert isinstance(module, cls) and module.hparams.dim == 32
    batch = torch.utils.data.default_collate(toy_tokens(2, 2))
    if stage == "semantic":
        assert module.generate(batch["mulan"], 5, seed=0).shape == (2, 5)
    elif stage == "coarse":
        assert module.generate(batch["mulan"], batch["semantic"][:, :4], seed=0).shape == (2, 2, 8)
    else:
        assert module.generate(batch["acoustic"][:, :2], seed=0).shape == (2, Q, 2 * TS)


def test_lm_sizes_come_from_the_token_manifest(tmp_path):
    """`make tokenize` records the upstream vocabularies and rates; the LM stage takes them from there, and a size
    set otherwise in a config or flag is refused with the flag that fixes it."""
    write_toy_token_shards(tmp_path / "tokens", vocab={**TOY_VOCAB, "semantic_codebook_size": 512})
    args = [f"--data.data_dir={tmp_path / 'tokens'}", "--data.crop_seconds=null", "--model.dim=32", "--model.depth=1",
            "--model.heads=2", "--trainer.max_steps=1", "--trainer.limit_val_batches=0"]
    train("semantic", str(tmp_path / "run"), "demo", "cpu", args)
    module = artifacts.load_model(tmp_path / "run", "semantic")
    assert (module.hparams.semantic_codebook_size, module.hparams.semantic_rate) == (512, SR)
    with pytest.raises(SystemExit, match="--model.semantic_codebook_size=512"):
        train("semantic", str(tmp_path / "run2"), "demo", "cpu", [*args, f"--model.semantic_codebook_size={KS}"])


@pytest.mark.parametrize("kv_cache", ["preallocated", "x-transformers"])
@pytest.mark.parametrize("tokens_per_step", [1, 3])
def test_multi_step_prefill_matches_uncached_forward(tokens_per_step, kv_cache):
    """A prompt prefilled through the KV cache in one call, then chunks, then single steps: every logit equals the
    uncached forward's (x-transformers' `cache_age` once kept only the last of several new steps), with the
    preallocated cache (which grows past its first 64 free positions here) and with x-transformers' own."""
    from musiclm.lm.kv_cache import KVCache
    from musiclm.lm.model import TokenLM

    torch.manual_seed(0)
    net = TokenLM(40, [24] * tokens_per_step, dim=32, depth=2, heads=4, dropout=0.0).eval()
    net.kv_cache = kv_cache
    ids = torch.randint(3, 40, (2, 90, tokens_per_step))
    with torch.no_grad():
        full, _ = net(ids)
        logits, cache = net(ids[:, :5])
        assert isinstance(cache, KVCache) == (kv_cache == "preallocated")
        parts = [logits]
        for a, b in ((5, 11), (11, 12), (12, 16), *((i, i + 1) for i in range(16, 80)), (80, 90)):
            logits, cache = net(ids[:, a:b], cache=cache)
            assert logits.shape == (2, b - a, 24 * tokens_per_step)
            parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)
    assert cache.cache_length == 90


def test_a_stage_samples_with_its_own_top_k_unless_given_one():
    """`model.top_k` is the stage's default like its temperature: top-k 1 samples the greedy codes."""
    torch.manual_seed(0)
    module = CoarseStage(**COARSE, coarse_levels=2, window_seconds=TS / AR, top_k=1, **SMALL).eval()
    batch = torch.utils.data.default_collate(toy_tokens(2, 2))
    args = (batch["mulan"], batch["semantic"][:, :4])
    greedy = module.generate(*args, temperature=0.0)
    assert torch.equal(module.generate(*args, seed=0), greedy)
    assert not torch.equal(module.generate(*args, seed=0, top_k=16, temperature=5.0), greedy)


@pytest.mark.parametrize("attn_dropout, expected", [(None, 0.1), (0.0, 0.0)])
def test_attention_dropout_is_its_own_setting(attn_dropout, expected):
    """CPU profiles keep feed-forward dropout but none on attention (it takes CPU SDPA off its fused kernel); unset,
    attention takes `dropout`, as checkpoints written before the setting existed did."""
    from x_transformers.attend import Attend
    from x_transformers.x_transformers import FeedForward

    module = CoarseStage(**COARSE, coarse_levels=2, window_seconds=2 * TS / AR, **(SMALL | {"dropout": 0.1}),
                         attn_dropout=attn_dropout)  # fmt: skip
    attention = {m.dropout for m in module.modules() if isinstance(m, Attend)}
    feed_forward = {d.p for f in module.modules() if isinstance(f, FeedForward) for d in f.modules()
                    if isinstance(d, torch.nn.Dropout)}  # fmt: skip
    assert attention == {expected} and feed_forward == {0.1}
