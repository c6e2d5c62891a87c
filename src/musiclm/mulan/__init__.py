"""MuLan: contrastive audio/text towers and the MuLan-token quantizer."""
