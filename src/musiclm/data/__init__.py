"""Audio and token shards: schemas, writers, readers and Lightning data modules."""
