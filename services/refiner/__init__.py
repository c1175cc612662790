"""The refiner service: judging, tree-search refinement and refined answers."""
