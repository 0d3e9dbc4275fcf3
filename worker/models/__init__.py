"""The native WorldPlay model: transformer, VAE, scheduler, attention and checkpoint loading."""
