"""The README's main job: the whole pipeline on the built-in world, one stage after another."""
