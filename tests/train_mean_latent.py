"""train.py with the VAE decoding its means (z = μ) in training as well: no sampling noise, so a run on
one process and a run on two differ by rounding only. Tests launch it where they would launch train.py:

    python tests/train_mean_latent.py --stage vae ...
    torchrun --standalone --nproc_per_node=2 tests/train_mean_latent.py --stage vae ...
"""
import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import vae  # noqa: E402

vae.reparameterize = lambda mu, logvar: mu        # what DisentangledVAE.forward samples z with
runpy.run_path(os.path.join(ROOT, "train.py"), run_name="__main__")
