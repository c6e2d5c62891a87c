# MusicLM training stack. Targets are files: make rebuilds only what is missing or older than its inputs.
#   make demo                      whole chain on the synthetic corpus (demo profile, 2 CPU cores)
#   make test                      the test suite
#   make train-mulan RUN=x PROFILE=paper TRAINER=ddp DEVICES=8 ARGS="--trainer.max_steps=100"
SHELL := /bin/bash
.DELETE_ON_ERROR:
.SUFFIXES:

# a run is named after its profile unless told otherwise, so `make demo PROFILE=long` never mixes with the demo run
RUN ?= $(PROFILE)
PROFILE ?= demo
# the long profile trains on 3x the demo's clips (its coarse LM overfit 1,200), in a corpus folder of its own; clip i
# of synth-long is clip i of synth, split alike, so the demo run can be judged on synth-long's held-out clips too
ifeq ($(PROFILE),long)
DATASET ?= synth-long
SYNTH_CLIPS ?= 3600
endif
DATASET ?= synth
# several datasets train as one: DATASET=synth+mine; DATASET_WEIGHTS=1,3 samples them 1:3 (default: by clip count)
DATASET_WEIGHTS ?=
TRAINER ?= cpu
DEVICES ?=
NODES ?=
ACCELERATOR ?=
ARGS ?=
TEXT ?=
# an audio file whose melody `make generate` follows (a run trained with melody conditioning: README)
MELODY ?=
# with MELODY: guide the melody with its own scale (empty: generate's one --cfg-scale guides text and melody together)
MELODY_CFG ?=
# make generate: a recording to continue, or a story file (`seconds<TAB>prompt` lines) instead of TEXT
PROMPT_AUDIO ?=
STORY ?=
SECONDS ?= 10
NUM_PROMPTS ?= 32
# synthetic corpus size (the demo default renders in about a minute on 2 cores)
SYNTH_CLIPS ?= 1200
SYNTH_SECONDS ?= 8
# share of clips with a negation or temporal-order prompt (0: the corpus is what it was before prompt kinds)
PROMPT_KINDS_RATE ?= 0
# 1: each clip also rendered as its melody's pairs (another instrument, arrangement, octave, solo, hummed)
MELODY_PAIRS ?= 0
# the melody tokens' producer. learned: the melody embedding trained on melody pairs, its residual VQ fitted at the
# end of training (MusicLM's; a column per 3 s). pitch: each frame's strongest pitch class, 12.5 a second, nothing
# to train (melody/pitch.py); the demo's, because only these carry the notes through the chain (docs/measurements.md)
MELODY_TOKENS ?= $(if $(filter demo,$(PROFILE)),pitch,learned)
# the melody-pair corpus (data synth --melody-pairs) of MELODY_CLIPS melodies: the learned embedding trains on its
# train split, and eval's melody.* read its test split. Pitch tokens train nothing, so then every melody is a test one
ifeq ($(MELODY_TOKENS),pitch)
MELODY_DATASET ?= synth-melody-test
MELODY_CLIPS ?= 32
MELODY_SPLITS ?= --val-fraction 0 --test-fraction 1
endif
MELODY_DATASET ?= synth-melody
MELODY_CLIPS ?= 300
MELODY_SPLITS ?=
# the LM stages that condition on melody tokens too: coarse, semantic or "semantic coarse" (needs train-melody;
# tokenize then writes them). coarse is where a melody can steer: the demo's semantic tokens barely keep notes.
# The demo profile's coarse stage follows a melody; MELODY_COND= leaves it text-only
MELODY_COND ?= $(if $(filter demo,$(PROFILE)),coarse)
ifneq ($(filter-out semantic coarse,$(MELODY_COND)),)
$(error MELODY_COND names LM stages: coarse, semantic or "semantic coarse" (got "$(MELODY_COND)"))
endif
WORKERS ?= 2
# prompts eval generates at once. The demo's small LMs sample 32 together much faster than 8 at a time; 8 keeps a
# paper-size LM's KV cache (x2-3 with guidance) in memory. The batch sets the sampling seeds (seed + first prompt)
EVAL_BATCH ?= $(if $(filter demo,$(PROFILE)),32,8)

# ROOT lets the chain run in another directory: make -f /path/to/Makefile -C /scratch demo
ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
MUSICLM := $(PY) -m musiclm.cli
STAMP := $(VENV)/.installed
SHARDS := data/shards/$(DATASET)
SHARD_MANIFESTS := $(foreach d,$(subst +, ,$(DATASET)),data/shards/$(d)/train/manifest.json)
TOKENS := data/tokens/$(RUN)
R := runs/$(RUN)
# the LM stages' trainer precision (32-true, bf16-mixed); unset: the trainer config's. `make demo` measures the CPU
# and sets it to bf16-mixed only where bf16 matmul is faster than fp32 here.
LM_PRECISION ?=
STAGE_FLAGS = --run $(RUN) --profile $(PROFILE) --trainer $(TRAINER) \
  $(if $(DEVICES),--trainer.devices=$(DEVICES)) $(if $(NODES),--trainer.num_nodes=$(NODES)) \
  $(if $(ACCELERATOR),--trainer.accelerator=$(ACCELERATOR))
WEIGHT_FLAGS = $(if $(DATASET_WEIGHTS),--data.weights=[$(DATASET_WEIGHTS)])
TRAIN_FLAGS = $(STAGE_FLAGS) $(WEIGHT_FLAGS) $(ARGS)
# a local pretrained folder a stage imports instead of training (musiclm import; README "Pretrained components")
CODEC_FROM ?=
CODEC_IMPORT_ARGS ?=
MULAN_FROM ?=
MULAN_IMPORT_ARGS ?=
# SEMANTIC_FROM: a HuBERT / wav2vec2 / w2v-BERT folder whose features the semantic k-means clusters (else MuLan's
# own tower's; logmel when MuLan is an imported CLAP, which has no frame features)
SEMANTIC_FROM ?=
SEMANTIC_ARGS ?=
# CLAP_FROM: a CLAP folder eval's CLAP judge reads (judge.clap.*; README "Judges"); unset: no CLAP figures
CLAP_FROM ?=
SEMANTIC_SOURCE = $(if $(SEMANTIC_FROM),--model.extractor=hf --model.source=$(SEMANTIC_FROM),$(if \
  $(MULAN_FROM),--model.extractor=logmel,--model.source=$(R)/mulan/model.ckpt))
LM_FLAGS = $(STAGE_FLAGS) $(if $(LM_PRECISION),--trainer.precision=$(LM_PRECISION)) $(WEIGHT_FLAGS) $(ARGS)

.PHONY: install test lint demo data train-mulan train-codec fit-semantic tokenize train-semantic train-acoustic \
        train-judge train-melody melody generate eval bench gpu-check showcase tensorboard clean-run FORCE

install: $(STAMP)

$(STAMP): $(ROOT)/pyproject.toml $(ROOT)/requirements.lock $(ROOT)/scripts/system-deps.sh
	bash $(ROOT)/scripts/system-deps.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0   # the CPU wheel first, so nothing can pull a CUDA build
	$(PY) -m pip install -q -c $(ROOT)/requirements.lock -e "$(ROOT)[dev,text]"
	$(PY) -m pip install -q --no-deps basic-pitch==0.4.0   # only its ONNX note model (the key judge); no TensorFlow
	touch $@

test: $(STAMP)
	cd $(ROOT) && $(PY) -m pytest tests

lint: $(STAMP)
	cd $(ROOT) && $(VENV)/bin/ruff check src tests

# ---- data -------------------------------------------------------------------------------------------
data: $(SHARD_MANIFESTS)

# DATASET=synth* is rendered here; any other dataset comes from `musiclm data ingest SRC data/shards/NAME`
# (DATASET=synth+mine renders synth and expects mine ingested)
data/shards/%/train/manifest.json: | $(STAMP)
	@case "$*" in synth*) ;; *) echo "no shards for DATASET=$*: build them with musiclm data ingest SRC_DIR data/shards/$*" >&2; exit 2;; esac
	$(MUSICLM) data synth data/shards/$* --num-clips $(SYNTH_CLIPS) --seconds $(SYNTH_SECONDS) --seed 0 --workers $(WORKERS) \
	  --prompt-kinds-rate $(PROMPT_KINDS_RATE) $(if $(filter 1,$(MELODY_PAIRS)),--melody-pairs)
	$(MUSICLM) data check data/shards/$*

# the melody model's pairs: the same melodies under other acoustics (an explicit rule wins over the pattern above)
data/shards/$(MELODY_DATASET)/train/manifest.json: | $(STAMP)
	$(MUSICLM) data synth data/shards/$(MELODY_DATASET) --num-clips $(MELODY_CLIPS) --seconds $(SYNTH_SECONDS) \
	  --seed 1 --workers $(WORKERS) --melody-pairs $(MELODY_SPLITS)
	$(MUSICLM) data check data/shards/$(MELODY_DATASET)

# ---- stages -----------------------------------------------------------------------------------------
train-mulan: $(R)/mulan/model.ckpt
$(R)/mulan/model.ckpt: $(SHARD_MANIFESTS) $(ROOT)/configs/mulan.yaml $(if $(MULAN_FROM),$(MULAN_FROM)/config.json) | $(STAMP)
ifneq ($(MULAN_FROM),)
	$(MUSICLM) import mulan --from $(MULAN_FROM) --run $(RUN) --data-dir $(SHARDS) $(MULAN_IMPORT_ARGS)
else
	$(MUSICLM) train mulan $(TRAIN_FLAGS) --data.data_dir=$(SHARDS)
endif
	$(MUSICLM) mulan fit-quantizer --run $(RUN)

train-codec: $(R)/codec/model.ckpt
$(R)/codec/model.ckpt: $(SHARD_MANIFESTS) $(ROOT)/configs/codec.yaml $(if $(CODEC_FROM),$(CODEC_FROM)/config.json) | $(STAMP)
ifneq ($(CODEC_FROM),)
	$(MUSICLM) import codec --from $(CODEC_FROM) --run $(RUN) $(CODEC_IMPORT_ARGS)
else
	$(MUSICLM) train codec $(TRAIN_FLAGS) --data.data_dir=$(SHARDS)
endif

fit-semantic: $(R)/semantic_tokens/model.ckpt
$(R)/semantic_tokens/model.ckpt: $(R)/mulan/model.ckpt $(ROOT)/configs/semantic_tokens.yaml $(if $(SEMANTIC_FROM),$(SEMANTIC_FROM)/config.json) | $(STAMP)
	$(MUSICLM) train semantic_tokens $(TRAIN_FLAGS) --data.data_dir=$(SHARDS) $(SEMANTIC_SOURCE) $(SEMANTIC_ARGS)

tokenize: $(TOKENS)/train/manifest.json
# tokenize adds melody tokens where the run has a melody model (make train-melody), so they depend on it then
MELODY_CKPT = $(if $(MELODY_COND),$(R)/melody/model.ckpt,$(wildcard $(R)/melody/model.ckpt))
MELODY_FLAG = $(if $(filter $(1),$(MELODY_COND)),--model.melody_conditioning=true)
$(TOKENS)/train/manifest.json: $(R)/mulan/model.ckpt $(R)/codec/model.ckpt $(R)/semantic_tokens/model.ckpt $(MELODY_CKPT) | $(STAMP)
	$(MUSICLM) tokenize --run $(RUN) --dataset $(DATASET) --workers $(WORKERS)

train-semantic: $(R)/semantic/model.ckpt
$(R)/semantic/model.ckpt: $(TOKENS)/train/manifest.json $(ROOT)/configs/semantic.yaml | $(STAMP)
	$(MUSICLM) train semantic $(LM_FLAGS) --data.data_dir=$(TOKENS) --data.run=$(RUN) $(call MELODY_FLAG,semantic)

train-acoustic: $(R)/coarse/model.ckpt $(R)/fine/model.ckpt
$(R)/coarse/model.ckpt: $(TOKENS)/train/manifest.json $(ROOT)/configs/coarse.yaml | $(STAMP)
	$(MUSICLM) train coarse $(LM_FLAGS) --data.data_dir=$(TOKENS) --data.run=$(RUN) $(call MELODY_FLAG,coarse)
$(R)/fine/model.ckpt: $(TOKENS)/train/manifest.json $(ROOT)/configs/fine.yaml | $(STAMP)
	$(MUSICLM) train fine $(LM_FLAGS) --data.data_dir=$(TOKENS) --data.run=$(RUN)

# a judge of the chain, trained on the audio shards' ground truth (never on generated audio); eval reads it
train-judge: $(R)/judge/model.ckpt
$(R)/judge/model.ckpt: $(SHARD_MANIFESTS) $(ROOT)/configs/judge.yaml | $(STAMP)
	$(MUSICLM) train judge $(TRAIN_FLAGS) --data.data_dir=$(SHARDS)

# the run's melody tokens (MELODY_TOKENS above); `melody` is make demo's step: them where a stage conditions on them
train-melody: $(R)/melody/model.ckpt
melody: $(if $(MELODY_COND),$(R)/melody/model.ckpt)
$(R)/melody/model.ckpt: data/shards/$(MELODY_DATASET)/train/manifest.json $(ROOT)/configs/melody.yaml | $(STAMP)
ifeq ($(MELODY_TOKENS),pitch)
	$(MUSICLM) melody pitch-classes --run $(RUN)
else
	$(MUSICLM) train melody $(TRAIN_FLAGS) --data.data_dir=data/shards/$(MELODY_DATASET)
endif

# ---- use --------------------------------------------------------------------------------------------
STAGE_CKPTS := $(foreach s,mulan codec semantic_tokens semantic coarse fine,$(R)/$(s)/model.ckpt)
JUDGE_CKPTS := $(foreach s,judge,$(R)/$(s)/model.ckpt)

generate: $(STAGE_CKPTS) | $(STAMP)
	@test -n "$(TEXT)$(STORY)" || { echo 'usage: make generate TEXT="a calm piano ballad" [SECONDS=10] [RUN=demo] [PROMPT_AUDIO=take.wav] [MELODY=hum.wav [MELODY_CFG=5]]  (or STORY=story.tsv instead of TEXT)'; exit 2; }
	$(MUSICLM) generate --run $(RUN) $(if $(TEXT),--text "$(TEXT)") $(if $(STORY),--story "$(STORY)") \
	  $(if $(PROMPT_AUDIO),--prompt-audio "$(PROMPT_AUDIO)") $(if $(MELODY),--melody "$(MELODY)") \
	  $(if $(MELODY_CFG),--melody-cfg-scale $(MELODY_CFG)) --seconds $(SECONDS) --out outputs/$(RUN)

eval: reports/$(RUN)/eval.json
reports/$(RUN)/eval.json: $(STAGE_CKPTS) $(JUDGE_CKPTS) $(TOKENS)/train/manifest.json reports/$(RUN)/clap_from | $(STAMP)
	$(MUSICLM) eval --run $(RUN) --dataset $(DATASET) --num-prompts $(NUM_PROMPTS) --batch-size $(EVAL_BATCH) \
	  --out $@ --melody-dataset $(MELODY_DATASET) $(if $(CLAP_FROM),--clap-from "$(CLAP_FROM)")

# CLAP_FROM as of the last eval: rewritten only when it changes, so `make eval CLAP_FROM=DIR` after an eval without
# it re-runs eval (a first stamp with no folder is dated 1970, so it never re-runs an eval by itself)
reports/$(RUN)/clap_from: FORCE
	@mkdir -p $(@D); if [ ! -e $@ ] && [ -z "$(CLAP_FROM)" ]; then touch -d @0 $@; \
	elif [ "$$(cat $@)" != "$(CLAP_FROM)" ]; then printf '%s' "$(CLAP_FROM)" > $@; fi

FORCE:

bench: $(STAMP)
	$(MUSICLM) bench --out reports/bench.json

# ~30 steps of every stage at paper size on one GPU (8 min at most); ACCELERATOR=cpu runs the demo sizes on the CPU
gpu-check: $(STAMP)
	$(MUSICLM) gpu-check --accelerator $(or $(ACCELERATOR),gpu) --out reports/gpu-check.json $(ARGS)

# runs of one chain at several budgets (each made by `make demo PROFILE=...`), cheapest first: quality against
# CPU-hours and a few seconds of each run's audio, written to docs/ (README "Compute and quality"). Not tiny: its
# smaller codebooks make its LM figures incomparable
SHOWCASE_RUNS ?= demo long
showcase: | $(STAMP)
	$(MUSICLM) showcase $(SHOWCASE_RUNS) --out docs

tensorboard: | $(STAMP)
	$(VENV)/bin/tensorboard --logdir $(R) --bind_all

demo: $(STAMP)
	$(PY) -m musiclm.demo --run $(RUN) --dataset $(DATASET) --profile $(PROFILE) --makefile $(ROOT)/Makefile \
	  SYNTH_CLIPS=$(SYNTH_CLIPS) SYNTH_SECONDS=$(SYNTH_SECONDS) NUM_PROMPTS=$(NUM_PROMPTS) WORKERS=$(WORKERS) \
	  LM_PRECISION=$(LM_PRECISION) $(if $(CLAP_FROM),CLAP_FROM="$(CLAP_FROM)")

clean-run:
	rm -rf $(R) $(TOKENS) reports/$(RUN) outputs/$(RUN)
