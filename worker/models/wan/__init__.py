"""The WAN-5B "lite" WorldPlay family: its transformer and VAE (Wan2.2-TI2V-5B based)."""
