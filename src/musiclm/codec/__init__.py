"""SoundStream-style residual-VQ codec: its codes are the acoustic tokens."""
