"""JobSet templates for GKE (tpu.yaml, gpu.yaml) and their renderer (render.py)."""
