"""Eval's story-mode and audio-continuation figures (`story.*`, `continuation.*` in reports/<RUN>/eval.json).

Story mode: stories of `num_segments` test captions (consecutive segments from clips whose lead instrument family
differs where the split allows), generated with the condition switching at each segment's start. A segment
*adheres* when the MuLan embedding of its audio is closer to its own prompt than to every other segment's prompt of
the same story (chance 1 / num_segments); the tagger judge (no weights shared with the chain) grades the same
segments on instrument family and drums wherever the story's segments differ in that attribute. The same figures on
real clips cut and joined at the same times are the ceiling.

Continuation: the first `prompt_seconds` of a test clip are continued to `seconds` (with its caption); the
continuation's MuLan audio embedding is compared with its own prompt's and with the other clips' prompts'
(chance), beside the same on the real clip's own continuation (ceiling) and on log-mel statistics (no model of ours).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from musiclm.audio import crop, load_audio
from musiclm.judge import Judge
from musiclm.metrics.fad import logmel_stats_embedding
from musiclm.metrics.mcc import MuLanCycleConsistency
from musiclm.pipeline import MusicLM

STORY_JUDGES = ("instrument_family", "drums")  # judges that can grade a 2-s segment


def clip_waves(clips: list[dict], sample_rate: int, length: int) -> torch.Tensor:
    """[N, length] of the clips' real audio from their start (eval's test-clip dicts carry the flac bytes)."""
    waves = [crop(load_audio(c["flac"], sample_rate), length, mode="start") for c in clips]
    return torch.stack([torch.from_numpy(w) for w in waves])


def family(clip: dict) -> str | None:
    return (clip["meta"].get("attributes") or {}).get("instrument_family")


def pick_stories(clips: list[dict], num_stories: int, num_segments: int) -> list[list[dict]]:
    """`num_stories` stories of `num_segments` clips, each clip used once, a story's families distinct where the
    clips allow (else the next clips in order)."""
    pool, stories = list(clips), []
    while len(stories) < num_stories and len(pool) >= num_segments:
        story = [pool.pop(0)]
        for _ in range(num_segments - 1):
            seen = {family(c) for c in story}
            i = next((i for i, c in enumerate(pool) if family(c) not in seen), 0)
            story.append(pool.pop(i))
        stories.append(story)
    return stories


def own_prompt_closest(audio: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """audio, text `[S, K, D]` (segment k of story s, its prompt) -> `[S, K]`: segment k's audio is more similar
    to prompt k than to every other prompt of its story."""
    sim = F.normalize(audio, dim=-1) @ F.normalize(text, dim=-1).transpose(1, 2)  # [S, K(audio), K(text)]
    own = sim.diagonal(dim1=1, dim2=2)
    others = sim.masked_fill(torch.eye(sim.shape[-1], dtype=torch.bool), float("-inf")).amax(-1)
    return own > others


def judge_adherence(judge: Judge, preds: list[list], attrs: list[list[dict]]) -> tuple[int, int]:
    """(hits, graded) over segments whose target differs from another segment's of the same story: a hit matches
    its own target and no differing one."""
    hits = graded = 0
    for story_preds, story_attrs in zip(preds, attrs, strict=True):
        targets = [judge.target(a) for a in story_attrs]
        for k, (pred, target) in enumerate(zip(story_preds, targets, strict=True)):
            rivals = [t for j, t in enumerate(targets) if j != k and t is not None and t != target]
            if target is None or not rivals:
                continue
            graded += 1
            hits += judge.matches(pred, target) and not any(judge.matches(pred, t) for t in rivals)
    return hits, graded


def segment_cuts(starts: list[float], semantic_rate: float, sample_rate: int, total: int) -> list[tuple[int, int]]:
    """Sample spans of the segments, starting where generation switched (on a semantic frame), all as long as the
    shortest so that they embed as one batch."""
    bounds = [round(round(t * semantic_rate) / semantic_rate * sample_rate) for t in starts] + [total]
    length = min(b - a for a, b in zip(bounds, bounds[1:], strict=False))
    return [(a, a + length) for a in bounds[:-1]]


@torch.inference_mode()
def evaluate_story(lm: MusicLM, clips: list[dict], judges: list[Judge], seconds: float, num_stories: int,
                   num_segments: int, batch_size: int, cfg_scale: float, seed: int) -> dict[str, float]:  # fmt: skip
    t0 = time.perf_counter()
    stories = pick_stories(clips, num_stories, num_segments)
    if len(stories) < 2 or num_segments < 2:
        print(f"story: {len(stories)} stories of {num_segments} segments from {len(clips)} test clips: no story.* keys")
        return {}
    sr = lm.sample_rate
    starts = [round(k * seconds / num_segments, 3) for k in range(num_segments)]
    waves = []
    for b in range(0, len(stories), batch_size):
        batch = stories[b : b + batch_size]
        story = [(t, [s[k]["caption"] for s in batch]) for k, t in enumerate(starts)]
        waves.append(lm.generate(None, seconds=seconds, cfg_scale=cfg_scale, seed=seed + b, progress=False,
                                 story=story).waves)  # fmt: skip
    generated = torch.cat(waves)
    cuts = segment_cuts(starts, lm.coarse.hparams.semantic_rate, sr, generated.shape[-1])
    # real "stories": segment k cut from clip k at the same times, joined
    real = torch.stack([torch.cat([w[a:e] for w, (a, e) in zip(clip_waves(s, sr, generated.shape[-1]), cuts,
                                                                 strict=True)]) for s in stories])  # fmt: skip
    texts = lm.mulan.embed_text([c["caption"] for s in stories for c in s]).cpu().view(len(stories), num_segments, -1)
    report: dict[str, float] = {}
    for name, audio in (("", generated), ("_real", real)):
        pieces = torch.cat([audio[:, a:e] for a, e in cuts])  # segment-major: [K * S, T_k]
        emb = lm.embed_audio(pieces).view(num_segments, len(stories), -1).transpose(0, 1)
        report[f"story.segment_adherence{name}"] = float(own_prompt_closest(emb, texts).float().mean())
        by_story = [[audio[i, a:e] for a, e in cuts] for i in range(len(stories))]
        attrs = [[c["meta"].get("attributes") or {} for c in s] for s in stories]
        for judge in (j for j in judges if j.attribute in STORY_JUDGES):
            preds = [judge.predict(torch.stack(segs), sr) for segs in by_story]
            hits, graded = judge_adherence(judge, preds, attrs)
            if graded:
                report[f"story.judge.{judge.attribute}.segment_adherence{name}"] = hits / graded
                report[f"story.judge.{judge.attribute}.num_graded"] = graded
    report["story.segment_adherence_chance"] = 1 / num_segments
    report["story.num_segments"] = num_segments
    report["story.num_stories"] = len(stories)
    print(f"story eval: {len(stories)} stories x {num_segments} segments in {time.perf_counter() - t0:.1f} s")
    return report


@torch.inference_mode()
def evaluate_continuation(lm: MusicLM, clips: list[dict], seconds: float, prompt_seconds: float, batch_size: int,
                          cfg_scale: float, seed: int) -> dict[str, float]:  # fmt: skip
    t0 = time.perf_counter()
    if len(clips) < 2:
        print(f"continuation: {len(clips)} test clips: no continuation.* keys")
        return {}
    sr = lm.sample_rate
    real = clip_waves(clips, sr, round(seconds * sr))
    p = round(prompt_seconds * sr)
    out = [lm.generate([c["caption"] for c in clips[b : b + batch_size]], seconds=seconds, cfg_scale=cfg_scale,
                       seed=seed + b, progress=False, prompt_audio=real[b : b + batch_size, :p])
           for b in range(0, len(clips), batch_size)]  # fmt: skip
    generated = torch.cat([o.waves for o in out])
    cut = out[0].settings["prompt_seconds"]  # the prompt's whole semantic frames
    c = round(cut * sr)  # where the prompt's tokens end in the output
    prompt_emb = lm.embed_audio(real[:, :c])
    report: dict[str, float] = {}
    for name, audio in (("", generated), ("_real", real)):
        metric = MuLanCycleConsistency()
        metric.update(prompt_emb, lm.embed_audio(audio[:, c:]))
        m = metric.compute()
        report[f"continuation.prompt_similarity{name}"] = float(m["mcc"])
        if not name:
            report["continuation.prompt_similarity_chance"] = float(m["mcc"] - m["mcc_margin"])
            report["continuation.prompt_similarity_p"] = float(m["mcc_margin_p"])
    # the same on log-mel statistics, standardised over all clips so no band dominates the cosine
    stats = torch.cat([logmel_stats_embedding(real[:, :c], sr), logmel_stats_embedding(generated[:, c:], sr)])
    stats = (stats - stats.mean(0)) / (stats.std(0) + 1e-6)
    sim = F.normalize(stats[: len(clips)], dim=-1) @ F.normalize(stats[len(clips) :], dim=-1).T
    n = len(clips)
    report["continuation.logmel_similarity"] = float(sim.diagonal().mean())
    report["continuation.logmel_similarity_chance"] = float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))
    report["continuation.prompt_seconds"] = cut
    report["continuation.num_prompts"] = n
    print(f"continuation eval: {n} prompts in {time.perf_counter() - t0:.1f} s")
    return report
