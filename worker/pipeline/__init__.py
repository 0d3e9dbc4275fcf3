"""The native generation pipeline: condition encoders, camera conditioning, memory, rollouts, decode, video writing."""
