"""Sequence parallelism for one job across the GPUs of a worker (Ulysses all-to-all over heads).

`launch` starts and joins a group of rank processes the way torchrun does (environment variables,
deliberate collective timeouts); `comm` holds the collectives; `ulysses.UlyssesAttention` is the attention
processor a native transformer is given so that every rank computes 1/sp of the image tokens.
"""
