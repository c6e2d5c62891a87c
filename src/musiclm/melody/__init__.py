"""The melody embedding (MusicLM section 6): a small transformer over a semitone spectrogram, trained on melody
pairs (`musiclm data synth --melody-pairs`) with a contrastive loss so that one melody played by any instrument, in
any arrangement or octave, or hummed, embeds close; one embedding per 4-s window at a 3-s hop, quantized by a
residual VQ into melody tokens, a conditioning stream of the semantic stage."""
