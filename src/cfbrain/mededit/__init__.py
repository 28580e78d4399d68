"""The MRI counterfactual-editing experiment of thesis 000 (MedEdit): triplets, methods, scores, tables, figures.

``triplets``: which pathology mask goes onto which healthy scan (random pairing, or each synthetic lesion on its
own healthy counterpart); ``methods``: run MedEdit / naive RePaint / SDEdit / Palette (and box and ablation
variants) batched over triplets; ``evaluate``: FID/KID, Dice, box Dice/IoU, (1 - Dice) x FID, indirect-effect
and fidelity scores, ``tables/mededit.md`` and the Figure 5.1 grid; ``data``: slice sets as training datasets;
``nnunet``: export/import to score with nnU-Net.
"""
