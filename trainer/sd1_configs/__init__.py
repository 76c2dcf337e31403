"""Stable Diffusion 1.5 component configs (data files, no code): see README.md.

``unet.json``, ``vae.json``, ``text_encoder.json`` and ``scheduler.json`` hold the values of
stable-diffusion-v1-5's component config files. They are flat files so the wheel ships them as
ordinary package data; ``trainer.models.write_sd1_configs`` lays them out as a diffusers folder.
"""
