"""Sampling from a `Decoder` with a KV cache: batched prefill and decode, greedy or top-p, on a mesh."""

from cft_jax.sampling.sampler import SampleConfig, Sampler, bucket_length, unpad

__all__ = ["SampleConfig", "Sampler", "bucket_length", "unpad"]
