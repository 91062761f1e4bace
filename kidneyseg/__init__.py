"""kidneyseg: cascade 3D U-Net segmentation of kidneys and kidney tumors in abdominal CT.

The package reads as the pipeline: ``io -> data -> preprocess -> model -> train -> infer ->
evaluate``; ``pipeline`` runs the notebooks with papermill, ``viewer`` backs the Voila dashboard.
"""

__version__ = "0.1.0"
