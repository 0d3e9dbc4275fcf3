"""`worldplay download` and `worldplay models`: catalog, plan, resumable fetch, layout by links, verify.

Public entry points: `catalog.{select, find_variant, KNOWN_SIZES}`, `plan.build_plan`, `execute.execute`,
`layout.make_target`, `inventory.{list_variants, variant_paths, verify, remove}`. huggingface_hub and httpx are imported
inside functions so `worldplay --help` stays fast.
"""
