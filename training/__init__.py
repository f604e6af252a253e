"""SF-V adversarial distillation (arXiv 2406.04324) and SVD fine-tuning on the toolkit's models.

- :mod:`training.precondition`: SVD's EDM preconditioning (v-prediction) with the runtime's arithmetic;
- :mod:`training.noise`: Karras levels and the noise-level samplers of the generator and discriminator;
- :mod:`training.sampling`: teacher evaluation with the runtime's schedule, noise and Euler sampler (one step = SF-V);
- :mod:`training.discriminator`: frozen UNet-encoder backbone + spatial/temporal projection heads;
- :mod:`training.losses`: hinge, R1, pseudo-Huber and the generator loss as callable objects;
- :mod:`training.data`: video clips (directory, Big Buck Bunny, synthetic motion) -> SVD latents;
- :mod:`training.checkpoint`: atomic, resumable training state and the final diffusers UNet;
- :mod:`training.sfv`: the SF-V loop under ``accelerate`` and its CLI (``python -m training.sfv``);
- :mod:`training.teacher`: EDM denoising fine-tuning of a UNet (``python -m training.teacher``);
- :mod:`training.frechet`, :mod:`training.fvd`, :mod:`training.features`: Frechet distance, FVD (user-supplied I3D), offline feature net;
- :mod:`training.reproduce`: the tiny-scale reproduction of the paper's claim.
- :mod:`training.vae`: train a model's temporal VAE on offline clips (a real teacher for the tiny model);
- :mod:`training.decoder`: the distillation of a fast temporal decoder (:mod:`networks.fast_decoder`) from the VAE decoder;
"""
