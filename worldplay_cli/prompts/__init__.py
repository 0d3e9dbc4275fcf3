"""System prompts shipped as package data (`rewrite_t2v.md`, `rewrite_i2v.md`), read by `worldplay_cli.rewrite`."""
