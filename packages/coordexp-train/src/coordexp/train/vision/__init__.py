"""Vision-tower pretraining on detection data (`coordexp model pretrain-vision`).

`regions` turns an image's GT objects into per-merged-token class labels; `objective` is the
linear region head and its loss/accuracy; `recipes.pretrain_vision` runs the loop.
"""
