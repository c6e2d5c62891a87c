"""Pretrained models from a local folder in the chain's roles: a `save_pretrained` folder or a Hugging Face cache
snapshot, read offline (`hub.py`), wrapped in an adapter per role (`codec.py`, `clap.py`) and written as the stage's
self-contained hand-off by `musiclm import` (`importer.py`)."""
