"""The registry of training recipes (self-distillation, co-training, semi-supervised, ...).

A recipe changes *how* a model is trained (generations, pseudo-labels, extra heads) around the
generic engine; each is one module in :mod:`hashlab.train.recipes` that registers itself here.
Built: ``ban`` (Born-Again Networks, :mod:`hashlab.train.recipes.ban`).
"""

from __future__ import annotations

from typing import Any

from hashlab.registry import Registry

RECIPES: Registry[Any] = Registry(
    "recipe", packages=("hashlab.train.recipes",),
    description="training recipes wrapped around the engine: factory(config, run_dir, "
                "progress=, callbacks=, **recipe.args), then run(resume) -> summary")
