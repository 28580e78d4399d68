"""Noise schedules and samplers: Dif-fuse (thesis 003), MedEdit, naïve RePaint, SDEdit, Palette (thesis 000).

``schedule``: forward/posterior maths and DDPM/DDIM steps; ``masks``: inpainting/editing masks and
morphology; ``samplers``: the batched samplers (network-agnostic, ``eps_model(x_t, t, cond)``).
Images enter and leave the [-1, 1] range through ``cfbrain.preprocess.intensity`` (contract 7).
"""
